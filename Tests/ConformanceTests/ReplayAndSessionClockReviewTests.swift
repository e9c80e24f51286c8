// Second-review findings on the replay and session-clock changes: a replay onto a state that folds no event (retention
// hid them all) took any later hole for events it folds and threw replayInterrupted; and a session wrapper that did
// not implement hasExpired() silently compared the store's clock with Date() through a protocol default, so an
// exclusive projection through it lost its lease at once on a store with its own clock (the default is gone: every
// session must answer by its store's clock).

import EventStore
import EventStoreKV
import Foundation
import KeyValueTestSupport
import Testing

@Suite("Review 2: replay and session clock")
struct ReplayAndSessionClockReviewTests {
    @Test("a replay onto a state that folds no event (retention hid them all) folds the events readers see now")
    func replayOntoAStateThatFoldsNothing() async throws {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore())
        var registry = EventTypeRegistry()
        try registry.register(ReviewDeposited.self)
        let name = try stream("empty-fold-1")
        let events = try (1...10).map { try registry.encode(ReviewDeposited(amount: $0)) }
        _ = try await store.append(events, to: name, expectedVersion: .noStream)
        try await store.setMetadata(StreamMetadata(truncateBefore: 11), for: name)
        let repository = AggregateRepository<ReviewBalance>(store: store, registry: registry)
        let loaded = try await repository.load(name)
        // The initial state at the stream's version: it folds none of the events, and says so.
        #expect(loaded.version == 10 && loaded.replayedEvents == 0 && loaded.state.deposits == 0)
        #expect(loaded.firstVersion == 11)
        // Two more events; retention now hides the first of them too.
        _ = try await store.append(
            try [11, 12].map { try registry.encode(ReviewDeposited(amount: $0)) }, to: name, expectedVersion: .exact(10))
        try await store.setMetadata(StreamMetadata(truncateBefore: 12), for: name)
        // Nothing the state folds was hidden (it folds nothing), so event 12 is folded.
        let caughtUp = try await repository.replay(name, onto: loaded)
        #expect(caughtUp.version == 12 && caughtUp.state.total == 12)
        #expect(caughtUp.firstVersion == 12)
        // As the load's state was before this session's marker: unknown first version, version 10.
        var unmarked = loaded
        unmarked.firstVersion = nil
        await #expect(throws: EventStoreError.self, "a state whose first version is unknown may fold hidden events") {
            _ = try await repository.replay(name, onto: unmarked)
        }
    }

    @Test("a session wrapper over a store with its own clock keeps its lease through an exclusive projection")
    func decoratedSessionOnClockedStore() async throws {
        let store = KeyValueEventStore(
            backend: InMemoryKeyValueStore(), clock: { Date(timeIntervalSince1970: 1_000_000_000) })
        _ = try await store.append(samples(3), to: try stream("deco-1"), expectedVersion: .noStream)
        let decorated = ForwardingEventStore(base: store, sessions: { DecoratedSession(base: $0) })
        let session = try await decorated.openSession(
            on: try stream("deco-2"), sessionTimeout: .seconds(60), openTimeout: .zero)
        #expect(await session.hasExpired() == false, "a lease just taken for 60 s reports itself expired")
        try await session.close()
        let projection = CheckpointedProjection(
            store: decorated, consumer: "deco", checkpointEvery: 1, exclusivity: .exclusive(lease: .seconds(60)))
        #expect(try await projection.run(until: .whenCaughtUp) { _ in } == 3)
    }
}

/// A session decorator, as instrumentation would write one: it forwards every requirement.
private struct DecoratedSession: StreamSession {
    let base: any StreamSession
    var id: UUID { base.id }
    var stream: StreamName { base.stream }
    func append(_ events: [EventData], expectedVersion: ExpectedVersion) async throws -> AppendResult {
        try await base.append(events, expectedVersion: expectedVersion)
    }
    func append(_ appends: [StreamAppend]) async throws -> [AppendResult] { try await base.append(appends) }
    func renew() async throws { try await base.renew() }
    func saveCheckpoint(_ position: UInt64, for consumer: String) async throws {
        try await base.saveCheckpoint(position, for: consumer)
    }
    func leaseExpiresAt() async -> Date { await base.leaseExpiresAt() }
    func hasExpired() async -> Bool { await base.hasExpired() }
    func close() async throws { try await base.close() }
}
