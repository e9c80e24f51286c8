// Values at the edges of what records store, found in the eleventh session's second review: subscriptions over a
// global head or an event at the last UInt64 (which the decoders accept from damaged bytes) overflowed their
// cursor, and a store clock far from 1970 (or NaN) trapped converting its reading to the records' microseconds.
// Each must now end in a typed error or a normal result, never a trap.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Extreme stored values and clock readings")
struct ExtremeValueTests {
    @Test("subscribing from the end after a global head at UInt64.max reports caught up instead of trapping")
    func subscribeFromEndAtLastPosition() async throws {
        let backend = InMemoryKeyValueStore()
        _ = try await backend.commit(
            KeyValueTransaction(writes: [.put(KeyLayout.globalHead, PositionValue.encode(.max))]))
        let store = KeyValueEventStore(backend: backend)
        var iterator = store.subscribeToAll(from: .end).makeAsyncIterator()
        guard case .caughtUp = try await iterator.next() else {
            Issue.record("expected a caught-up marker")
            return
        }
    }

    @Test("a subscription delivers an event stored at position UInt64.max once, then reports caught up through it")
    func subscriptionOverEventAtLastPosition() async throws {
        let backend = InMemoryKeyValueStore()
        let prepared = EventRecord.prepare(
            EventData(type: "T", data: Data([1])), stream: try StreamName("edge"), recordedAtMicroseconds: 0)
        _ = try await backend.commit(
            KeyValueTransaction(writes: [.put(KeyLayout.log(.max), EventRecord.encode(prepared: prepared, version: 1))]))
        let store = KeyValueEventStore(backend: backend)
        // Batches of one, so the reader's next read would start past the event if the cursor could go there.
        var iterator = store.subscribeToAll(from: .start, bufferSize: 1).makeAsyncIterator()
        guard case .event(let event) = try await iterator.next() else {
            Issue.record("expected the event")
            return
        }
        #expect(event.position == .max)
        guard case .caughtUp(let through) = try await iterator.next() else {
            Issue.record("expected a caught-up marker, not the event again")
            return
        }
        #expect(through == .max)
    }

    static let unstorableReadings: [Double] = [1e13, -1e13, .nan, .infinity]

    @Test("an append or a deletion stamped by a clock reading a record cannot store is refused, and writes nothing",
          arguments: unstorableReadings)
    func unstorableClockReading(seconds: Double) async throws {
        let backend = InMemoryKeyValueStore()
        let normal = KeyValueEventStore(backend: backend)
        let stream = try StreamName("clocked")
        _ = try await normal.append([EventData(type: "T", data: Data())], to: stream, expectedVersion: .noStream)
        let skewed = KeyValueEventStore(backend: backend, clock: { Date(timeIntervalSince1970: seconds) })
        do {
            _ = try await skewed.append([EventData(type: "T", data: Data())], to: stream, expectedVersion: .any)
            Issue.record("appended with an unstorable timestamp")
        } catch EventStoreError.invalidArgument(let message) {
            #expect(message.contains("the store's clock reading"), "\(message)")
        }
        do {
            _ = try await skewed.delete(stream, expectedVersion: .any, mode: .soft)
            Issue.record("deleted with an unstorable timestamp")
        } catch EventStoreError.invalidArgument(let message) {
            #expect(message.contains("the store's clock reading"), "\(message)")
        }
        #expect(try await normal.lastPosition() == 1)
        #expect(try await normal.version(of: stream) == 1)
    }

    @Test("a session whose lease expiry a record cannot store is refused with invalidArgument")
    func unstorableLeaseExpiry() async throws {
        let backend = InMemoryKeyValueStore()
        // Storable now (just below Int64.max microseconds), but not 100 years later. Sessions date their leases by
        // the store's clock from the open on, so the open is refused (before, the open used the system clock and
        // the first append was refused).
        let skewed = KeyValueEventStore(backend: backend, clock: { Date(timeIntervalSince1970: 9_223_000_000_000) })
        do {
            let session = try await skewed.openSession(
                on: try StreamName("leased"), sessionTimeout: .seconds(100 * 365 * 86_400), openTimeout: .zero)
            _ = try await session.append([EventData(type: "T", data: Data())], expectedVersion: .noStream)
            Issue.record("appended with an unstorable lease expiry")
            try await session.close()
        } catch EventStoreError.invalidArgument(let message) {
            #expect(message.contains("the session's expiry"), "\(message)")
        }
        #expect(try await skewed.lastPosition() == 0)
        // Nothing holds the stream: a plain append goes through.
        _ = try await skewed.append([EventData(type: "T", data: Data())], to: try StreamName("leased"), expectedVersion: .noStream)
    }
}

