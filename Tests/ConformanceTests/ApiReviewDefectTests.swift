import EventStore
import EventStoreKV
import Foundation
import KeyValueTestSupport
import Testing

struct ReviewDeposited: DomainEvent { static let eventType = "ReviewDeposited"; var amount: Int }

struct ReviewBalance: Aggregate {
    var deposits = 0
    var total = 0
    mutating func apply(_ event: any DomainEvent) {
        if let event = event as? ReviewDeposited { deposits += 1; total += event.amount }
    }
}

struct ReviewCafe: DomainEvent { static let eventType = "Caf\u{E9}"; var n: Int }
struct ReviewCafeDecomposed: DomainEvent { static let eventType = "Cafe\u{301}"; var s: String }

@Suite("Review: API layer")
struct ApiReviewDefectTests {
    /// A store (batches of 10 per backend round trip) with a 1,000-event stream of deposits 1...1000.
    private func depositStream(_ backend: ScanHookedStore) async throws
        -> (KeyValueEventStore, EventTypeRegistry, StreamName)
    {
        let store = KeyValueEventStore(backend: backend, readBatchSize: 10)
        var registry = EventTypeRegistry()
        try registry.register(ReviewDeposited.self)
        let stream = try StreamName("account-1")
        for batch in 0..<100 {
            let events = try (1...10).map { try registry.encode(ReviewDeposited(amount: batch * 10 + $0)) }
            _ = try await store.append(events, to: stream, expectedVersion: .exact(UInt64(batch * 10)))
        }
        return (store, registry, stream)
    }

    @Test("load reads on past a read cut short by a concurrent scavenge, and folds the stream as it is")
    func loadRacingScavenge() async throws {
        let backend = ScanHookedStore()
        let (store, registry, stream) = try await depositStream(backend)
        let repository = AggregateRepository<ReviewBalance>(store: store, registry: registry)
        // While the load reads, an operator truncates the stream's first 499 events and scavenge removes them.
        backend.arm(atScan: 2) {
            try await store.setMetadata(StreamMetadata(truncateBefore: 500), for: stream)
            try await store.scavenge()
        }
        let loaded = try await repository.load(stream)
        #expect(loaded.version == 1_000)
        // The stream as it is now (versions 500...1000): it was cut under the load, which starts again.
        #expect(loaded.state.deposits == 501, "folded \(loaded.state.deposits) deposits at version \(loaded.version)")
        #expect(loaded.state.total == (500...1000).reduce(0, +))
        #expect(loaded.firstVersion == 500)
    }

