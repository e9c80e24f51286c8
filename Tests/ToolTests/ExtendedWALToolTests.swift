// Found by a review (twenty-second session): a WAL extended far past its records (a sparse tail: `truncate -s`, a copy tool that
// preallocates, a file system that zero-extends after a crash) crashes every open of the store.
//
// Recovery reads the whole WAL into one array before it scans it (Recovery.swift, `recover`:
// `wal.read(count: Int(try wal.size()), at: 0)`), so the memory an open needs is the WAL's size, not its records'.
// Where that allocation fails, Swift's allocator traps: the admin tool (and any application opening the store)
// dies with SIGABRT ("failed to allocate N bytes") instead of opening at the records the WAL holds or throwing a
// typed error naming the wal. The child below runs with a 4 GB address-space limit so that a 16 GiB sparse tail is
// enough to show it on any machine (without the limit, a tail larger than RAM does the same).

import EventStore
import EventStoreKV
import Foundation
import ProcessSupport
import Testing

@Suite("A WAL extended with a large sparse tail")
final class ExtendedWALToolTests {
    private let scratch: String

    init() throws {
        scratch = try ToolRunner.temporaryDirectory()
    }

    deinit {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    @Test("read-only commands on a store whose wal has a 16 GiB sparse tail end with a status, not a trap",
        arguments: ["info", "verify"])
    func sparseWALTail(command: String) async throws {
        let directory = try ToolRunner.temporaryDirectory(under: scratch) + "/store"
        let store = try KeyValueEventStore.open(directory: directory)
        let events = (1...3).map { EventData(type: "Happened", data: Data("{\"n\":\($0)}".utf8)) }
        _ = try await store.append(events, to: try StreamName("account-1"), expectedVersion: .any)
        try await store.close()
        // Extend the wal (sparse: no disk space is used) far past its records.
        let wal = try FileHandle(forUpdating: URL(fileURLWithPath: directory + "/wal"))
        try wal.truncate(atOffset: 16 << 30)
        try wal.close()

        let tool = try ToolRunner.executable("eventstore").path
        // A sanitizer build cannot start under an address-space limit (ThreadSanitizer reserves terabytes of shadow
        // memory and exits with 66): it runs without one, which still shows a trap, only not as surely.
        let limit = try await Self.startsUnderLimit(tool) ? "ulimit -v 4000000 && " : ""
        let process = try ChildProcess(
            "/bin/sh", ["-c", limit + "exec \"$0\" \"$1\" \"$2\"", tool, command, directory],
            standardOutput: .pipe, standardError: .pipe)
        let outputHandle = try #require(process.standardOutput)
        let errorHandle = try #require(process.standardError)
        async let out = ToolRunner.drain(outputHandle)
        async let err = ToolRunner.drain(errorHandle)
        let (_, errors) = await (out, err)
        let ending = try await process.exited()
        #expect(!errors.contains("Fatal error"), "\(command) trapped: \(errors.prefix(200))")
        #expect(ending == .exited(0) || ending == .exited(1), "\(command) ended with \(ending)")
    }

    /// Whether `tool` starts (and prints its help) under the 4 GB address-space limit the test uses.
    private static func startsUnderLimit(_ tool: String) async throws -> Bool {
        let probe = try ChildProcess(
            "/bin/sh", ["-c", "ulimit -v 4000000 && exec \"$0\" --help", tool], standardOutput: .pipe,
            standardError: .pipe)
        let (outputHandle, errorHandle) = (try #require(probe.standardOutput), try #require(probe.standardError))
        async let out = ToolRunner.drain(outputHandle)
        async let err = ToolRunner.drain(errorHandle)
        _ = await (out, err)
        return try await probe.exited() == .exited(0)
    }
}
