// Found by the nineteenth session's fourth review (all failed before the fix):
// 1. A replay onto a state that folds no event (load() of a stream retention hid whole: firstVersion = version + 1)
//    never checked its start, since startMoved(since: loaded) returns false for such a state: a soft delete and a
//    recreation (or a truncation and new appends) between two batches left it folding the deleted events together
//    with the recreated ones, a state readers never saw. Such a state is now treated as the initial one.
// 2. A replay from the initial state up to a version the stream had already reached (SnapshottingRepository's
//    load(asOf:) without a usable snapshot takes this path) checked its start after 37ad7e9, and restarted whenever a
//    maxCount (or maxAge) window moved during it, though the state it folded is exactly what readers saw when it
//    began; on a stream appended to during each attempt it threw replayInterrupted. The check now runs only when the
//    replay folded events past the stream's version read before it began.
// 3. (Fifth review.) A replay onto such a state whose retention was lifted since (its events visible again) either
//    returned a state that differs from what readers see (no writer racing it), or, with an append landing during
//    each attempt, restarted from the same state four times, each bound to fail, and threw that the stream's first
//    events were hidden. It now throws at once, asking for a new load.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Aggregates: when a replay checks its start")
struct ReplayStartCheckTests {
    @Test("a replay onto a load of a wholly hidden stream never folds deleted events with recreated ones",
          arguments: SnapshotBackends.local)
    func replayOntoFoldsNothingStateOvertakenByRecreation(backend: SnapshotBackend) async throws {
        try await backend.withStore { base in
            let stream = try Fixtures.stream()
            let registry = try Fixtures.registry
            try await Fixtures.fill(stream, in: base, events: 5)
            // Retention hides every event: load() gives version 5, firstVersion 6 (a state folding none).
            try await base.setMetadata(StreamMetadata(truncateBefore: 6), for: stream)
            let loaded = try await AggregateRepository<Ledger>(store: base, registry: registry).load(stream)
            #expect(loaded.version == 5 && loaded.firstVersion == 6 && loaded.replayedEvents == 0)
            try await Fixtures.fill(stream, in: base, events: 2, startingAt: 5)
            // After the replay's first batch (versions 6 and 7, a full batch of 2): the stream is soft-deleted and
            // recreated with versions 8 and 9, which readers now see alone.
            let store = HookedReadEventStore(base: base, stream: stream, from: 6, times: 1) { base in
                _ = try await base.delete(stream, expectedVersion: .exact(7), mode: .soft)
                try await Fixtures.fill(stream, in: base, events: 2, startingAt: 7, expectingAny: true)
            }
            let repository = AggregateRepository<Ledger>(store: store, registry: registry, readBatchSize: 2)
            do {
                let replayed = try await repository.replay(stream, onto: loaded)
                let now = try await AggregateRepository<Ledger>(store: base, registry: registry)
                    .replay(stream, onto: LoadedAggregate(state: Ledger(), version: 0, replayedEvents: 0))
                #expect(now.replayedEvents == 2 && now.firstVersion == 8)
                #expect(
                    replayed.state == now.state,
                    "the replay folded \(replayed.replayedEvents) events from version \(String(describing: replayed.firstVersion)) to \(replayed.version): the deleted versions 6...7 and the recreated 8...9"
                )
            } catch EventStoreError.replayInterrupted(let interrupted, _) {
                #expect(interrupted == stream)
            }
        }
    }

    @Test("a replay up to a version the stream had reached is not restarted by a maxCount window moving",
          arguments: SnapshotBackends.local)
    func replayUpToReachedVersionUnderMovingMaxCount(backend: SnapshotBackend) async throws {
        try await backend.withStore { base in
            let stream = try Fixtures.stream()
            let registry = try Fixtures.registry
            try await base.setMetadata(StreamMetadata(maxCount: 10), for: stream)
            try await Fixtures.fill(stream, in: base, events: 20)
            // Readers see 11...20. While each attempt reads, a writer appends one more event (a busy stream).
            let store = HookedReadEventStore(base: base, stream: stream, from: 1, times: .max) { base in
                _ = try await base.append(
                    [try registry.encode(any: Fixtures.event(number: 100))], to: stream, expectedVersion: .any)
            }
            let repository = AggregateRepository<Ledger>(store: store, registry: registry)
            // The state as of version 20 from what readers saw when the replay began (11...20): as a replay without
            // the concurrent appends returns it.
            let expected = try await AggregateRepository<Ledger>(store: base, registry: registry)
                .replay(stream, onto: LoadedAggregate(state: Ledger(), version: 0, replayedEvents: 0), upTo: 20)
            #expect(expected.firstVersion == 11 && expected.version == 20)
            do {
                let replayed = try await repository.replay(
                    stream, onto: LoadedAggregate(state: Ledger(), version: 0, replayedEvents: 0), upTo: 20)
                #expect(replayed.version == 20)
            } catch {
                Issue.record(
                    "a replay up to version 20, which the stream had reached before it began, threw \(error): it restarted each time an append moved the maxCount window")
            }
        }
    }

    @Test("load(asOf:) of a maxAge stream whose events age out as time passes, with no writer, returns a state")
    func loadAsOfUnderMaxAgeAsTimePasses() async throws {
        // A clock that moves on by one second at every reading (time passing while a load reads; no wall clock).
        let now = Locked(Date(timeIntervalSince1970: 1_000_000))
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore()) {
            now.withLock { date in
                defer { date = date.addingTimeInterval(1) }
                return date
            }
        }
        let stream = try Fixtures.stream()
        // Versions 1...50, one second apart; maxAge 30 s: readers see the last ~30, and the first visible event
        // moves on by one each second. Nobody appends from here on.
        try await Fixtures.fill(stream, in: store, events: 50, batch: 1)
        try await store.setMetadata(StreamMetadata(maxAge: .seconds(30)), for: stream)
        let repository = try Fixtures.repository(store)
        do {
            let loaded = try await repository.load(stream, asOf: 50, usingSnapshots: false)
            #expect(loaded.version == 50)
        } catch {
            Issue.record(
                "load(asOf: 50) of a stream nobody writes to threw \(error): each replay restarted because an event aged out while it read")
        }
    }

    @Test("a replay onto a state that folds nothing throws at once, without restarting, once retention is lifted",
          arguments: SnapshotBackends.local)
    func replayOntoFoldsNothingAfterRetentionIsLifted(backend: SnapshotBackend) async throws {
        try await backend.withStore { base in
            let stream = try Fixtures.stream()
            let registry = try Fixtures.registry
            try await Fixtures.fill(stream, in: base, events: 5)
            // Retention hides every event: load() gives version 5, firstVersion 6 (a state folding none).
            try await base.setMetadata(StreamMetadata(truncateBefore: 6), for: stream)
            let loaded = try await AggregateRepository<Ledger>(store: base, registry: registry).load(stream)
            #expect(loaded.version == 5 && loaded.firstVersion == 6 && loaded.replayedEvents == 0)
            // The truncation is lifted before a scavenge (versions 1...5 visible again), and the stream goes on.
            try await base.setMetadata(StreamMetadata(), for: stream)
            try await Fixtures.fill(stream, in: base, events: 2, startingAt: 5)
            let quiet = AggregateRepository<Ledger>(store: base, registry: registry)
            await #expect(throws: EventStoreError.self, "the state stands for events 1...5 hidden; readers see them") {
                _ = try await quiet.replay(stream, onto: loaded)
            }
            // A busy stream: one append lands while each attempt reads its batch from version 6.
            let store = HookedReadEventStore(base: base, stream: stream, from: 6, times: .max) { base in
                _ = try await base.append(
                    [try registry.encode(any: Fixtures.event(number: 100))], to: stream, expectedVersion: .any)
            }
            do {
                let raced = try await AggregateRepository<Ledger>(store: store, registry: registry)
                    .replay(stream, onto: loaded)
                Issue.record("a replay onto a state readers no longer see returned version \(raced.version)")
            } catch EventStoreError.replayInterrupted(let interrupted, _) {
                #expect(interrupted == stream)
            }
            #expect(store.fired.withLock { $0 } == 0, "it threw before replaying, instead of restarting")
            let fresh = try await AggregateRepository<Ledger>(store: base, registry: registry).load(stream)
            #expect(fresh.firstVersion == 1 && fresh.version == 7)
        }
    }
}
