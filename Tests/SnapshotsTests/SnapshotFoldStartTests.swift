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

/// Found in the eighth session's review: a load reported the version of the last event it folded, so once retention
/// hid a stream's last events (truncated past its end, or all aged out) every save expected an older version than
/// the stream's and failed with wrongExpectedVersion, retry after retry, with no other writer about.
@Suite("Aggregates whose last events retention hides can still be saved")
struct HiddenTailSaveTests {
    @Test("AggregateRepository.execute after the stream was truncated past its end")
    func executeAfterTruncation() async throws {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore())
        let stream = try Fixtures.stream()
        var registry = EventTypeRegistry()
        try registry.register(Deposited.self)
        let repository = AggregateRepository<Ledger>(store: store, registry: registry)
        for amount in [1, 2, 3] { try await repository.execute(on: stream) { _ in [Deposited(amount: amount)] } }
        try await store.setMetadata(StreamMetadata(truncateBefore: 4), for: stream)
        let loaded = try await repository.load(stream)
        #expect(loaded.version == 3 && loaded.replayedEvents == 0)
        let outcome = try await repository.execute(on: stream, maxAttempts: 1) { _ in [Deposited(amount: 10)] }
        #expect(outcome.result.version == 4)
        #expect(try await repository.load(stream).replayedEvents == 1)
    }

    @Test("AggregateRepository.execute after every event aged out")
    func executeAfterMaxAge() async throws {
        let now = Locked(Date(timeIntervalSince1970: 1_000_000))
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore(), clock: { now.withLock { $0 } })
        let stream = try Fixtures.stream()
        var registry = EventTypeRegistry()
        try registry.register(Deposited.self)
        let repository = AggregateRepository<Ledger>(store: store, registry: registry)
        try await repository.execute(on: stream) { _ in [Deposited(amount: 5)] }
        try await store.setMetadata(StreamMetadata(maxAge: .seconds(3_600)), for: stream)
        now.withLock { $0 = $0.addingTimeInterval(7_200) }
        let outcome = try await repository.execute(on: stream, maxAttempts: 1) { _ in [Deposited(amount: 1)] }
        #expect(outcome.result.version == 2)
    }

    @Test("SnapshottingRepository: a load after truncation past the end saves at the stream's version")
    func snapshottingSaveAfterTruncation() async throws {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore())
        let stream = try Fixtures.stream()
        let repository = try Fixtures.repository(store, policy: .every(2))
        try await Fixtures.fill(stream, in: store, events: 5)
        try await store.setMetadata(StreamMetadata(truncateBefore: 6), for: stream)
        for usingSnapshots in [true, false] {
            let loaded = try await repository.load(stream, usingSnapshots: usingSnapshots)
            #expect(loaded.version == 5 && loaded.state == Ledger())
        }
        let saved = try await repository.save([Deposited(amount: 7)], to: stream, from: try await repository.load(stream))
        #expect(saved.result.version == 6)
        #expect(try await repository.load(stream).state == (try await repository.load(stream, usingSnapshots: false)).state)
    }
}

/// Found in the eighth session's review: `save(…, foldedFrom:)` accepted a fold start after the snapshot's own
/// version, wrote it into the collection's index, and from then on every read of the stream's snapshots (and even
/// deleteAll, which decodes the index first) failed with `corrupted`.
@Suite("A snapshot's fold start must lie within its versions")
struct SnapshotFoldStartBoundsTests {
    @Test("a foldedFrom of 0 or after the snapshot's version is refused and harms nothing")
    func foldedFromOutOfRange() async throws {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore())
        let stream = try Fixtures.stream()
        try await Fixtures.fill(stream, in: store, events: 5)
        let snapshots = try SnapshotStore(events: store)
        try await snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: 2)
        for foldStart: UInt64 in [0, 4, 6] {
            await #expect {
                try await snapshots.save(Data([2]), schemaVersion: 1, of: stream, at: 3, foldedFrom: foldStart)
            } throws: { error in
                guard case EventStoreError.invalidArgument(let message) = error else { return false }
                return message.contains("foldedFrom")
            }
        }
        #expect(try await snapshots.versions(of: stream) == [2])
        #expect(try await snapshots.snapshot(of: stream, at: 2)?.data == Data([1]))
        try await snapshots.save(Data([3]), schemaVersion: 1, of: stream, at: 3, foldedFrom: 3)
        #expect(try await snapshots.deleteAll(of: stream) == 2)
    }
}
