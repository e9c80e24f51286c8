// Found by the nineteenth session's second review (failed before the fix): snapshotAll documents that "if a
// truncation, deletion or scavenge hides events the replay folded while it runs, it starts again from the stream's
// new first visible event". A truncation landing after a snapshot was saved, at a version the replay had folded,
// made the next segment's snapshot save throw versionNotVisible (SnapshotStore.save refuses a foldedFrom readers no
// longer see) out of snapshotAll instead. The pass now starts again when the stream's start has moved.

import EventStore
import EventStoreKV
import Foundation
import KeyValueTestSupport
import Snapshots
import Testing

/// After the first update that writes a snapshot key (tag 0x08), runs `hook` once.
final class AfterFirstSnapshotWrite: ForwardingKeyValueStore, @unchecked Sendable {
    // @unchecked: its own state is in `Locked`s.
    let fired = Locked(false)
    let hook = Locked<(@Sendable () async throws -> Void)?>(nil)

    override func update<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value> {
        let wroteSnapshot = Locked(false)
        let result = try await inner.update { context in
            let outcome = try await body(context)
            if outcome.transaction.writes.contains(where: { $0.key.first == 0x08 }) {
                wroteSnapshot.withLock { $0 = true }
            }
            return outcome
        }
        if wroteSnapshot.withLock({ $0 }),
            fired.withLock({ fired in
                defer { fired = true }
                return !fired
            }),
            let hook = hook.withLock({ $0 })
        {
            try await hook()
        }
        return result
    }
}

@Suite("Snapshots: snapshotAll when a truncation lands while it runs")
struct SnapshotAllTruncatedMidwayTests {
    @Test("snapshotAll starts again after a truncation between its snapshots, as documented")
    func truncationBetweenSnapshots() async throws {
        let backend = AfterFirstSnapshotWrite(InMemoryKeyValueStore())
        let store = KeyValueEventStore(backend: backend)
        let stream = try Fixtures.stream()
        try await Fixtures.fill(stream, in: store, events: 10)
        // Once the snapshot at 5 (folding 1...5) is saved, versions 1 and 2 are truncated.
        backend.hook.withLock {
            $0 = { try await store.setMetadata(StreamMetadata(truncateBefore: 3), for: stream) }
        }
        let repository = try Fixtures.repository(store)
        do {
            let taken = try await repository.snapshotAll(of: stream, every: 5)
            // Started again from version 3: snapshots at 5 and 10, each folding 3... .
            #expect(taken == [5, 10])
            let loaded = try await repository.load(stream)
            #expect(loaded.state == (try await repository.load(stream, usingSnapshots: false)).state)
        } catch {
            Issue.record("snapshotAll threw instead of starting again: \(error)")
        }
        try await store.close()
    }
}
