// The admin tool took the last of a repeated valued option silently (`--max-count 5 --max-count 50` set 50, and
// the command changed the store), although the ledger beside it refuses a repeated flag ("which value was meant?").
// Now it is a usage error (status 2) before the store is touched. (Found by a review, twenty-third session.)

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("eventstore: a valued option given twice")
final class RepeatedOptionToolTests {
    private let scratch: String

    init() throws {
        scratch = try ToolRunner.temporaryDirectory()
    }

    deinit {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    /// A closed store holding account-1 with 3 events.
    private func makeStore() async throws -> String {
        let directory = try ToolRunner.temporaryDirectory(under: scratch) + "/store"
        let store = try KeyValueEventStore.open(directory: directory)
        let events = (1...3).map { EventData(type: "Happened", data: Data("{\"n\":\($0)}".utf8)) }
        _ = try await store.append(events, to: try StreamName("account-1"), expectedVersion: .any)
        try await store.close()
        return directory
    }

    @Test("metadata with --max-count given twice is a usage error that changes no byte, not silently the last value")
    func repeatedMaxCount() async throws {
        let directory = try await makeStore()
        let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/data"))
        let wal = try Data(contentsOf: URL(fileURLWithPath: directory + "/wal"))
        let result = try await ToolRunner.run(
            "eventstore", ["metadata", directory, "account-1", "--max-count", "5", "--max-count", "50"])
        #expect(result.status == 2, "exit \(result.status): \(result.output)\(result.errors)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory + "/data")) == data)
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory + "/wal")) == wal)
        let shown = try await ToolRunner.run("eventstore", ["metadata", directory, "account-1", "--json"])
        #expect(shown.status == 0)
        #expect(shown.output.contains("\"maxCount\":null"), "retention was set: \(shown.output)")
    }

    @Test("read with --limit given twice is a usage error, not silently the last value")
    func repeatedLimit() async throws {
        let directory = try await makeStore()
        let result = try await ToolRunner.run("eventstore", ["read", directory, "account-1", "--limit", "1", "--limit", "2"])
        #expect(result.status == 2, "exit \(result.status): \(result.output)")
        #expect(result.errors.contains("--limit is given more than once"), "\(result.errors)")
    }
}
