// demo: the main job. Opens accounts, runs concurrent transfers (some designed to fail), shows live progress,
// prints a summary, then verifies. `--crash-test N` runs the workload in a child process, kills it N times at
// random moments after its first finished transfer, and after each kill recovers the sagas and verifies.

import EventStore
import EventStoreKV
import Foundation
import ProcessSupport
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Counts shared by the demo's workers.
final class DemoCounters: Sendable {
    let done = Atomic<Int>(0)
    let completed = Atomic<Int>(0)
    let compensated = Atomic<Int>(0)
    let rejected = Atomic<Int>(0)
    let stuck = Atomic<Int>(0)
    /// Set by the first transfer a crash-test child finishes, which then tells its parent it is running.
    let announced = Atomic<Bool>(false)
}

struct Demo {
    let data: String
    let accounts: Int
    let transfers: Int
    let workers: Int
    let crashTests: Int?
    let child: Bool
    let seed: UInt64
    /// Each demo account's opening deposit, in cents like every amount the ledger takes (--initial-balance).
    let initialBalance: Cents

    init(_ arguments: Arguments) throws {
        data = arguments.dataDirectory
        accounts = try arguments.count("--accounts", default: 1_000, range: 2...1_000_000)
        transfers = try arguments.count("--transfers", default: 10_000, range: 0...100_000_000)
        workers = try arguments.count("--workers", default: 8, range: 1...256)
        crashTests = try arguments.flags["--crash-test"].map { _ in
            try arguments.count("--crash-test", default: 5, range: 1...10_000)
        }
        // The crash test's child runs transfers until it is killed: a --transfers count would be ignored.
        if crashTests != nil, arguments.flags["--transfers"] != nil {
            throw LedgerError.invalidInput(
                "--crash-test does not take --transfers: its child runs transfers until it is killed")
        }
        initialBalance = try arguments.flags["--initial-balance"].map { try Cents.parse($0, what: "--initial-balance") }
            ?? Cents(100_000)
        child = arguments.flags["--child"] != nil
        // A crash-test child whose parent has gone (killed, say) would otherwise run its ten million transfers.
        if child { ParentWatch.exitWhenParentExits() }
        seed = UInt64(try arguments.count("--seed", default: Int(Date().timeIntervalSince1970), range: 0...Int.max))
    }

    func run() async throws -> Int32 {
        if let crashTests { return try await crashLoop(crashTests) }
        return try await workload()
    }

    private func log(_ text: String) { complain(text) }

    /// The demo's account names: demo-0000, demo-0001, ...
    private func accountName(_ index: Int) -> String {
        "demo-" + String(index).leftPadded(to: 4, with: "0")
    }

