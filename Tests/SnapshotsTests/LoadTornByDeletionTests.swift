// Found by the nineteenth session's second review (both failed before the fix): a load that a soft delete overtakes
// between two of its reads returned a torn state (the events of the first read only) at the stream's old version,
// marked as if retention had hidden the rest (skippedVersion), instead of starting again; a replay from the initial
// state returned the first versions of a deleted stream. AggregateRepository.load documents: "The state is the fold
// of the events readers see at one moment, never a part of them". The replay's end-of-stream check now also asks
// whether the start moved when the stream's version fell below the last one it folded.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Aggregates: a load overtaken by a soft delete between its reads")
struct LoadTornByDeletionTests {
    @Test("a load never returns the fold of part of the events (a soft delete between two batches)",
          arguments: SnapshotBackends.local)
    func loadOvertakenBySoftDelete(backend: SnapshotBackend) async throws {
        try await backend.withStore { base in
            let stream = try Fixtures.stream()
            let whole = try await Fixtures.fill(stream, in: base, events: 10)
            let store = HookedReadEventStore(base: base, stream: stream) { base in
                _ = try await base.delete(stream, expectedVersion: .exact(10), mode: .soft)
            }
            // Batches of 5: the soft delete lands after versions 1...5 were read, before 6...10 are.
            let repository = AggregateRepository<Ledger>(store: store, registry: try Fixtures.registry, readBatchSize: 5)
            let loaded = try await repository.load(stream)
            // Either all ten events (as read before the delete) or none (as readers see since): never five of them.
            #expect(
                loaded.state == whole || loaded.state == Ledger(),
                "load returned a fold of \(loaded.state.events) of the stream's 10 events at version \(loaded.version) (replayedEvents \(loaded.replayedEvents), skippedVersion \(String(describing: loaded.skippedVersion)))"
            )
        }
    }

    @Test("a replay from the initial state starts again when a soft delete lands between two batches, as documented",
          arguments: SnapshotBackends.local)
    func replayOvertakenBySoftDelete(backend: SnapshotBackend) async throws {
        try await backend.withStore { base in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: base, events: 10)
            let store = HookedReadEventStore(base: base, stream: stream) { base in
                _ = try await base.delete(stream, expectedVersion: .exact(10), mode: .soft)
            }
            let repository = AggregateRepository<Ledger>(store: store, registry: try Fixtures.registry, readBatchSize: 5)
            // replay(_:onto:upTo:): "If a truncation, deletion or scavenge hides events the state folds ..., a replay
            // from a state that folds nothing (version 0) starts again from the stream's new first visible event".
            let replayed = try await repository.replay(
                stream, onto: LoadedAggregate(state: Ledger(), version: 0, replayedEvents: 0))
            #expect(
                replayed.replayedEvents == 0 && replayed.state == Ledger(),
                "the replay returned versions 1...\(replayed.version) of a deleted stream (\(replayed.replayedEvents) events)")
        }
    }
}
