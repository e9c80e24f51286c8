// Closing the store ends live subscriptions and projections cleanly (SUBSCRIPTIONS.md: "Breaking out of the loop, or
// closing the store, also ends it"), also when a commit rang the doorbell just before the close, so that the
// subscription's next step reads the closed store.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Subscriptions: closing the store", .timeLimit(.minutes(5)))
struct SubscriptionCloseTests {
    @Test("closing the store ends a live subscription without an error, also when a commit rang just before",
        arguments: Backends.all)
    func closingWithAPendingRingEndsCleanly(backend: Backend) async throws {
        try await backend.withStore { store in
            var iterator = store.subscribeToAll().makeAsyncIterator()
            #expect(try await iterator.next() == .caughtUp(through: 0))
            // A first live event, which only the doorbell can bring: the watch behind it is running.
            let name = try stream("closing-1")
            _ = try await store.append(samples(1), to: name, expectedVersion: .noStream)
            #expect(try await iterator.next()?.event?.position == 1)
            #expect(try await iterator.next() == .caughtUp(through: 1))
            // This commit rings the doorbell again (the ring waits in its one-ring buffer); then the store closes.
            _ = try await store.append(samples(1), to: name, expectedVersion: .exact(1))
            try await store.close()
            do {
                while try await iterator.next() != nil {}
            } catch {
                Issue.record("a live subscription ended with an error when the store closed: \(error)")
            }
        }
    }

    @Test("a subscription opened on a closed store throws storeClosed", arguments: Backends.all)
    func subscribingToAClosedStoreThrows(backend: Backend) async throws {
        try await backend.withStore { store in
            try await store.close()
            var iterator = store.subscribeToAll().makeAsyncIterator()
            do {
                let message = try await iterator.next()
                Issue.record("a subscription on a closed store delivered \(String(describing: message))")
            } catch EventStoreError.storeClosed {
            } catch {
                Issue.record("a subscription on a closed store threw \(error), not storeClosed")
            }
        }
    }

    /// ``CheckpointedProjection/Stop/never`` runs "until the task is cancelled or the store closes", and `run`
    /// returns the last checkpoint. A store that closes while the handler is on a live event must end the run with
    /// the checkpoint it saved, although neither the subscription's next read nor a save can reach the store now;
    /// an exclusive run too, whose lease's release cannot reach it either.
    @Test("a live projection whose store closes under it returns its last checkpoint, shared or exclusive",
        arguments: Backends.all, [false, true])
    func projectionEndsWhenTheStoreCloses(backend: Backend, exclusive: Bool) async throws {
        try await backend.withStore { store in
            let name = try stream("closing-2")
            _ = try await store.append(samples(1), to: name, expectedVersion: .noStream)
            let consumer = exclusive ? "closing-x" : "closing"
            let projection = CheckpointedProjection(
                store: store, consumer: consumer, checkpointEvery: 100,
                exclusivity: exclusive ? .exclusive(lease: .seconds(30)) : .shared)
            let (handling, handlingSignal) = AsyncStream<UInt64>.makeStream()
            let (gate, opener) = AsyncStream<Void>.makeStream()
            let run = Task {
                defer { handlingSignal.finish() }
                return try await projection.run { event in
                    handlingSignal.yield(event.position)
                    if event.position > 1 { for await _ in gate { break } }
                }
            }
            var handled = handling.makeAsyncIterator()
            #expect(await handled.next() == 1)
            // Caught up and checkpointed at 1 (the projection saves when it catches up). The suite's time limit
            // ends this wait if the run never saves.
            while try await store.checkpoint(of: consumer) != 1 {
                try Task.checkCancellation()
                await Task.yield()
            }
            _ = try await store.append(samples(1), to: name, expectedVersion: .exact(1))
            // The handler is on the live event (an exclusive run's lease session took positions of its own).
            let live = try #require(await handled.next())
            #expect(exclusive ? live > 1 : live == 2)
            try await store.close()
            opener.yield()
            opener.finish()
            do {
                #expect(try await run.value == 1)
            } catch {
                Issue.record("a live projection ended with an error when its store closed: \(error)")
            }
        }
    }

    /// `run` documents: "If `handler` throws, the run stops with that error". A handler that projects into a second
    /// store (a read model) that was closed throws that store's `storeClosed`; the projection's own store is open and
    /// well. The run must stop with the handler's error, not return as if its own store had closed.
    @Test("a handler's own storeClosed (from another store) stops the run with that error", arguments: [Backend.inMemory])
    func handlersStoreClosedIsNotSwallowed(backend: Backend) async throws {
        try await backend.withStore { store in
            try await backend.withStore { readModel in
                try await readModel.close()
                let name = try stream("projected")
                _ = try await store.append(samples(1), to: name, expectedVersion: .noStream)
                let projection = CheckpointedProjection(store: store, consumer: "projected", checkpointEvery: 1)
                do {
                    let saved = try await projection.run(until: .whenCaughtUp) { event in
                        // Project into the closed read-model store: throws storeClosed.
                        _ = try await readModel.append(
                            samples(1), to: try stream("model-\(event.position)"), expectedVersion: .any)
                    }
                    Issue.record("the run returned \(saved) although its handler threw; its store is still open")
                } catch EventStoreError.storeClosed {
                    // The handler's error, as documented.
                }
                // The projection's own store is open.
                #expect(try await store.lastPosition() == 1)
            }
        }
    }
}
