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

    @Test("a session append whose lease expiry a record cannot store is refused with invalidArgument")
    func unstorableLeaseExpiry() async throws {
        let backend = InMemoryKeyValueStore()
        // Storable now (just below Int64.max microseconds), but not 100 years later.
        let skewed = KeyValueEventStore(backend: backend, clock: { Date(timeIntervalSince1970: 9_223_000_000_000) })
        let session = try await skewed.openSession(
            on: try StreamName("leased"), sessionTimeout: .seconds(100 * 365 * 86_400), openTimeout: .zero)
        do {
            _ = try await session.append([EventData(type: "T", data: Data())], expectedVersion: .noStream)
            Issue.record("appended with an unstorable lease expiry")
        } catch EventStoreError.invalidArgument(let message) {
            #expect(message.contains("the session's expiry"), "\(message)")
        }
        #expect(try await skewed.lastPosition() == 0)
        try await session.close()
    }
}
