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

/// Forwards to `base`; after the first read of `stream` from version 1, runs `afterFirstRead` once (before returning
/// that read's events), so a change lands deterministically between a replay's first and second batch.
struct HookedReadEventStore: EventStoring {
    let base: KeyValueEventStore
    let stream: StreamName
    let fired = Locked(false)
    let afterFirstRead: @Sendable (KeyValueEventStore) async throws -> Void

    var limits: EventStoreLimits { base.limits }
    func append(_ events: [EventData], to stream: StreamName, expectedVersion: ExpectedVersion) async throws
        -> AppendResult
    { try await base.append(events, to: stream, expectedVersion: expectedVersion) }
    func append(_ appends: [StreamAppend]) async throws -> [AppendResult] { try await base.append(appends) }
    func read(_ stream: StreamName, from start: ReadStart, direction: ReadDirection, limit: Int) async throws
        -> [RecordedEvent]
    {
        let events = try await base.read(stream, from: start, direction: direction, limit: limit)
        if stream == self.stream, case .version(1) = start,
            fired.withLock({ fired in
                defer { fired = true }
                return !fired
            })
        {
            try await afterFirstRead(base)
        }
        return events
    }
    func read(
        _ stream: StreamName, from start: ReadStart, direction: ReadDirection, limit: Int,
        visiting visit: (BorrowedEvent) throws -> Bool
    ) async throws -> Int {
        try await base.read(stream, from: start, direction: direction, limit: limit, visiting: visit)
    }
    func version(of stream: StreamName) async throws -> UInt64 { try await base.version(of: stream) }
    func readAll(from position: UInt64, limit: Int) async throws -> [RecordedEvent] {
        try await base.readAll(from: position, limit: limit)
    }
    func lastPosition() async throws -> UInt64 { try await base.lastPosition() }
    func openSession(on stream: StreamName, sessionTimeout: Duration, openTimeout: Duration) async throws
        -> any StreamSession
    { try await base.openSession(on: stream, sessionTimeout: sessionTimeout, openTimeout: openTimeout) }
    func logNotifications() async throws -> AsyncThrowingStream<Void, any Error> { try await base.logNotifications() }
    func readCategory(_ category: String, from position: UInt64, limit: Int) async throws -> [RecordedEvent] {
        try await base.readCategory(category, from: position, limit: limit)
    }
    func readEvents(ofType type: String, from position: UInt64, limit: Int) async throws -> [RecordedEvent] {
        try await base.readEvents(ofType: type, from: position, limit: limit)
    }
    func listStreams(prefix: String, after: StreamName?, limit: Int) async throws -> [StreamSummary] {
        try await base.listStreams(prefix: prefix, after: after, limit: limit)
    }
    func checkpoint(of consumer: String) async throws -> UInt64? { try await base.checkpoint(of: consumer) }
    func saveCheckpoint(_ position: UInt64, for consumer: String) async throws {
        try await base.saveCheckpoint(position, for: consumer)
    }
    func metadata(of stream: StreamName) async throws -> StreamMetadata { try await base.metadata(of: stream) }
    func setMetadata(_ metadata: StreamMetadata, for stream: StreamName) async throws {
        try await base.setMetadata(metadata, for: stream)
    }
    func delete(_ stream: StreamName, expectedVersion: ExpectedVersion, mode: DeletionMode) async throws -> UInt64 {
        try await base.delete(stream, expectedVersion: expectedVersion, mode: mode)
    }
}

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
