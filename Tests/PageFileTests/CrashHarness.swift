// The parent side of the crash tests: runs CrashChild, follows its acknowledgements, kills it, and checks a store
// directory against what the child attempted and acknowledged.

import EventStore
@testable import EventStoreKV
import Foundation
import ProcessSupport
import Glibc
import Testing

/// The payload CrashChild writes for event `index` of `count` in transaction `number` (keep identical to
/// Tests/Support/CrashChild/main.swift).
func crashPayload(transaction number: Int, index: Int, count: Int) -> Data {
    var bytes = Array("\(number):\(index):\(count):".utf8)
    let size = number % 7 == 0 ? 6_000 : 40 + number % 200
    while bytes.count < size { bytes.append(UInt8(truncatingIfNeeded: number &+ bytes.count)) }
    return Data(bytes)
}

/// A running CrashChild process and the lines it prints.
final class CrashChildProcess: Sendable {
    let process: ChildProcess
    let lines: AsyncStream<String>

    /// The CrashChild binary, built next to the test bundle.
    static var executable: String? {
        var candidates: [String] = []
        let runner = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        candidates.append(runner.appendingPathComponent("CrashChild").path)
        candidates.append(runner.deletingLastPathComponent().appendingPathComponent("CrashChild").path)
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        candidates.append(root.appendingPathComponent(".build/debug/CrashChild").path)
        candidates.append(root.appendingPathComponent(".build/release/CrashChild").path)
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    init(directory: String, transactions: Int, failpoint: String? = nil, durability: String? = nil) throws {
        let executable = try #require(Self.executable, "CrashChild is not built; run `swift build` first")
        var environment = ProcessInfo.processInfo.environment
        environment["EVENTSTORE_FAILPOINT"] = failpoint
        environment["CRASH_DURABILITY"] = durability
        let process = try ChildProcess(
            executable, [directory, "\(transactions)"], environment: environment, standardOutput: .pipe)
        let handle = try #require(process.standardOutput)
        let (lines, continuation) = AsyncStream<String>.makeStream()
        self.process = process
        self.lines = lines
        let thread = Thread {
            var pending = Data()
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                    continuation.yield(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                    pending.removeSubrange(pending.startIndex...newline)
                }
            }
            continuation.finish()
        }
        thread.start()
    }

    /// SIGKILLs the child (as a power cut would stop it) and waits for it to end.
    func kill() async { await process.kill() }

    /// Waits for the child to end by itself; true if it was killed by SIGKILL (a failpoint).
    func waitForSelfKill() async throws -> Bool { try await exited() == .signalled(SIGKILL) }

    /// Waits for the child to end, and says how it ended.
    @discardableResult
    func exited() async throws -> ChildProcess.Termination { try await process.exited() }
}

/// Follows a child's output: the highest acknowledged transaction, stopping after `acks` new acknowledgements.
func follow(_ child: CrashChildProcess, acks limit: Int, highest: inout Int) async -> Bool {
    var seen = 0
    guard limit > 0 else { return true }
    for await line in child.lines {
        if line == "done" { return false }
        guard line.hasPrefix("ack "), let number = Int(line.dropFirst(4)) else { continue }
        highest = max(highest, number)
        seen += 1
        if seen >= limit { return true }
    }
    return false
}

/// Opens `directory` as the child does and checks everything the crash tests promise: it opens without repair,
/// every acknowledged transaction is present, the log is exactly a prefix of the attempted transactions (nothing
/// partial, nothing invented), stream versions are contiguous, positions gapless, and verify() is clean.
/// Returns the number of transactions stored.
@discardableResult
func checkCrashedStore(_ directory: String, acknowledged: Int, context: String) async throws -> Int {
    let backend = try await PageFileKeyValueStore.open(
        directory: directory, options: PageFileOptions(pageSize: 4096, cacheSizeMB: 1, checkpointThresholdMB: 1))
    let store = KeyValueEventStore(backend: backend)
    let events = try await store.readAll(from: 1, limit: .max)
    #expect(events.map(\.position) == Array(stride(from: UInt64(1), through: UInt64(events.count), by: 1)), "\(context)")

    var expected: [(Int, Int, Int)] = []
    var transactions = 0
    while expected.count < events.count {
        let count = 1 + transactions % 3
        for index in 0..<count { expected.append((transactions, index, count)) }
        transactions += 1
    }
    #expect(expected.count == events.count, "\(context): the log ends inside a transaction")
    for (event, (number, index, count)) in zip(events, expected) {
        #expect(event.data == crashPayload(transaction: number, index: index, count: count),
            "\(context): event at position \(event.position) is not event \(index) of transaction \(number)")
        #expect(event.stream.rawValue == "crash-\(number % 4)", "\(context)")
    }
    #expect(transactions - 1 >= acknowledged,
        "\(context): transaction \(acknowledged) was acknowledged but only \(transactions) are stored")
    for stream in 0..<4 {
        let read = try await store.read(try StreamName("crash-\(stream)"), from: .start, direction: .forward, limit: .max)
        #expect(read.map(\.version) == Array(stride(from: UInt64(1), through: UInt64(read.count), by: 1)),
            "\(context): stream crash-\(stream) versions are not contiguous")
    }
    let report = try await backend.verify()
    #expect(report.isClean, "\(context): \(report.problems)")
    try await store.close()
    return transactions
}
