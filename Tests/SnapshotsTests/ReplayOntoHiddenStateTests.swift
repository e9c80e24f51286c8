// Guards AggregateRepository.replay(_:onto:upTo:)'s documented promise: a replay onto a state that folds events throws
// replayInterrupted when a truncation or deletion hides events that state folds. It only noticed when the next events
// read did not follow the state's version; a stream soft-deleted and recreated (versions continue), or truncated and
// then appended to, yields events that do follow, and the replay folded the new events onto the hidden ones. These
// tests failed before the fix (a check, once per replay that folds anything, that the stream's first visible event is
// still the state's first folded one). The third review found the same with nothing appended since: that check ran
// only when something new was folded, and the replay returned the state unchanged (failed before its fix too).

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Aggregates: a replay onto a state whose events were hidden since")
struct ReplayOntoHiddenStateTests {
    @Test("a replay onto a state of a soft-deleted, recreated stream does not mix the two lives",
          arguments: SnapshotBackends.local)
    func replayAcrossASoftDeleteAndRecreation(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = AggregateRepository<Ledger>(store: store, registry: try Fixtures.registry)
            try await Fixtures.fill(stream, in: store, events: 10)
            let loaded = try await repository.load(stream)
            #expect(loaded.version == 10 && loaded.firstVersion == 1)

            _ = try await store.delete(stream, expectedVersion: .exact(10), mode: .soft)
            try await Fixtures.fill(stream, in: store, events: 3, startingAt: 10, expectingAny: true)  // 11...13

            let fresh = try await repository.load(stream)
            #expect(fresh.replayedEvents == 3 && fresh.firstVersion == 11, "readers see only versions 11...13")
            await #expect(throws: EventStoreError.self, "the state folds deleted versions 1...10") {
                _ = try await repository.replay(stream, onto: loaded)
            }
            // The fresh state replays on as usual.
            let caughtUp = try await repository.replay(stream, onto: fresh)
            #expect(caughtUp.state == fresh.state && caughtUp.version == 13)
        }
    }

    @Test("a replay onto a state whose first events were truncated since does not fold them",
          arguments: SnapshotBackends.local)
    func replayAcrossATruncation(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = AggregateRepository<Ledger>(store: store, registry: try Fixtures.registry)
            try await Fixtures.fill(stream, in: store, events: 10)
            let loaded = try await repository.load(stream)

            try await store.setMetadata(StreamMetadata(truncateBefore: 5), for: stream)
            try await Fixtures.fill(stream, in: store, events: 3, startingAt: 10)  // 11...13

            let fresh = try await repository.load(stream)
            #expect(fresh.replayedEvents == 9 && fresh.firstVersion == 5, "readers see versions 5...13")
            do {
                let caughtUp = try await repository.replay(stream, onto: loaded)
                Issue.record(
                    "replay onto a state folding truncated versions 1...4 returned it (\(caughtUp.state.events) events at version \(caughtUp.version))")
            } catch EventStoreError.replayInterrupted(let interrupted, _) {
                #expect(interrupted == stream)
            }
            // A replay onto the fresh state folds the next events.
            try await Fixtures.fill(stream, in: store, events: 2, startingAt: 13)
            let caughtUp = try await repository.replay(stream, onto: fresh)
            #expect(caughtUp.version == 15 && caughtUp.replayedEvents == 11)
            #expect(caughtUp.state == (try await repository.load(stream)).state)
        }
    }

    enum Hiding: String, CaseIterable, Sendable { case softDelete, truncation }

    @Test("a replay onto a state whose events were hidden since, with nothing appended after, throws as documented",
          arguments: Hiding.allCases, SnapshotBackends.local)
    func replayWithNothingNew(hiding: Hiding, backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = AggregateRepository<Ledger>(store: store, registry: try Fixtures.registry)
            try await Fixtures.fill(stream, in: store, events: 10)
            let loaded = try await repository.load(stream)
            #expect(loaded.version == 10 && loaded.firstVersion == 1)
            switch hiding {
            case .softDelete: _ = try await store.delete(stream, expectedVersion: .exact(10), mode: .soft)
            case .truncation: try await store.setMetadata(StreamMetadata(truncateBefore: 5), for: stream)
            }
            do {
                let replayed = try await repository.replay(stream, onto: loaded)
                Issue.record(
                    "\(hiding): replay onto a state folding hidden versions returned it (\(replayed.state.events) events at version \(replayed.version))")
            } catch EventStoreError.replayInterrupted(let interrupted, _) {
                #expect(interrupted == stream)
            }
        }
    }

    @Test("a replay onto a state whose events are all still visible folds the new ones",
          arguments: SnapshotBackends.local)
    func replayWithNothingHidden(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = AggregateRepository<Ledger>(store: store, registry: try Fixtures.registry)
            try await Fixtures.fill(stream, in: store, events: 10)
            let loaded = try await repository.load(stream)
            try await Fixtures.fill(stream, in: store, events: 3, startingAt: 10)
            let caughtUp = try await repository.replay(stream, onto: loaded)
            #expect(caughtUp.version == 13 && caughtUp.firstVersion == 1 && caughtUp.skippedVersion == nil)
            #expect(caughtUp.state == (try await repository.load(stream)).state)
        }
    }
}