/// Extreme public inputs, found by the eleventh session's third review: each trapped (or corrupted the heap, or
/// wrote what could not be read back) before its fix.
@Suite("Extreme public inputs")
struct ExtremeInputTests {
    @Test("a history limit of Int.max or below zero keeps the store working", arguments: [Int.max, -1, 0])
    func historyLimits(limit: Int) async throws {
        let store = InMemoryKeyValueStore(historyLimit: limit)
        for value in 0..<5 { _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [UInt8(value)])])) }
        #expect(try await store.get([1])?.value == [4])
    }

    @Test("a TTL past Int64 seconds saturates (the key lives until 2262) instead of trapping")
    func enormousTTL() async throws {
        let store = InMemoryKeyValueStore()
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1], ttl: .seconds(Int64.max) * 2)]))
        #expect(try await store.get([1])?.value == [1])
    }

    @Test("an open timeout too large for the clock waits as if endless instead of trapping")
    func enormousOpenTimeout() async throws {
        let store = KeyValueEventStore.inMemory()
        let session = try await store.openSession(
            on: try StreamName("free"), sessionTimeout: .seconds(30), openTimeout: Duration(attoseconds: .max))
        try await session.close()
    }

    @Test("readBatchSize is taken from 1 to 65,536, so reads never reserve room for Int.max events")
    func readBatchSizeBounds() async throws {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore(), readBatchSize: .max)
        #expect(store.readBatchSize == 65_536)
        #expect(KeyValueEventStore(backend: InMemoryKeyValueStore(), readBatchSize: .min).readBatchSize == 1)
        let stream = try StreamName("batch-one")
        _ = try await store.append([EventData(type: "T", data: Data([1]))], to: stream, expectedVersion: .noStream)
        #expect(try await store.read(stream).count == 1)
        #expect(try await store.readAll(from: 1, limit: .max).count == 1)
    }

    @Test("replaying onto a state at the last version reads nothing instead of trapping")
    func replayOntoLastVersion() async throws {
        struct Counter: Aggregate {
            init() {}
            mutating func apply(_ event: any DomainEvent) {}
        }
        let repository = AggregateRepository<Counter>(store: KeyValueEventStore.inMemory(), registry: EventTypeRegistry())
        let loaded = LoadedAggregate(state: Counter(), version: .max, replayedEvents: 0)
        let replayed = try await repository.replay(try StreamName("s"), onto: loaded)
        #expect(replayed.version == .max && replayed.replayedEvents == 0)
    }

    struct Dated: DomainEvent, Equatable {
        static let eventType = "Dated"
        var at: Date
    }

    static let writableDates: [Double] = [-62_135_596_800, -1e9, 0, 1_700_000_000.25, 253_402_300_799.5]
    static let unwritableDates: [Double] = [-62_135_596_800.5, -1e11, 253_402_300_800, 1e14, .nan, .infinity]

    @Test("JSONEventCoder reads back every date from year 1 through 9999 exactly", arguments: writableDates)
    func writableDate(seconds: Double) throws {
        let coder = JSONEventCoder()
        let event = Dated(at: Date(timeIntervalSince1970: seconds))
        #expect(try coder.decode(Dated.self, from: try coder.encode(event)) == event)
    }

    @Test("JSONEventCoder refuses to write a date it could not read back", arguments: unwritableDates)
    func unwritableDate(seconds: Double) throws {
        #expect(throws: EncodingError.self) {
            _ = try JSONEventCoder().encode(Dated(at: Date(timeIntervalSince1970: seconds)))
        }
    }

    @Test("on 4 KiB pages an event type longer than the page file can index is refused as an invalid type")
    func eventTypeOverThePageLimit() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("eventstore-types-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try KeyValueEventStore.open(directory: directory, options: PageFileOptions(pageSize: 4096))
        let stream = try StreamName("typed")
        let fits = String(repeating: "t", count: 965)
        _ = try await store.append([EventData(type: fits, data: Data([1]))], to: stream, expectedVersion: .noStream)
        do {
            let type = String(repeating: "t", count: 966)
            _ = try await store.append([EventData(type: type, data: Data([1]))], to: stream, expectedVersion: .any)
            Issue.record("a type the backend cannot index was accepted")
        } catch EventStoreError.invalidEventType(_, let reason) {
            #expect(reason.contains("at most 965 UTF-8 bytes on this backend"), "\(reason)")
        }
        #expect(try await store.version(of: stream) == 1)
        try await store.close()
    }
}
