// The append counters of `KeyValueEventStore.metrics()` on every backend: they count what an append wrote, not
// what it was asked to write. Found in the eleventh session's review: an idempotent re-send beside a new part, or
// through a session (whose lease renewal is written), was counted as written again.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Conformance: append metrics")
struct AppendMetricsConformanceTests {
    @Test("an idempotent re-send beside a new part counts only the events written now", arguments: Backends.all)
    func idempotentPartIsNotCounted(backend: Backend) async throws {
        try await backend.withStore { store in
            let (first, second) = (try uniqueStream("a"), try uniqueStream("b"))
            let events = [EventData(type: "T", data: Data(count: 100))]
            _ = try await store.append(events, to: first, expectedVersion: .noStream)
            _ = try await store.append([
                StreamAppend(stream: first, expectedVersion: .noStream, events: events),  // re-send: writes nothing
                StreamAppend(stream: second, expectedVersion: .noStream, events: [EventData(type: "U", data: Data())]),
            ])
            #expect(try await store.readAll(from: 1, limit: 10).count == 2)
            let metrics = try await store.metrics()
            #expect(metrics.appends == 2)
            #expect(metrics.eventsAppended == 2)
            #expect(metrics.eventBytesAppended == 101 + 1, "sizes: 100 + 1 (type T), then 0 + 1 (type U)")
        }
    }

    @Test("a session's idempotent re-send writes no event and counts none", arguments: Backends.all)
    func sessionResendIsNotCounted(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("s")
            let session = try await store.openSession(
                on: stream, sessionTimeout: backend.leaseTimeout(.seconds(60)), openTimeout: .zero)
            let events = [EventData(type: "T", data: Data(count: 10))]
            _ = try await session.append(events, expectedVersion: .noStream)
            _ = try await session.append(events, expectedVersion: .noStream)  // re-send: renews the lease only
            #expect(try await store.readAll(from: 1, limit: 10).count == 1)
            let metrics = try await store.metrics()
            #expect(metrics.appends == 1)
            #expect(metrics.eventsAppended == 1)
            #expect(metrics.eventBytesAppended == 11)
            try await session.close()
        }
    }

    @Test("an append refused for its expected version counts nothing", arguments: Backends.all)
    func refusedAppendIsNotCounted(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("r")
            _ = try await store.append(makeEvents(2), to: stream, expectedVersion: .noStream)
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append(makeEvents(3), to: stream, expectedVersion: .exact(7))
            }
            let metrics = try await store.metrics()
            #expect(metrics.appends == 1)
            #expect(metrics.eventsAppended == 2)
        }
    }
}
