// Policies and the snapshotting repository's own operations: every N events on save, snapshot-all at an interval,
// keep the last K, taking snapshots on demand, and the errors of each.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

/// A backend that refuses every transaction touching the snapshot key space (tag 0x08), to show that a failed
/// snapshot never fails or undoes the save that triggered it.
final class SnapshotRefusingBackend: KeyValueStore {
    let inner: any KeyValueStore

    init(_ inner: any KeyValueStore) { self.inner = inner }

    func get(_ key: Key) async throws -> KeyValueEntry? { try await inner.get(key) }
    func get(_ keys: [Key]) async throws -> [KeyValueEntry?] { try await inner.get(keys) }
    func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws -> [KeyValueEntry] {
        try await inner.scan(range, direction: direction, limit: limit)
    }
    func commit(_ transaction: KeyValueTransaction) async throws -> UInt64 {
        if transaction.writes.contains(where: { $0.key.first == 0x08 }) {
            throw KeyValueStoreError.unavailable("snapshot writes refused by the test")
        }
        return try await inner.commit(transaction)
    }
    func currentRevision() async throws -> UInt64 { try await inner.currentRevision() }
    func changes(after revision: UInt64, prefix: Key) -> AsyncThrowingStream<KeyValueChange, any Error> {
        inner.changes(after: revision, prefix: prefix)
    }
    func close() async throws { try await inner.close() }
}

struct Stamped: DomainEvent {
    static let eventType = "Stamped"
    var at: Date
}

/// Keeps the millisecond part of each stamp: JSON's ISO-8601 dates drop it, so applying the original events gives a
/// different state from a replay.
struct StampLog: Aggregate, Codable, Equatable {
    var milliseconds: [Int] = []

    init() {}

    mutating func apply(_ event: any DomainEvent) {
        guard let stamped = event as? Stamped else { return }
        milliseconds.append(Int((stamped.at.timeIntervalSince1970 * 1_000).rounded()) % 1_000)
    }
}

@Suite("Snapshots: policies and the snapshotting repository")
struct PolicyTests {
    /// Saves `count` single-event deposits through `repository`, loading before each, and returns the outcomes.
    private func saveOneByOne(
        _ count: Int, to stream: StreamName, with repository: SnapshottingRepository<Ledger>
    ) async throws -> [SnapshotOutcome] {
        var outcomes: [SnapshotOutcome] = []
        for amount in 1...count {
            let loaded = try await repository.load(stream)
            outcomes.append(try await repository.save([Deposited(amount: amount)], to: stream, from: loaded).snapshot)
        }
        return outcomes
    }

    private func takenVersions(_ outcomes: [SnapshotOutcome]) -> [UInt64] {
        outcomes.compactMap { if case .taken(let version) = $0 { version } else { nil } }
    }

    @Test("a snapshot every N events is taken on save", arguments: SnapshotBackends.all)
    func everyNEvents(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store, policy: .every(10))

            let outcomes = try await saveOneByOne(25, to: stream, with: repository)

