// The crash test: a child process (Tests/SagaCrashChild) runs sagas on the page-file engine and records every side
// effect in a ledger file; the parent SIGKILLs it at random moments, at least 30 times, then lets a last child
// recover everything and checks the outcome against the ledger. Its saga is reserve, then charge and ship as a
// parallel group.
//
// It runs in every `swift test` (about 15 s for the default 30 kills); SAGAS_CRASH_ITERATIONS selects a longer run.
//
// Checked, for every saga the index knows:
// - it ends Completed, Compensated or Stuck (never Running or Compensating);
// - Completed: every step's effect is in the ledger and nothing was undone;
// - Compensated: every step whose effect is in the ledger was undone;
// - Stuck: only sagas whose reserve compensation is scripted to fail, with that effect still in place;
// - atMostOnce (charge): its effect is in the ledger at most once;
// - atLeastOnce (reserve, ship): duplicates carry the same idempotency key, so they are detectable.

import Foundation
import ProcessSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite struct SagaCrashTests {
    /// Sagas per child run: enough that a run lasts longer than the 5-700 ms kill window, so kills land mid-run
    /// (with 4, most runs finished before their kill on a fast disk).
    static let sagasPerRun = 40

    struct ChildResult {
        var status: ChildProcess.Termination
        var killed: Bool
        var output: String
        var errors: String
    }

    /// The child executable `name`, built beside the test bundle (SAGAS_CRASH_CHILD overrides the crash child's).
    static func childPath(_ name: String = "SagaCrashChild") -> URL {
        if name == "SagaCrashChild", let path = ProcessInfo.processInfo.environment["SAGAS_CRASH_CHILD"] {
            return URL(fileURLWithPath: path)
        }
        return URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent(name)
    }

    /// Runs the child `executable` with `arguments`, SIGKILLing it after `killAfter` if it is still running.
    static func runChild(
        _ arguments: [String], killAfter: Duration?, executable: String = "SagaCrashChild"
    ) async throws -> ChildResult {
        let process = try ChildProcess(
            childPath(executable).path, arguments, standardOutput: .pipe, standardError: .pipe)
        // Read while the child runs: a child that writes more than a pipe holds (a long run's final report) would
        // otherwise block on its write, and never exit.
        let output = try drain(#require(process.standardOutput))
        let errors = try drain(#require(process.standardError))
        var killed = false
        if let killAfter {
            try await Task.sleep(for: killAfter)  // fault injection timing, not an assertion
            killed = process.isRunning
            process.send(SIGKILL)
        }
        let ending = try await process.exited()
        let text = String(decoding: await output.value, as: UTF8.self)
        let errorText = String(decoding: await errors.value, as: UTF8.self)
        return ChildResult(
            status: ending, killed: killed && ending == .signalled(SIGKILL), output: text, errors: errorText)
    }

    /// Reads `handle` to its end on a Dispatch thread (not the cooperative pool, since the read blocks).
    static func drain(_ handle: FileHandle) -> Task<Data, Never> {
        Task {
            await withCheckedContinuation { continuation in
                DispatchQueue.global().async { continuation.resume(returning: handle.readDataToEndOfFile()) }
            }
        }
    }

    @Test func sagasSurviveRandomKillsAndTheLedgerMatchesTheirOutcome() async throws {
        let iterations = Int(ProcessInfo.processInfo.environment["SAGAS_CRASH_ITERATIONS"] ?? "") ?? 30
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("saga-crash-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: root) }
        let store = root.appendingPathComponent("store").path
        let ledger = root.appendingPathComponent("ledger").path

        var kills = 0
        // Runs until `iterations` of them were killed mid-way (some finish before their kill; they count as runs).
        var runs = 0
        while kills < iterations && runs < iterations * 4 {
            runs += 1
            let result = try await Self.runChild(
                ["run", store, ledger, "\(runs)", "\(Self.sagasPerRun)"], killAfter: .milliseconds(Int.random(in: 5...700)))
            if result.killed {
                kills += 1
            } else {
                #expect(result.status == .exited(0), "run \(runs) failed: \(result.errors)")
            }
        }
        #expect(kills >= iterations, "only \(kills) of \(runs) runs were killed mid-way")
        let final = try await Self.runChild(["finish", store, ledger], killAfter: nil)
        try #require(final.status == .exited(0), "final recovery failed: \(final.errors)")

        let statuses = Self.parseStatuses(final.output)
        let effects = Self.parseLedger(try String(contentsOfFile: ledger, encoding: .utf8))
        // A run killed early never created some of its sagas; every saga that left an effect must be known.
        #expect(!statuses.isEmpty && statuses.count <= runs * Self.sagasPerRun)
        #expect(Set(effects.keys).isSubset(of: Set(statuses.keys)), "effects of sagas the index does not know")
        var duplicates = 0
        for (saga, status) in statuses.sorted(by: { $0.key < $1.key }) {
            duplicates += Self.check(saga: saga, status: status, effects: effects[saga] ?? [:])
        }
        let tally = Dictionary(grouping: statuses.values, by: { $0 }).mapValues(\.count).sorted { $0.key < $1.key }
        print(
            "saga crash test: \(runs) runs, \(kills) killed, \(statuses.count) sagas \(tally), "
                + "\(duplicates) re-run effects or compensations detected by idempotency key")
    }

    /// Checks one saga against the ledger; returns the number of duplicate effects and undos (re-runs after a kill).
    static func check(saga: String, status: String, effects: [String: [(kind: String, key: String)]]) -> Int {
        let number = Int(saga.split(separator: "-").last ?? "") ?? -1
        let done = { (step: String) in effects[step, default: []].filter { $0.kind == "do" } }
        let undone = { (step: String) in effects[step, default: []].filter { $0.kind == "undo" } }
        let steps = ["reserve", "charge", "ship"]
        switch status {
        case "completed":
            #expect(number % 3 != 0, "\(saga) completed although ship always fails for it")
            for step in steps {
                #expect(!done(step).isEmpty, "\(saga) completed without the effect of \(step)")
                #expect(undone(step).isEmpty, "\(saga) completed but \(step) was undone")
            }
        case "compensated":
            #expect(number % 7 != 0, "\(saga) compensated although undoing reserve always fails for it")
            for step in steps where !done(step).isEmpty {
                #expect(!undone(step).isEmpty, "\(saga) compensated but the effect of \(step) was never undone")
            }
        case "stuck":
            #expect(number % 7 == 0, "\(saga) is stuck without a scripted compensation failure")
            #expect(!done("reserve").isEmpty && undone("reserve").isEmpty, "\(saga) stuck, but reserve is not in place")
            for step in ["charge", "ship"] where !done(step).isEmpty {
                #expect(!undone(step).isEmpty, "\(saga) stuck on reserve but \(step) was never undone")
            }
        default:
            Issue.record("\(saga) ended \(status), not completed, compensated or stuck")
        }
        #expect(done("charge").count <= 1, "atMostOnce charge of \(saga) ran \(done("charge").count) times")
        var duplicates = 0
        for step in ["reserve", "ship"] {
            let keys = done(step).map(\.key)
            #expect(Set(keys).count <= 1, "\(saga) \(step) ran under several keys \(keys): duplicates undetectable")
            duplicates += max(keys.count - 1, 0)
        }
        for step in steps {
            // A compensation a kill interrupted runs again under the same key.
            let keys = undone(step).map(\.key)
            duplicates += keys.count - Set(keys).count
        }
        return duplicates
    }

    static func parseStatuses(_ output: String) -> [String: String] {
        var statuses: [String: String] = [:]
        for line in output.split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 3, parts[0] == "saga" { statuses[String(parts[1])] = String(parts[2]) }
        }
        return statuses
    }

    /// saga -> step -> effects in ledger order. A torn last line (no newline) is ignored.
    static func parseLedger(_ text: String) -> [String: [String: [(kind: String, key: String)]]] {
        var effects: [String: [String: [(kind: String, key: String)]]] = [:]
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        if !text.hasSuffix("\n") { lines.removeLast() }
        for line in lines where !line.isEmpty {
            let parts = line.split(separator: " ")
            guard parts.count == 4 else { continue }
            effects[String(parts[1]), default: [:]][String(parts[2]), default: []].append(
                (String(parts[0]), String(parts[3])))
        }
        return effects
    }
}
