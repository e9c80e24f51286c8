// The admin tool on deleted streams (found by a review of the docs against the code, twenty-fourth session):
// docs/OBSERVABILITY.md promises exit 5 for an "unknown or deleted stream", but `read` of a deleted stream exited 0
// with an empty table whenever the stream still had retention metadata (a deletion leaves it in place).

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("The admin tool on deleted streams", .timeLimit(.minutes(5)))
struct DeletedStreamToolTests {
    /// A store with `plain` and `retained` (metadata maxCount 100) both deleted by `mode`.
    private static func store(deletedBy mode: DeletionMode) async throws -> String {
        let directory = try ToolRunner.temporaryDirectory()
        let store = try KeyValueEventStore.open(directory: directory)
        let plain = try StreamName("plain-1"), retained = try StreamName("retained-1")
        for stream in [plain, retained] {
            _ = try await store.append(
                [EventData(type: "Happened", data: Data("{}".utf8))], to: stream, expectedVersion: .noStream)
        }
        try await store.setMetadata(StreamMetadata(maxCount: 100), for: retained)
        _ = try await store.delete(plain, expectedVersion: .any, mode: mode)
        _ = try await store.delete(retained, expectedVersion: .any, mode: mode)
        try await store.close()
        return directory
    }

    @Test("read of a deleted stream exits 5 whether or not it had metadata", arguments: [DeletionMode.soft, .hard])
    func readDeleted(mode: DeletionMode) async throws {
        let directory = try await Self.store(deletedBy: mode)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for name in ["plain-1", "retained-1"] {
            let read = try await ToolRunner.run("eventstore", ["read", directory, name])
            #expect(read.status == 5, "\(mode)-deleted \(name): status \(read.status), output \(read.output)")
            #expect(read.errors.contains("was deleted"), "\(read.errors)")
        }
    }

    @Test("metadata of a soft-deleted stream is shown and set; a hard-deleted one's is shown, and a change exits 5")
    func metadataOfDeleted() async throws {
        let soft = try await Self.store(deletedBy: .soft)
        defer { try? FileManager.default.removeItem(atPath: soft) }
        let shown = try await ToolRunner.run("eventstore", ["metadata", soft, "retained-1", "--json"])
        #expect(shown.status == 0, "\(shown.errors)")
        #expect(shown.output.contains("\"maxCount\":100"), "\(shown.output)")
        let set = try await ToolRunner.run("eventstore", ["metadata", soft, "plain-1", "--max-count", "7", "--json"])
        #expect(set.status == 0, "\(set.errors)")
        #expect(set.output.contains("\"maxCount\":7"), "\(set.output)")

        let hard = try await Self.store(deletedBy: .hard)
        defer { try? FileManager.default.removeItem(atPath: hard) }
        let hardShown = try await ToolRunner.run("eventstore", ["metadata", hard, "retained-1", "--json"])
        #expect(hardShown.status == 0, "\(hardShown.errors)")
        let refused = try await ToolRunner.run("eventstore", ["metadata", hard, "retained-1", "--max-count", "7"])
        #expect(refused.status == 5, "status \(refused.status), errors \(refused.errors)")
        let after = try await ToolRunner.run("eventstore", ["metadata", hard, "retained-1", "--json"])
        #expect(after.output.contains("\"maxCount\":100"), "the refused change altered the metadata: \(after.output)")
    }
}
