// A forwarding event store that lands a change between two of a replay's reads, deterministically: the aggregate
// and snapshot tests use it to overtake a load or replay with a deletion, a truncation or new appends.

import EventStore
import EventStoreKV
import Foundation

/// Forwards to `base`; after a read of `stream` from version `from` with a limit above 1 (a replay's batch, not the
/// start check's limit-1 read), runs `hook` (at most `times` times) before returning that read's events.
struct HookedReadEventStore: EventStoring {
    let base: KeyValueEventStore
    let stream: StreamName
    var from: UInt64 = 1
    var times = 1
    let fired = Locked(0)
    let hook: @Sendable (KeyValueEventStore) async throws -> Void

    var limits: EventStoreLimits { base.limits }
    func append(_ events: [EventData], to stream: StreamName, expectedVersion: ExpectedVersion) async throws
        -> AppendResult
    { try await base.append(events, to: stream, expectedVersion: expectedVersion) }
    func append(_ appends: [StreamAppend]) async throws -> [AppendResult] { try await base.append(appends) }
    func read(_ stream: StreamName, from start: ReadStart, direction: ReadDirection, limit: Int) async throws
        -> [RecordedEvent]
    {
        let events = try await base.read(stream, from: start, direction: direction, limit: limit)
        if stream == self.stream, case .version(let version) = start, version == from, limit > 1,
            fired.withLock({ fired in
                defer { fired += 1 }
                return fired < times
            })
        {
            try await hook(base)
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
    func versionedMetadata(of stream: StreamName) async throws -> VersionedStreamMetadata {
        try await base.versionedMetadata(of: stream)
    }
    func setMetadata(_ metadata: StreamMetadata, for stream: StreamName, expectedVersion: ExpectedVersion)
        async throws -> UInt64
    {
        try await base.setMetadata(metadata, for: stream, expectedVersion: expectedVersion)
    }
    func delete(_ stream: StreamName, expectedVersion: ExpectedVersion, mode: DeletionMode) async throws -> UInt64 {
        try await base.delete(stream, expectedVersion: expectedVersion, mode: mode)
    }
}
