// Exclusive projections: runs of one consumer that must not overlap, across tasks, processes and nodes. Each run
// holds a lease on the consumer (a session on `$consumer-<name>`) and saves its checkpoints through it, in
// transactions that check the lease.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Consumers: exclusive projections and fenced checkpoints", .timeLimit(.minutes(10)))
struct ExclusiveProjectionConformanceTests {
    @Test("exclusive runs take turns: a second run waits, then resumes after the first one's checkpoint",
        arguments: Backends.all)
    func runsTakeTurns(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("turns-1")
            _ = try await store.append(samples(10), to: name, expectedVersion: .noStream)
            let projection = CheckpointedProjection(
                store: store, consumer: "turns", checkpointEvery: 1_000,
                exclusivity: .exclusive(lease: backend.leaseTimeout(.seconds(60))))
            let (first, second) = (Locked<[UInt64]>([]), Locked<[UInt64]>([]))
            let (progress, signal) = AsyncStream<UInt64>.makeStream()
            var handledByFirst = progress.makeAsyncIterator()
            let runner = Task {
                defer { signal.finish() }  // so that no wait below outlives the run
                return try await projection.run { event in
                    first.withLock { $0.append(event.position) }
                    signal.yield(event.position)
                }
            }
            while let position = await handledByFirst.next(), position < 10 {}
            // The first run holds the lease (it has handled events): the second waits, and handles nothing while
            // the first goes on with new events.
            let waiting = Task {
                try await projection.run(until: .whenCaughtUp) { event in second.withLock { $0.append(event.position) } }
            }
            _ = try await store.append(samples(5), to: name, expectedVersion: .exact(10))
            while let position = await handledByFirst.next(), position < 15 {}
            runner.cancel()
            #expect(try await runner.value == 15)
            #expect(try await waiting.value == 15)
            #expect(first.withLock { $0 } == Array(1...15))
            #expect(second.withLock { $0 }.isEmpty)
            // Both released the lease: the next run takes it at once and handles only what came later.
            _ = try await store.append(samples(3), to: name, expectedVersion: .exact(15))
            #expect(try await projection.run(until: .whenCaughtUp) { event in second.withLock { $0.append(event.position) } } == 18)
        }
    }

    @Test("a checkpoint saved through a session is refused once another session holds the stream, and after close",
        arguments: Backends.all)
    func fencedCheckpoint(backend: Backend) async throws {
        try await backend.withStore { store in
            _ = try await store.append(samples(4), to: try stream("fence-1"), expectedVersion: .noStream)
            let lock = try StreamName.system("$consumer-fence")
            let stale = try await store.openSession(
                on: lock, sessionTimeout: backend.leaseTimeout(.milliseconds(300)), openTimeout: .zero)
            // The next holder waits for the stale session's lease to run out.
            let current = try await store.openSession(
                on: lock, sessionTimeout: backend.leaseTimeout(.seconds(60)), openTimeout: .seconds(120))
            try await current.saveCheckpoint(1, for: "fence")
            do {
                try await stale.saveCheckpoint(2, for: "fence")
                Issue.record("a session whose lease was taken over saved a checkpoint")
            } catch EventStoreError.sessionExpired(let expired, let id) {
                #expect(expired == lock)
                #expect(id == stale.id)
            }
            #expect(try await store.checkpoint(of: "fence") == 1)
            try await current.saveCheckpoint(3, for: "fence")
            #expect(try await store.checkpoint(of: "fence") == 3)
            await #expect(throws: EventStoreError.self) { try await current.saveCheckpoint(5, for: "fence") }
            await #expect(throws: EventStoreError.self) { try await current.saveCheckpoint(1, for: "") }
            try await current.close()
            do {
                try await current.saveCheckpoint(4, for: "fence")
                Issue.record("a closed session saved a checkpoint")
            } catch EventStoreError.sessionClosed {}
            #expect(try await store.checkpoint(of: "fence") == 3)
            try await stale.close()
        }
    }

    @Test("a run that cannot renew its lease stops before the next event, and the run that took over handles it",
        arguments: Backends.all)
    func lostLeaseStopsTheRun(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("lost-1")
            _ = try await store.append(samples(2), to: name, expectedVersion: .noStream)
            let refusing = ForwardingEventStore(base: store, sessions: { RenewalFailingSession(base: $0) })
            let stalled = CheckpointedProjection(
                store: refusing, consumer: "lost", checkpointEvery: 1,
                exclusivity: .exclusive(lease: backend.leaseTimeout(.seconds(2))))
            let healthy = CheckpointedProjection(
                store: store, consumer: "lost", checkpointEvery: 1,
                exclusivity: .exclusive(lease: backend.leaseTimeout(.seconds(60))))
            let (stalledHandled, healthyHandled) = (Locked<[UInt64]>([]), Locked<[UInt64]>([]))
            let (progress, signal) = AsyncStream<UInt64>.makeStream()
            var handled = progress.makeAsyncIterator()
            let runner = Task {
                defer { signal.finish() }  // so that no wait below outlives the run
                return try await stalled.run { event in
                    stalledHandled.withLock { $0.append(event.position) }
                    signal.yield(event.position)
                    // Ends a run that went on without its lease, rather than leave the test waiting for it.
                    if event.position > 2 { throw HandledWithoutLease() }
                }
            }
            // Usually it handles both events first; on a loaded machine its lease may run out before that.
            while let position = await handled.next(), position < 2 {}
            // Its renewals fail, so its lease runs out: a healthy run gets it, catches up and releases it.
            #expect(try await healthy.run(until: .whenCaughtUp) { event in
                healthyHandled.withLock { $0.append(event.position) }
            } == 2)
            _ = try await store.append(samples(1), to: name, expectedVersion: .exact(2))
            do {
                _ = try await runner.value
                Issue.record("a run that lost its lease went on")
            } catch EventStoreError.sessionExpired(let lock, _) {
                #expect(lock == (try StreamName.system("$consumer-lost")))
            }
            #expect(!stalledHandled.withLock { $0 }.contains(3), "the run without its lease handled a new event")
            #expect(try await healthy.run(until: .whenCaughtUp) { event in
                healthyHandled.withLock { $0.append(event.position) }
            } == 3)
            // Every event was handled, the new one by the run that holds the lease.
            #expect(Set(stalledHandled.withLock { $0 } + healthyHandled.withLock { $0 }) == [1, 2, 3])
            #expect(healthyHandled.withLock { $0 }.last == 3)
        }
    }

    @Test("an idle exclusive run that loses its lease stops without waiting for another event",
        .timeLimit(.minutes(2)), arguments: Backends.all)
    func idleRunStopsWhenItLosesItsLease(backend: Backend) async throws {
        try await backend.withStore { store in
            _ = try await store.append(samples(2), to: try stream("idle-1"), expectedVersion: .noStream)
            let refusing = ForwardingEventStore(base: store, sessions: { RenewalFailingSession(base: $0) })
            let stalled = CheckpointedProjection(
                store: refusing, consumer: "idle", checkpointEvery: 1,
                exclusivity: .exclusive(lease: backend.leaseTimeout(.seconds(2))))
            // No event is appended after these two: only the lost lease can end the live run. Before the doorbell
            // ended with the lease, it waited for the next event forever (the time limit turns that into a failure).
            do {
                _ = try await stalled.run { _ in }
                Issue.record("a live run that lost its lease returned")
            } catch EventStoreError.sessionExpired(let lock, _) {
                #expect(lock == (try StreamName.system("$consumer-idle")))
            }
            // The lease is free again: the next run takes it and catches up.
            let healthy = CheckpointedProjection(
                store: store, consumer: "idle", exclusivity: .exclusive(lease: backend.leaseTimeout(.seconds(60))))
            #expect(try await healthy.run(until: .whenCaughtUp) { _ in } == 2)
        }
    }

    @Test("an exclusive run cancelled while it waits for the lease returns the stored checkpoint, as run's doc says")
    func cancelledWhileWaitingForTheLease() async throws {
        try await Backend.inMemory.withStore { store in
            _ = try await store.append(samples(2), to: try stream("wait-1"), expectedVersion: .noStream)
            try await store.saveCheckpoint(1, for: "wait")
            let holder = try await store.openSession(
                on: try StreamName.system("$consumer-wait"), sessionTimeout: .seconds(60), openTimeout: .zero)
            let projection = CheckpointedProjection(
                store: store, consumer: "wait", exclusivity: .exclusive(lease: .seconds(60)))
            let waiting = Task { try await projection.run { _ in } }
            try await Task.sleep(for: .milliseconds(300))
            waiting.cancel()
            switch await waiting.result {
            case .success(let saved): #expect(saved == 1)
            case .failure(let error): Issue.record("a cancelled run threw instead of returning normally: \(error)")
            }
            try await holder.close()
        }
    }

    @Test("an exclusive run whose handler throws releases the lease: the next run takes it at once")
    func handlerErrorReleasesTheLease() async throws {
        try await Backend.inMemory.withStore { store in
            _ = try await store.append(samples(3), to: try stream("throw-1"), expectedVersion: .noStream)
            let projection = CheckpointedProjection(
                store: store, consumer: "throws", checkpointEvery: 1, exclusivity: .exclusive(lease: .seconds(60)))
            struct Boom: Error {}
            await #expect(throws: Boom.self) {
                try await projection.run(until: .whenCaughtUp) { event in if event.position == 2 { throw Boom() } }
            }
            let session = try await store.openSession(
                on: try StreamName.system("$consumer-throws"), sessionTimeout: .seconds(5), openTimeout: .zero)
            try await session.close()
            let saved = try await projection.run(until: .whenCaughtUp) { _ in }
            #expect(saved == 3)
        }
    }

    @Test("an exclusive run waiting for the lease ends with storeClosed when the store closes; a live one returns")
    func storeClosesUnderExclusiveRuns() async throws {
        // Clocks that stand still: the live run's 60 s lease must not run out while a loaded run (ThreadSanitizer,
        // every test at once) starves its renewals, or the wait below for its checkpoint would never end.
        let now = Date()
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore(clock: { now }), clock: { now })
        _ = try await store.append(samples(2), to: try stream("close-1"), expectedVersion: .noStream)
        let projection = CheckpointedProjection(
            store: store, consumer: "close", exclusivity: .exclusive(lease: .seconds(60)))
        let (progress, signal) = AsyncStream<UInt64>.makeStream()
        let live = Task {
            defer { signal.finish() }
            return try await projection.run { event in signal.yield(event.position) }
        }
        var handled = progress.makeAsyncIterator()
        while let position = await handled.next(), position < 2 {}
        // Caught up and checkpointed, so that closing the store leaves the live run nothing to save.
        while try await store.checkpoint(of: "close") != 2 { try await Task.sleep(for: .milliseconds(10)) }
        let waiting = Task { try await projection.run { _ in } }
        try await Task.sleep(for: .milliseconds(200))
        try await store.close()
        await #expect(throws: EventStoreError.self) { try await waiting.value }
        #expect(try await live.value == 2)
    }

    @Test("an exclusive consumer's name must leave room for the lease stream's prefix")
    func nameTooLongForTheLease() async throws {
        try await Backend.inMemory.withStore { store in
            let projection = CheckpointedProjection(
                store: store, consumer: String(repeating: "n", count: 246), exclusivity: .exclusive(lease: .seconds(5)))
            await #expect(throws: EventStoreError.self) { try await projection.run(until: .whenCaughtUp) { _ in } }
            let longest = CheckpointedProjection(
                store: store, consumer: String(repeating: "n", count: 245), exclusivity: .exclusive(lease: .seconds(5)))
            let saved = try await longest.run(until: .whenCaughtUp) { _ in }
            #expect(saved == 0)
        }
    }
}

private struct HandledWithoutLease: Error {}

/// A session whose renewals fail as a backend outage would, so its lease runs out unless something else extends it.
private struct RenewalFailingSession: StreamSession {
    let base: any StreamSession

    var id: UUID { base.id }
    var stream: StreamName { base.stream }
    func append(_ events: [EventData], expectedVersion: ExpectedVersion) async throws -> AppendResult {
        try await base.append(events, expectedVersion: expectedVersion)
    }
    func append(_ appends: [StreamAppend]) async throws -> [AppendResult] { try await base.append(appends) }
    func renew() async throws { throw EventStoreError.backend("renewals fail in this test") }
    func saveCheckpoint(_ position: UInt64, for consumer: String) async throws {
        try await base.saveCheckpoint(position, for: consumer)
    }
    func leaseExpiresAt() async -> Date { await base.leaseExpiresAt() }
    func hasExpired() async -> Bool { await base.hasExpired() }
    func close() async throws { try await base.close() }
}
