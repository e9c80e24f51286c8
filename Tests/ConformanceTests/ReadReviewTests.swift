// Defects found by the fifteenth session's review of the read side, each of which failed before its fix:
// - a read reserved room for every version (or position) in its range, so a stream whose long history was scavenged
//   or is hidden by maxAge reserved room for events long gone, and a large enough range trapped (SIGABRT);
// - a small-limit read of a maxAge stream fetched one hidden version per backend round trip (4,003 calls for one
//   event);
// - metrics() of a closed store threw the key-value contract's error instead of storeClosed.

import EventStore
@testable import EventStoreKV
import Foundation
import KeyValueTestSupport
import Synchronization
import Testing

@Suite("Reads: reservations, maxAge round trips, metrics of a closed store")
struct ReadReviewTests {
    /// A consistent state: stream `meter-1` at `version`, whose only remaining event (the last, at global position
    /// `version`) survived a maxAge scavenge of everything before it.
    static func storeWithScavengedHistory(version: UInt64) async throws -> (KeyValueEventStore, StreamName) {
        let store = KeyValueEventStore.inMemory()
        let stream = try StreamName("meter-1")
        let event = makeEvent("last")
        let micros = try EventRecord.microseconds(Date(), of: "now")
        let record = EventRecord.encode(
            prepared: EventRecord.prepare(event, stream: stream, recordedAtMicroseconds: micros), version: version)
        _ = try await store.backend.commit(
            KeyValueTransaction(writes: [
                .put(KeyLayout.globalHead, PositionValue.encode(version)),
                .put(KeyLayout.log(version), record),
                .put(
                    KeyLayout.streamIndex(stream, version: version),
                    StreamIndexRun.value(lastPosition: version, count: 1)),
                .put(KeyLayout.eventID(event.id), PositionValue.encode(version)),
                .put(KeyLayout.streamHead(stream), StreamHead(version: version, lastPosition: version).encoded()),
                .put(
                    KeyLayout.streamMetadata(stream),
                    StreamMetadataRecord.encode(StreamMetadata(maxAge: .seconds(86_400)))),
            ]))
        return (store, stream)
    }

    @Test("reading a maxAge stream whose long history was scavenged returns its one event instead of trapping")
    func streamReadAfterScavenge() async {
        await #expect(processExitsWith: .success) {
            let (store, stream) = try await Self.storeWithScavengedHistory(version: 1 << 59)
            let events = try await store.read(stream)
            guard events.map(\.version) == [1 << 59] else { exit(2) }
        }
    }

    @Test("reading a global log whose long history was scavenged returns what is stored instead of trapping")
    func logReadAfterScavenge() async {
        await #expect(processExitsWith: .success) {
            let (store, _) = try await Self.storeWithScavengedHistory(version: 1 << 59)
            let events = try await store.readAll(from: 1, limit: .max)
            guard events.map(\.position) == [1 << 59] else { exit(2) }
        }
    }

    @Test("a read reserves room for the events that exist, not for every version ever written")
    func reservationFollowsStoredEvents() async throws {
        let now = Mutex(Date(timeIntervalSince1970: 1_000_000))
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore(), clock: { now.withLock { $0 } })
        let stream = try StreamName("meter-2")
        for _ in 0..<20 { _ = try await store.append(makeEvents(1_000), to: stream, expectedVersion: .any) }
        now.withLock { $0 += 7_200 }
        _ = try await store.append([makeEvent("fresh")], to: stream, expectedVersion: .any)
        try await store.setMetadata(StreamMetadata(maxAge: .seconds(3_600)), for: stream)
        _ = try await store.scavenge()
        let events = try await store.read(stream)
        #expect(events.map(\.version) == [20_001])
        #expect(events.capacity < 1_000, "reserved \(events.capacity) slots for \(events.count) event")
    }

    @Test("reading the first visible event of a maxAge stream takes batches, not a round trip per hidden event")
    func smallLimitOverHiddenEvents() async throws {
        let now = Mutex(Date(timeIntervalSince1970: 1_000_000))
        let backend = CallCountingStore()
        let store = KeyValueEventStore(backend: backend, clock: { now.withLock { $0 } })
        let stream = try StreamName("meter-3")
        _ = try await store.append(makeEvents(2_000), to: stream, expectedVersion: .noStream)
        now.withLock { $0 += 7_200 }
        _ = try await store.append([makeEvent("fresh")], to: stream, expectedVersion: .any)
        try await store.setMetadata(StreamMetadata(maxAge: .seconds(3_600)), for: stream)
        backend.calls.store(0, ordering: .relaxed)
        let first = try await store.read(stream, from: .start, limit: 1)
        #expect(first.map(\.version) == [2_001])
        let calls = backend.calls.load(ordering: .relaxed)
        #expect(calls < 20, "\(calls) backend calls to read one event")
    }

    @Test("metrics() of a closed store throws storeClosed like every other call", arguments: Backends.all)
    func metricsAfterClose(backend: Backend) async throws {
        let made = try await backend.make(EventStoreLimits())
        let store = made.store
        _ = try await store.append([makeEvent("x")], to: try uniqueStream(), expectedVersion: .noStream)
        try await store.close()
        await #expect {
            _ = try await store.metrics()
        } throws: { error in
            if case EventStoreError.storeClosed = error { return true } else { return false }
        }
        await made.cleanup()
    }
}

/// An in-memory store that counts the reads that reach it.
final class CallCountingStore: ForwardingKeyValueStore, @unchecked Sendable {
    // `@unchecked Sendable`: `calls` is an Atomic; the rest is immutable.
    let calls = Atomic<Int>(0)

    init() { super.init(InMemoryKeyValueStore()) }

    override func get(_ key: Key) async throws -> KeyValueEntry? {
        calls.add(1, ordering: .relaxed)
        return try await inner.get(key)
    }
    override func get(_ keys: [Key]) async throws -> [KeyValueEntry?] {
        calls.add(1, ordering: .relaxed)
        return try await inner.get(keys)
    }
    override func get(_ keys: [Key], visiting visit: (Int, BorrowedEntry?) throws -> Void) async throws {
        calls.add(1, ordering: .relaxed)
        try await inner.get(keys, visiting: visit)
    }
    override func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws -> [KeyValueEntry] {
        calls.add(1, ordering: .relaxed)
        return try await inner.scan(range, direction: direction, limit: limit)
    }
    override func scan(
        _ range: KeyRange, direction: ScanDirection, limit: Int, visiting visit: (BorrowedEntry) throws -> Bool
    ) async throws -> Int {
        calls.add(1, ordering: .relaxed)
        return try await inner.scan(range, direction: direction, limit: limit, visiting: visit)
    }
}