            #expect(takenVersions(outcomes) == [10, 20])
            #expect(outcomes.filter { if case .notDue = $0 { true } else { false } }.count == 23)
            #expect(try await repository.snapshotVersions(of: stream) == [10, 20])
            let loaded = try await repository.load(stream)
            #expect(loaded.replayedEvents == 5)
            #expect(loaded.state == (try await repository.load(stream, usingSnapshots: false)).state)
        }
    }

    @Test("batches that pass a multiple of N snapshot at the batch's end", arguments: SnapshotBackends.all)
    func batchesCrossingMultiples(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store, policy: .every(10))
            for _ in 0..<6 {
                let loaded = try await repository.load(stream)
                try await repository.save((1...7).map { Deposited(amount: $0) }, to: stream, from: loaded)
            }
            #expect(try await repository.snapshotVersions(of: stream) == [14, 21, 35, 42])
        }
    }

    @Test("only the last K snapshots are kept", arguments: SnapshotBackends.all)
    func keepLastK(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store, policy: .every(5, keepingLast: 2))

            _ = try await saveOneByOne(20, to: stream, with: repository)

            #expect(try await repository.snapshotVersions(of: stream) == [15, 20])
            try await repository.expectIndexMatchesRecords(stream)
        }
    }

    @Test("snapshot-all honours the retention", arguments: SnapshotBackends.all)
    func snapshotAllWithRetention(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 95)
            let repository = try Fixtures.repository(store, policy: SnapshotPolicy(retention: 3))

            #expect(try await repository.snapshotAll(of: stream, every: 10).count == 9)

            #expect(try await repository.snapshotVersions(of: stream) == [70, 80, 90])
            try await repository.expectIndexMatchesRecords(stream)
            #expect(try await repository.snapshotAll(of: stream, every: 1_000) == [])
        }
    }

    @Test("execute loads through snapshots, saves, and snapshots by policy", arguments: SnapshotBackends.all)
    func execute(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store, policy: .every(3))
            var last: SavedAggregate<Ledger>?
            for _ in 0..<7 {
                last = try await repository.execute(on: stream) { ledger in [Deposited(amount: ledger.events + 1)] }
            }
            let saved = try #require(last)
            #expect(saved.result.version == 7)
            #expect(saved.aggregate.state.balance == 28)
            #expect(saved.aggregate.state == (try await repository.load(stream, usingSnapshots: false)).state)
            #expect(try await repository.snapshotVersions(of: stream) == [3, 6])
        }
    }

    @Test("a save that loses a version race throws and takes no snapshot", arguments: SnapshotBackends.all)
    func staleSave(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store, policy: .every(1))
            let stale = try await repository.load(stream)
            try await repository.save([Deposited(amount: 1)], to: stream, from: stale)

            await #expect {
                try await repository.save([Deposited(amount: 2)], to: stream, from: stale)
            } throws: { error in
                if case EventStoreError.wrongExpectedVersion = error { true } else { false }
            }
            #expect(try await repository.snapshotVersions(of: stream) == [1])
        }
    }

    @Test("a snapshot that fails after the append is reported, and the events stay saved",
          arguments: SnapshotBackends.all)
    func failedSnapshotKeepsEvents(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let refusing = KeyValueEventStore(backend: SnapshotRefusingBackend(store.backend))
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(refusing, policy: .every(1))

            let saved = try await repository.save(
                [Deposited(amount: 4)], to: stream, from: try await repository.load(stream))

            guard case .failed(let error) = saved.snapshot else {
                Issue.record("expected a failed snapshot, got \(saved.snapshot)")
                return
            }
            #expect("\(error)".contains("refused by the test"))
            #expect(saved.result.version == 1)
            #expect(try await store.version(of: stream) == 1)
            #expect(try await repository.snapshotVersions(of: stream) == [])
        }
    }

    @Test("a snapshot taken on save equals a replay even when the event encoding is lossy",
          arguments: SnapshotBackends.all)
    func snapshotOnSaveMatchesReplay(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            var registry = EventTypeRegistry()
            try registry.register(Stamped.self)
            let repository = try SnapshottingRepository<StampLog>(
                events: store, registry: registry, policy: .every(2))
            let stream = try Fixtures.stream()
            let stamps = [Date(timeIntervalSince1970: 1_700_000_000.123), Date(timeIntervalSince1970: 1_700_000_001.456)]

            let saved = try await repository.save(
                stamps.map { Stamped(at: $0) }, to: stream, from: try await repository.load(stream))

            let replay = try await repository.load(stream, usingSnapshots: false)
            let snapshot = try #require(try await repository.snapshots.snapshot(of: stream, at: 2))
            #expect(try repository.schema.decode(snapshot) == replay.state)
            #expect(saved.aggregate.state == replay.state)
            #expect(try await repository.load(stream).state == replay.state)
        }
    }

    @Test("an event no replay could decode is refused before anything is written", arguments: SnapshotBackends.all)
    func undecodableEventRefused(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            var registry = EventTypeRegistry()
            try registry.register(Deposited.self)
            let repository = try SnapshottingRepository<Ledger>(events: store, registry: registry, policy: .every(1))
            let stream = try Fixtures.stream()

            await #expect(throws: EventStoreError.self) {
                try await repository.save(
                    [Deposited(amount: 1), Renamed(name: "x")], to: stream, from: try await repository.load(stream))
            }
            #expect(try await store.version(of: stream) == 0)
        }
    }

    @Test("taking and loading snapshots beyond the stream are typed errors", arguments: SnapshotBackends.all)
    func versionErrors(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)

            await #expect(throws: EventStoreError.self) { try await repository.takeSnapshot(of: stream) }
            try await Fixtures.fill(stream, in: store, events: 5)
            await #expect(throws: SnapshotError.versionBeyondStream(stream: stream, requested: 6, streamVersion: 5)) {
                try await repository.takeSnapshot(of: stream, at: 6)
            }
            await #expect(throws: SnapshotError.versionBeyondStream(stream: stream, requested: 9, streamVersion: 5)) {
                try await repository.load(stream, asOf: 9)
            }
            await #expect { try await repository.takeSnapshot(of: stream, at: 0) } throws: { error in
                if case EventStoreError.invalidArgument = error { true } else { false }
            }
            #expect(try await repository.snapshotVersions(of: stream) == [])
            #expect(try await repository.takeSnapshot(of: stream) == 5)
        }
    }

    @Test("an empty stream has nothing to snapshot", arguments: SnapshotBackends.all)
    func emptyStreamSnapshot(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            await #expect { try await repository.takeSnapshot(of: stream) } throws: { error in
                if case EventStoreError.streamNotFound(let named) = error { named == stream } else { false }
            }
        }
    }

    @Test("invalid policies and settings are rejected", arguments: SnapshotBackends.all)
    func invalidSettings(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let isInvalidArgument: @Sendable (any Error) -> Bool = { error in
                if case EventStoreError.invalidArgument = error { true } else { false }
            }
            #expect(performing: { try Fixtures.repository(store, policy: .every(0)) }, throws: isInvalidArgument)
            #expect(
                performing: { try Fixtures.repository(store, policy: .every(5, keepingLast: 0)) },
                throws: isInvalidArgument)
            #expect(performing: { try Fixtures.repository(store, readBatchSize: 0) }, throws: isInvalidArgument)
            let repository = try Fixtures.repository(store)
            await #expect(
                performing: { try await repository.snapshotAll(of: try Fixtures.stream(), every: 0) },
                throws: isInvalidArgument)
        }
    }
}
