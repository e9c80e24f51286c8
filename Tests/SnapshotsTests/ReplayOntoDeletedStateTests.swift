// Found by the nineteenth session's third review (both failed before the fix): a replay onto a state that folds
// events, of a stream soft-deleted (or truncated) since with nothing appended after, returned that state unchanged,
// though replay's documentation says a replay onto a state that folds events throws when "a truncation, deletion or
// scavenge hides events the state folds (the stream's first visible event is no longer the state's firstVersion)".
// The start check ran only when the replay folded something.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Aggregates: a replay onto a state of a stream deleted since, with nothing new")
struct ReplayOntoDeletedStateTests {
    @Test("a replay onto a state whose stream was soft-deleted since throws replayInterrupted, as documented",
          arguments: SnapshotBackends.local)
    func replayOntoSoftDeletedStream(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = AggregateRepository<Ledger>(store: store, registry: try Fixtures.registry)
            try await Fixtures.fill(stream, in: store, events: 10)
            let loaded = try await repository.load(stream)
            #expect(loaded.version == 10 && loaded.firstVersion == 1)
            _ = try await store.delete(stream, expectedVersion: .exact(10), mode: .soft)
            do {
                let replayed = try await repository.replay(stream, onto: loaded)
                Issue.record(
                    "replay onto a state folding deleted versions 1...10 returned it (\(replayed.state.events) events at version \(replayed.version)); readers see no event")
            } catch EventStoreError.replayInterrupted(let interrupted, _) {
                #expect(interrupted == stream)
            }
        }
    }

    @Test("a replay onto a state whose first events were truncated since throws replayInterrupted, as documented",
          arguments: SnapshotBackends.local)
    func replayOntoTruncatedStream(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = AggregateRepository<Ledger>(store: store, registry: try Fixtures.registry)
            try await Fixtures.fill(stream, in: store, events: 10)
            let loaded = try await repository.load(stream)
            try await store.setMetadata(StreamMetadata(truncateBefore: 5), for: stream)
            do {
                let replayed = try await repository.replay(stream, onto: loaded)
                Issue.record(
                    "replay onto a state folding truncated versions 1...4 returned it (\(replayed.state.events) events at version \(replayed.version)); readers see 5...10")
            } catch EventStoreError.replayInterrupted(let interrupted, _) {
                #expect(interrupted == stream)
            }
        }
    }
}
