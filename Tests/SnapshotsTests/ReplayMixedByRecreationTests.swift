// Found by the nineteenth session's third review (both failed before the fix): a soft delete AND a recreation (or a
// truncation and new appends) landing between two batches of a replay from the initial state with no upTo left the
// next read following on from the last version folded (a recreated stream's versions continue), so no hole was
// seen, and the replay returned the fold of the deleted events followed by the new ones: a state readers never saw.
// A replay from the initial state that folded something now checks its start once, unless it replayed only up to a
// version read before it began (load()), which no recreation's event can be at or below.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Aggregates: a replay overtaken by a soft delete and a recreation between its reads")
struct ReplayMixedByRecreationTests {
    @Test("a replay from the initial state never folds a deleted stream's events with its recreated ones",
          arguments: SnapshotBackends.local)
    func replayOvertakenByDeleteAndRecreate(backend: SnapshotBackend) async throws {
        try await backend.withStore { base in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: base, events: 5)
            // After the first batch (versions 1...5, a full batch of 5) is read: the stream is soft-deleted and
            // recreated with versions 6 and 7, which readers now see alone.
            let store = HookedReadEventStore(base: base, stream: stream) { base in
                _ = try await base.delete(stream, expectedVersion: .exact(5), mode: .soft)
                try await Fixtures.fill(stream, in: base, events: 2, startingAt: 5, expectingAny: true)
            }
            let repository = AggregateRepository<Ledger>(store: store, registry: try Fixtures.registry, readBatchSize: 5)
            let replayed = try await repository.replay(
                stream, onto: LoadedAggregate(state: Ledger(), version: 0, replayedEvents: 0))
            // What readers see now: versions 6 and 7 only.
            let recreated = try await AggregateRepository<Ledger>(store: base, registry: try Fixtures.registry)
                .replay(stream, onto: LoadedAggregate(state: Ledger(), version: 0, replayedEvents: 0))
            #expect(recreated.replayedEvents == 2 && recreated.firstVersion == 6)
            #expect(
                replayed.state == recreated.state && replayed.firstVersion == 6,
                "the replay folded \(replayed.replayedEvents) events from version \(String(describing: replayed.firstVersion)) to \(replayed.version): the deleted versions 1...5 and the recreated 6...7"
            )
        }
    }

    @Test("a replay from the initial state never folds truncated events with the ones appended after them",
          arguments: SnapshotBackends.local)
    func replayOvertakenByTruncateAndAppend(backend: SnapshotBackend) async throws {
        try await backend.withStore { base in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: base, events: 5)
            // After versions 1...5 are read: they are truncated, and versions 6 and 7 appended.
            let store = HookedReadEventStore(base: base, stream: stream) { base in
                try await base.setMetadata(StreamMetadata(truncateBefore: 6), for: stream)
                try await Fixtures.fill(stream, in: base, events: 2, startingAt: 5)
            }
            let repository = AggregateRepository<Ledger>(store: store, registry: try Fixtures.registry, readBatchSize: 5)
            let replayed = try await repository.replay(
                stream, onto: LoadedAggregate(state: Ledger(), version: 0, replayedEvents: 0))
            let now = try await AggregateRepository<Ledger>(store: base, registry: try Fixtures.registry)
                .replay(stream, onto: LoadedAggregate(state: Ledger(), version: 0, replayedEvents: 0))
            #expect(now.replayedEvents == 2 && now.firstVersion == 6)
            #expect(
                replayed.state == now.state && replayed.firstVersion == 6,
                "the replay folded \(replayed.replayedEvents) events from version \(String(describing: replayed.firstVersion)) to \(replayed.version): the truncated versions 1...5 and the new 6...7"
            )
        }
    }
}