    @Test("load of a stream truncated already restarts when more of its start is scavenged under it")
    func loadOfTruncatedStreamRacingScavenge() async throws {
        let backend = ScanHookedStore()
        let (store, registry, stream) = try await depositStream(backend)
        try await store.setMetadata(StreamMetadata(truncateBefore: 500), for: stream)
        let repository = AggregateRepository<ReviewBalance>(store: store, registry: registry, readBatchSize: 1_000)
        // The load's first read lends 500...509, then a truncation to 600 and a scavenge cut it short.
        backend.arm(atScan: 2) {
            try await store.setMetadata(StreamMetadata(truncateBefore: 600), for: stream)
            try await store.scavenge()
        }
        let loaded = try await repository.load(stream)
        #expect(loaded.version == 1_000)
        // Either as it was (500...1000) or as it is (600...1000); never a part of one of them.
        #expect(
            loaded.state.deposits == 501 || loaded.state.deposits == 401,
            "folded \(loaded.state.deposits) deposits at version \(loaded.version)")
        let expectedTotal = loaded.state.deposits == 501 ? (500...1000).reduce(0, +) : (600...1000).reduce(0, +)
        #expect(loaded.state.total == expectedTotal)
    }

    @Test("replay onto a state whose events a truncation hid under it throws instead of folding across the hole")
    func replayOntoStateAcrossHole() async throws {
        let backend = ScanHookedStore()
        let (store, registry, stream) = try await depositStream(backend)
        let repository = AggregateRepository<ReviewBalance>(store: store, registry: registry, readBatchSize: 1_000)
        let start = try await repository.replay(
            stream, onto: LoadedAggregate(state: ReviewBalance(), version: 0, replayedEvents: 0), upTo: 100)
        #expect(start.version == 100 && start.firstVersion == 1)
        backend.arm(atScan: 2) {
            try await store.setMetadata(StreamMetadata(truncateBefore: 500), for: stream)
            try await store.scavenge()
        }
        await #expect(throws: EventStoreError.self) {
            _ = try await repository.replay(stream, onto: start)
        }
    }

    @Test("a replay's decode failure names the stream and version")
    func decodeFailureNamesEvent() async throws {
        let store = KeyValueEventStore.inMemory()
        var registry = EventTypeRegistry()
        try registry.register(ReviewDeposited.self)
        let stream = try StreamName("account-2")
        _ = try await store.append(
            [try registry.encode(ReviewDeposited(amount: 1)),
             EventData(type: ReviewDeposited.eventType, data: Data(#"{"amount":"x"}"#.utf8))],
            to: stream, expectedVersion: .noStream)
        let repository = AggregateRepository<ReviewBalance>(store: store, registry: registry)
        do {
            _ = try await repository.load(stream)
            Issue.record("the load should fail")
        } catch EventStoreError.codingFailed(let type, let reason) {
            #expect(type == ReviewDeposited.eventType)
            #expect(reason.contains("version 2 of stream \"account-2\""), "\(reason)")
        }
    }

    @Test("a replay's unknown event type names the stream, version and position")
    func unknownTypeNamesEvent() async throws {
        let store = KeyValueEventStore.inMemory()
        var registry = EventTypeRegistry()
        try registry.register(ReviewDeposited.self)
        let stream = try StreamName("account-3")
        _ = try await store.append(
            [try registry.encode(ReviewDeposited(amount: 1)), EventData(type: "Withdrawn", data: Data("{}".utf8))],
            to: stream, expectedVersion: .noStream)
        let repository = AggregateRepository<ReviewBalance>(store: store, registry: registry)
        do {
            _ = try await repository.load(stream)
            Issue.record("the load should fail")
        } catch EventStoreError.unknownEventType(let type, let location) {
            #expect(type == "Withdrawn")
            #expect(location == "version 2 of stream \"account-3\" (position 2)")
        }
    }

    @Test("event types are byte strings to the registry, as to the store")
    func registryConflatesSpellings() async throws {
        var registry = EventTypeRegistry()
        try registry.register(ReviewCafe.self)  // "Caf\u{E9}" (NFC)
        let store = KeyValueEventStore.inMemory()
        let stream = try StreamName("menu-1")
        // Another producer's type "Cafe\u{301}" (NFD): a different type to the store, with its own type index.
        _ = try await store.append(
            [EventData(type: "Cafe\u{301}", data: Data(#"{"n":7}"#.utf8))], to: stream, expectedVersion: .noStream)
        #expect(try await store.readEvents(ofType: ReviewCafe.eventType, from: 1, limit: 10).isEmpty)
        let recorded = try await store.read(stream)[0]
        #expect(!registry.isRegistered(recorded.type))
        #expect(throws: EventStoreError.self) { _ = try registry.decode(recorded) }
        // And a Swift type for the NFD type can be registered next to the NFC one; each decodes its own events.
        #expect(throws: Never.self) { try registry.register(ReviewCafeDecomposed.self) }
        _ = try await store.append(
            [EventData(type: "Cafe\u{301}", data: Data(#"{"s":"x"}"#.utf8)),
             try registry.encode(ReviewCafe(n: 3))],
            to: stream, expectedVersion: .exact(1))
        let events = try await store.read(stream)
        #expect((try registry.decode(events[1]) as? ReviewCafeDecomposed)?.s == "x")
        #expect((try registry.decode(events[2]) as? ReviewCafe)?.n == 3)
    }

    @Test("a soft delete of a stream whose events retention all hides succeeds, and its versions continue")
    func softDeleteOfStreamWithNoVisibleEvents() async throws {
        let store = KeyValueEventStore.inMemory()
        let stream = try StreamName("truncated-1")
        _ = try await store.append(makeEvents(2), to: stream, expectedVersion: .noStream)
        try await store.setMetadata(StreamMetadata(truncateBefore: 10), for: stream)
        #expect(try await store.read(stream).isEmpty)
        #expect(try await store.version(of: stream) == 2)
        // The stream exists (at version 2), as in KurrentDB: deleting it succeeds.
        _ = try await store.delete(stream, expectedVersion: .exact(2), mode: .soft)
        #expect(try await store.version(of: stream) == 0)
        // Deleted now: a second soft delete finds no stream.
        await #expect(throws: EventStoreError.self) {
            _ = try await store.delete(stream, expectedVersion: .any, mode: .soft)
        }
        // A later append recreates it, continuing the versions.
        let result = try await store.append(makeEvents(1), to: stream, expectedVersion: .noStream)
        #expect(result.version == 3)
        // A name never written to has no stream to soft-delete.
        await #expect(throws: EventStoreError.self) {
            _ = try await store.delete(try StreamName("never-1"), expectedVersion: .any, mode: .soft)
        }
    }

    @Test("streamLocked reports the lease expiry the session reports: both by the store's clock")
    func leaseExpiryClock() async throws {
        let store = KeyValueEventStore(
            backend: InMemoryKeyValueStore(), clock: { Date(timeIntervalSince1970: 1_000_000_000) })
        let stream = try StreamName("held-1")
        let session = try await store.openSession(on: stream, sessionTimeout: .seconds(60), openTimeout: .zero)
        #expect(await session.leaseExpiresAt() == Date(timeIntervalSince1970: 1_000_000_060))
        _ = try await session.append(makeEvents(1), expectedVersion: .noStream)
        let sessionSays = await session.leaseExpiresAt()
        #expect(sessionSays == Date(timeIntervalSince1970: 1_000_000_060))
        do {
            _ = try await store.append(makeEvents(1), to: stream, expectedVersion: .any)
            Issue.record("the append should be refused")
        } catch EventStoreError.streamLocked(_, _, let storeSays) {
            #expect(storeSays == sessionSays, "store: \(storeSays), session: \(sessionSays)")
        }
        try await session.renew()
        #expect(await session.leaseExpiresAt() == Date(timeIntervalSince1970: 1_000_000_060))
        try await session.close()
    }
}

@Suite("Review: session leases by the store's clock")
struct SessionClockReviewTests {
    @Test("an exclusive projection on a store with its own clock keeps its lease")
    func exclusiveProjectionWithStoreClock() async throws {
        // A store clock years behind the system clock: a lease dated by it must not count as expired by Date().
        let store = KeyValueEventStore(
            backend: InMemoryKeyValueStore(), clock: { Date(timeIntervalSince1970: 1_000_000_000) })
        let stream = try StreamName("clocked-1")
        _ = try await store.append(makeEvents(3), to: stream, expectedVersion: .noStream)
        let projection = CheckpointedProjection(
            store: store, consumer: "clocked", checkpointEvery: 1, exclusivity: .exclusive(lease: .seconds(60)))
        let handled = Locked<[UInt64]>([])
        let last = try await projection.run(until: .whenCaughtUp) { event in handled.withLock { $0.append(event.position) } }
        #expect(last == 3)
        #expect(handled.withLock { $0 } == [1, 2, 3])
        let session = try await store.openSession(
            on: try StreamName("clocked-2"), sessionTimeout: .seconds(60), openTimeout: .zero)
        #expect(await session.hasExpired() == false)
        try await session.close()
    }
}
