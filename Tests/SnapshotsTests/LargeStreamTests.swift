// Acceptance: a long stream loads through a late snapshot by replaying only the events after it.

import EventStore
import EventStoreKV
import Snapshots
import Testing

@Suite("Snapshots: large streams")
struct LargeStreamTests {
    @Test(
        "loading a 100,000-event stream through a snapshot at 99,990 replays at most 10 events",
        arguments: SnapshotBackends.local)
    func hundredThousandEvents(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store, readBatchSize: 4_096)
            // The state at 99,990 is folded locally while appending (a full replay of 99,990 events here would
            // only re-test replay); the snapshot holds exactly that state.
            let atSnapshot = try await Fixtures.fill(stream, in: store, events: 99_990, batch: 2_000)
            try await repository.snapshots.save(
                try repository.schema.encode(atSnapshot), schemaVersion: repository.schema.version, of: stream,
                at: 99_990)
            let expected = try await Fixtures.fill(
                stream, in: store, events: 10, after: atSnapshot, startingAt: 99_990)

            let loaded = try await repository.load(stream)

            #expect(loaded.replayedEvents <= 10)
            #expect(loaded.replayedEvents == 10)
            #expect(loaded.version == 100_000)
            #expect(loaded.state == expected)
            #expect(try await repository.lastSnapshotVersion(of: stream) == 99_990)
        }
    }
}
