// A store whose `wal` is shorter than a WAL header: empty, or missing (a writable open creates it empty).
// The corruption error for a damaged WAL record advises "moving the wal file away opens the store at its last
// checkpoint"; doing so, or finding an empty wal after damage, trapped in WriteAheadLog.scan (`bytes[offset...]`
// with offset = headerSize past the end), killing the process instead of opening at the checkpoint or throwing.
// The commands run as child processes, so the trap shows as a signal instead of taking the test runner down.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("eventstore and the page file: a wal shorter than its header")
final class ShortWALTests {
    private let scratch: String

    init() throws {
        scratch = try ToolRunner.temporaryDirectory()
    }

    deinit {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// A closed store holding one stream of 3 events (all checkpointed by the close).
    private func makeStore() async throws -> String {
        let directory = try ToolRunner.temporaryDirectory(under: scratch) + "/store"
        let store = try KeyValueEventStore.open(directory: directory)
        let events = (1...3).map { EventData(type: "Happened", data: Data("{\"n\":\($0)}".utf8)) }
        _ = try await store.append(events, to: try StreamName("account-1"), expectedVersion: .any)
        try await store.close()
        return directory
    }

    @Test("read-only commands on a store with an empty wal end with a status, not a trap", arguments: ["info", "verify"])
    func emptyWALReadOnly(command: String) async throws {
        let directory = try await makeStore()
        try Data().write(to: URL(fileURLWithPath: directory + "/wal"))
        let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/data"))
        let result = try await ToolRunner.run("eventstore", [command, directory])
        #expect(!result.errors.contains("Fatal error"), "\(command) trapped: \(result.errors.prefix(300))")
        #expect([0, 1, 3].contains(result.status), "\(command) ended with \(result.status)")
        let unchanged = try Data(contentsOf: URL(fileURLWithPath: directory + "/data")) == data
        #expect(unchanged)
    }

    @Test("a writable command on a store whose wal was moved away opens it at its last checkpoint, not a trap")
    func missingWALWritable() async throws {
        let directory = try await makeStore()
        try FileManager.default.moveItem(atPath: directory + "/wal", toPath: directory + "/wal.moved")
        let result = try await ToolRunner.run("eventstore", ["compact", directory])
        #expect(!result.errors.contains("Fatal error"), "compact trapped: \(result.errors.prefix(300))")
        #expect(result.status == 0, "compact ended with \(result.status): \(result.errors.prefix(300))")
        // The checkpointed events are all there.
        let read = try await ToolRunner.run("eventstore", ["read", directory, "account-1", "--json"])
        #expect(read.status == 0)
        #expect(read.output.split(separator: "\n").count == 3)
    }
}
