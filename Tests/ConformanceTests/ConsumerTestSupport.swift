// Small helpers shared by the consumer and retention scenarios.

import EventStore
import EventStoreKV
import Foundation
import Testing

/// A sample event of `type` whose payload is `text`.
func sample(_ type: String = "Ticked", _ text: String = "") -> EventData {
    EventData(type: type, data: Data(text.utf8))
}

/// `count` events of `type`, with payloads "prefix-0", "prefix-1", ...
func samples(_ count: Int, type: String = "Ticked", prefix: String = "e") -> [EventData] {
    (0..<count).map { sample(type, "\(prefix)-\($0)") }
}

/// `count` events like `samples(_:type:prefix:)`, with ids drawn from `ids`, so a run's keys (and the shape of the
/// event-id index) are the same every time.
func samples(_ count: Int, type: String = "Ticked", prefix: String = "e", ids: inout SeededUUIDs) -> [EventData] {
    (0..<count).map { EventData(id: ids.next(), type: type, data: Data("\(prefix)-\($0)".utf8)) }
}

/// Random-looking version-4 UUIDs from a seed (SplitMix64): reproducible where random ids would make a run's
/// storage footprint vary.
struct SeededUUIDs {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UUID {
        var bytes = [UInt8](repeating: 0, count: 16)
        for half in 0..<2 {
            let word = nextWord()
            for index in 0..<8 { bytes[half * 8 + index] = UInt8(truncatingIfNeeded: word >> (8 * index)) }
        }
        bytes[6] = bytes[6] & 0x0F | 0x40
        bytes[8] = bytes[8] & 0x3F | 0x80
        return UUID(uuid: (
            bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
            bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
    }

    private mutating func nextWord() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A user stream name; the test fails if the name is invalid.
func stream(_ name: String) throws -> StreamName { try StreamName(name) }

extension AsyncIteratorProtocol where Element == SubscriptionMessage {
    /// The next `count` events, failing the test if the sequence ends or a marker comes first.
    mutating func nextEvents(_ count: Int) async throws -> [RecordedEvent] {
        var events: [RecordedEvent] = []
        while events.count < count {
            let message = try await next()
            guard let message else {
                Issue.record("subscription ended after \(events.count) of \(count) events")
                return events
            }
            guard case .event(let event) = message else {
                Issue.record("expected an event, got \(message)")
                return events
            }
            events.append(event)
        }
        return events
    }

    /// Skips events up to the next "caught up" marker and returns its position.
    mutating func nextCaughtUp() async throws -> UInt64? {
        while let message = try await next() {
            if case .caughtUp(let through) = message { return through }
        }
        return nil
    }
}

/// How many keys the store's backend holds under `prefix` (for checking that scavenge removes data).
func keyCount(_ store: KeyValueEventStore, prefix: [UInt8]) async throws -> Int {
    try await store.backend.scan(.prefix(prefix), direction: .forward, limit: .max).count
}

/// Every global position the stream index names, in key order: each entry `0x03 name 0x00 u64be lastVersion` names
/// the run ending at the value's u64be last position, of as many positions as the u32be count after it (one when
/// the value holds only the position).
func streamIndexPositions(_ store: KeyValueEventStore) async throws -> [UInt64] {
    let entries = try await store.backend.scan(.prefix([0x03]), direction: .forward, limit: .max)
    return entries.flatMap { entry -> [UInt64] in
        let last = entry.value.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let count = entry.value.count == 8 ? 1 : entry.value.suffix(4).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return Array((last - count + 1)...last)
    }
}

/// Every global position the secondary index of `kind` (0x01 category, 0x02 event type) names, in key order: each
/// entry `0x0A kind u16 length name u64be last` names the run ending at `last` of as many positions as its value's
/// u32be count (one when empty).
func secondaryIndexPositions(_ store: KeyValueEventStore, kind: UInt8) async throws -> [UInt64] {
    let entries = try await store.backend.scan(.prefix([0x0A, kind]), direction: .forward, limit: .max)
    return entries.flatMap { entry -> [UInt64] in
        let last = entry.key.suffix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        let count = entry.value.isEmpty ? 1 : entry.value.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return Array((last - count + 1)...last)
    }
}

/// A store that forwards everything to `base` but leaves the visiting reads to the protocol's default
/// implementation, as a store that cannot lend events in place would, hands out its sessions through `sessions` (to
/// inject a session's failures), and runs `beforeAppend` before each single-stream append (to inject a competing
/// writer).
struct ForwardingEventStore: EventStoring {
    let base: KeyValueEventStore
    var sessions: @Sendable (any StreamSession) -> any StreamSession = { $0 }
    var beforeAppend: @Sendable (StreamName) async throws -> Void = { _ in }

    var limits: EventStoreLimits { base.limits }
    func append(_ events: [EventData], to stream: StreamName, expectedVersion: ExpectedVersion) async throws
        -> AppendResult
    {
        try await beforeAppend(stream)
        return try await base.append(events, to: stream, expectedVersion: expectedVersion)
    }
    func append(_ appends: [StreamAppend]) async throws -> [AppendResult] { try await base.append(appends) }
    func read(_ stream: StreamName, from start: ReadStart, direction: ReadDirection, limit: Int) async throws
        -> [RecordedEvent]
    { try await base.read(stream, from: start, direction: direction, limit: limit) }
    func version(of stream: StreamName) async throws -> UInt64 { try await base.version(of: stream) }
    func readAll(from position: UInt64, limit: Int) async throws -> [RecordedEvent] {
        try await base.readAll(from: position, limit: limit)
    }
    func lastPosition() async throws -> UInt64 { try await base.lastPosition() }
    func openSession(on stream: StreamName, sessionTimeout: Duration, openTimeout: Duration) async throws
        -> any StreamSession
    { sessions(try await base.openSession(on: stream, sessionTimeout: sessionTimeout, openTimeout: openTimeout)) }
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
