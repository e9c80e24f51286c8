// A snapshot records the first version its state folds (found in the seventh session's review): one taken on save
// from a state loaded before retention hid the start of the stream used to record the new first visible version,
// although its state folded the now hidden events, and later loads used it and differed from a replay.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Snapshots record the first version their state folds")
struct SnapshotFoldStartTests {
    @Test("a save from a state loaded before truncation must not seed later loads with hidden events")
    func saveAfterTruncationFromStaleLoad() async throws {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore())
        let stream = try Fixtures.stream()
        let repository = try Fixtures.repository(store, policy: .every(10))
        try await Fixtures.fill(stream, in: store, events: 9)

        // A command loads the aggregate (folding versions 1...9) ...
        let loaded = try await repository.load(stream)
        #expect(loaded.version == 9)
        // ... meanwhile retention hides versions 1...4 (the stream's version does not change) ...
        try await store.setMetadata(StreamMetadata(truncateBefore: 5), for: stream)
        // ... and the command saves: the append at .exact(9) succeeds and the policy snapshots version 10.
        let saved = try await repository.save([Deposited(amount: 7)], to: stream, from: loaded)
        #expect(saved.result.version == 10)
        // The stale state is not snapshotted: it folds versions 1 to 4, which readers no longer see.
        guard case .failed(let error) = saved.snapshot, case SnapshotError.versionNotVisible = error else {
            Issue.record("snapshot: \(saved.snapshot)")
            return
        }

        let replay = try await repository.load(stream, usingSnapshots: false)
        let viaSnapshot = try await repository.load(stream)
        #expect(replay.replayedEvents == 6, "a replay sees versions 5 to 10")
        #expect(viaSnapshot.state == replay.state, "a load must equal a replay of the visible events")
    }
}