    func workload() async throws -> Int32 {
        let ledger = try await Ledger.open(directory: data)
        let clock = ContinuousClock()
        let firstPosition = try await ledger.store.lastPosition()
        let existing = Set(try await ledger.accountNames())
        var opened = 0
        for index in 0..<accounts where !existing.contains(accountName(index)) {
            try await ledger.open(accountName(index), initial: initialBalance)
            opened += 1
        }
        if !child { try say("accounts: \(accounts) (\(opened) opened now, \(accounts - opened) already there)") }

        let counters = DemoCounters()
        let started = clock.now
        let progress = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(250))
                let done = counters.done.load(ordering: .relaxed)
                let rate = Double(done) / max(0.001, (clock.now - started).seconds)
                log("\rtransfers \(done)/\(transfers)  \(Int(rate))/s  compensated \(counters.compensated.load(ordering: .relaxed))  rejected \(counters.rejected.load(ordering: .relaxed))   ")
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<workers {
                let share = transfers / workers + (worker < transfers % workers ? 1 : 0)
                group.addTask {
                    var random = DemoRandom(seed: seed &+ UInt64(worker) &* 0x9E37_79B9)
                    for _ in 0..<share {
                        try Task.checkCancellation()
                        try await oneTransfer(ledger, &random, counters)
                        if child, counters.announced.compareExchange(expected: false, desired: true, ordering: .relaxed)
                            .exchanged
                        {
                            try say(Self.runningLine)  // the crash test's parent starts its kill timer now
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        progress.cancel()
        let elapsed = (clock.now - started).seconds
        log("\n")
        let written = try await ledger.store.lastPosition() - firstPosition
        let done = counters.done.load(ordering: .relaxed)
        try say("""
            summary:
              transfers         \(done) in \(String(format: "%.2f", elapsed)) s (\(Int(Double(done) / max(elapsed, 0.001)))/s, \(workers) workers)
              completed         \(counters.completed.load(ordering: .relaxed))
              compensated       \(counters.compensated.load(ordering: .relaxed)) (credit failed, debit refunded)
              rejected          \(counters.rejected.load(ordering: .relaxed)) (nothing debited: insufficient funds, or conflicts past every retry)
              stuck             \(counters.stuck.load(ordering: .relaxed))
              events written    \(written)
              snapshots taken   \(ledger.snapshotsTaken.load(ordering: .relaxed))
              store size        \(directorySize(data) / 1_048_576) MiB in \(data)
            """)
        if child {
            try await ledger.close()
            return 0
        }
        let report = try await ledger.verify { log("\r\($0)   ") }
        log("\n")
        try await ledger.close()
        for line in report.lines { try say("ok: \(line)") }
        for problem in report.problems { try say("FAIL: \(problem)") }
        try say(report.isClean ? "verify: passed" : "verify: FAILED with \(report.problems.count) problem(s)")
        return report.isClean ? 0 : 1
    }

    /// One transfer between two random accounts: 5% ask for more than any balance (rejected), 3% have their credit
    /// fail (compensated), the rest move 1 to 50.00. A transfer is also rejected when its pre-check passed but the
    /// account was drained by another transfer before its debit step ran, or its debit step lost every retry to
    /// conflicting transfers: that saga debited nothing.
    private func oneTransfer(_ ledger: Ledger, _ random: inout DemoRandom, _ counters: DemoCounters) async throws {
        let from = Int(random.next() % UInt64(accounts))
        var to = Int(random.next() % UInt64(accounts - 1))
        if to >= from { to += 1 }
        let dice = random.next() % 100
        let amount = dice < 5 ? Cents(1_000_000_000_000) : Cents(Int64(random.next() % 5_000) + 1)
        defer { counters.done.add(1, ordering: .relaxed) }
        do {
            switch try await ledger.transfer(
                from: accountName(from), to: accountName(to), amount: amount, failCredit: dice >= 5 && dice < 8)
            {
            case .completed: counters.completed.add(1, ordering: .relaxed)
            case .notDebited: counters.rejected.add(1, ordering: .relaxed)
            case .compensated: counters.compensated.add(1, ordering: .relaxed)
            case .stuck: counters.stuck.add(1, ordering: .relaxed)
            }
        } catch LedgerError.insufficientFunds {
            counters.rejected.add(1, ordering: .relaxed)
        }
    }

    // MARK: Crash test

    func crashLoop(_ iterations: Int) async throws -> Int32 {
        var random = DemoRandom(seed: seed)
        try say("crash test: \(iterations) kills of a child running the demo workload on \(data)")
        for iteration in 1...iterations {
            let delay = 300 + Int(random.next() % 1_700)
            let childSeed = random.next() % 1_000_000
            if let failure = try await runAndKillChild(after: delay, seed: childSeed) {
                try say("crash \(iteration)/\(iterations): FAILED: \(failure)")
                return 1
            }
            let ledger = try await Ledger.open(directory: data)  // recovers interrupted sagas
            let report = try await ledger.verify()
            let events = try await ledger.store.lastPosition()
            try await ledger.close()
            if !report.isClean {
                for problem in report.problems { try say("FAIL: \(problem)") }
                try say("crash \(iteration)/\(iterations): verify FAILED after a kill at \(delay) ms")
                return 1
            }
            try say("crash \(iteration)/\(iterations): killed after \(delay) ms; recovered; verify passed (\(events) events)")
        }
        try say("crash test: passed \(iterations) kills")
        return 0
    }

    /// What a crash-test child prints on stdout once it has finished its first transfer.
    static let runningLine = "running"

    /// Runs the workload in a child process and SIGKILLs it `delay` ms after it reports its first finished transfer.
    /// Nil if the kill ended it; otherwise why not: a child that exited by itself, or never got to a transfer (on a
    /// slow machine a kill on a timer alone could land before it did anything), is no kill, and fails the crash test
    /// with its stderr.
    private func runAndKillChild(after delay: Int, seed childSeed: UInt64) async throws -> String? {
        let errors = try Self.scratchFile("ledger-child-errors")
        let output = try Self.scratchFile("ledger-child-output")
        defer {
            try? FileManager.default.removeItem(at: errors)
            try? FileManager.default.removeItem(at: output)
        }
        let process = try ChildProcess(
            URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path,
            [
                "demo", "--child", "--data", data, "--accounts", String(accounts), "--workers", String(workers),
                "--transfers", "10000000", "--seed", String(childSeed), "--initial-balance",
                String(initialBalance.value),
            ],
            standardOutput: .file(output.path), standardError: .file(errors.path))
        let running: Bool
        do {
            running = try await Self.waitUntilRunning(process, output: output)
            if running { try await Task.sleep(for: .milliseconds(delay)) }
        } catch {
            await process.kill()  // cancelled: the child must not outlive the crash test
            throw error
        }
        let wasRunning = process.isRunning
        let ending = await process.kill()  // a child that already ended by itself is not signalled
        if wasRunning && ending == .signalled(SIGKILL) {
            return running ? nil : "the child did not finish a transfer within \(Self.startLimit)"
        }
        // Progress lines end in "\r"; the last few hundred characters hold the child's error.
        let stderr = String(decoding: (try? Data(contentsOf: errors)) ?? Data(), as: UTF8.self)
        return "the child \(ending) before the kill at \(delay) ms: "
            + String(stderr.suffix(600)).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// How long a child may take to finish its first transfer.
    private static let startLimit = Duration.seconds(300)

    /// Waits until `process` has printed ``runningLine`` to `output` (true), or has exited, or ``startLimit`` has
    /// passed (false).
    private static func waitUntilRunning(_ process: ChildProcess, output: URL) async throws -> Bool {
        let deadline = ContinuousClock.now.advanced(by: startLimit)
        while ContinuousClock.now < deadline {
            let printed = String(decoding: (try? Data(contentsOf: output)) ?? Data(), as: UTF8.self)
            if printed.split(separator: "\n").contains(Substring(runningLine)) { return true }
            guard process.isRunning else { return false }
            try await Task.sleep(for: .milliseconds(10))
        }
        return false
    }

    /// A new empty file in the temporary directory, named from `prefix`.
    private static func scratchFile(_ prefix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        guard FileManager.default.createFile(atPath: url.path, contents: nil) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path])
        }
        return url
    }
}

/// A small deterministic random generator (SplitMix64), so a demo run can be repeated with --seed.
struct DemoRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func directorySize(_ path: String) -> Int {
    guard let files = FileManager.default.enumerator(atPath: path) else { return 0 }
    var total = 0
    for case let file as String in files {
        let attributes = try? FileManager.default.attributesOfItem(atPath: (path as NSString).appendingPathComponent(file))
        total += (attributes?[.size] as? Int) ?? 0
    }
    return total
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

extension String {
    func leftPadded(to width: Int, with pad: Character = " ") -> String {
        String(repeating: pad, count: max(0, width - count)) + self
    }
}
