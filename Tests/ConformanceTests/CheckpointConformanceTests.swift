// Durable consumer checkpoints on every backend: a named consumer resumes after its stored position, and a
// projection that crashes mid-way and restarts loses nothing (at-least-once: it may see a few events again).

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Checkpoints", .timeLimit(.minutes(5))) struct CheckpointConformanceTests {
    struct Crash: Error {}

    @Test(arguments: Backends.all)
    func checkpointsAreStoredPerConsumer(backend: Backend) async throws {
        try await backend.withStore { store in
            #expect(try await store.checkpoint(of: "billing") == nil)
            _ = try await store.append(samples(42), to: try stream("billing-1"), expectedVersion: .noStream)
            try await store.saveCheckpoint(41, for: "billing")
            try await store.saveCheckpoint(7, for: "shipping")
            try await store.saveCheckpoint(42, for: "billing")
            #expect(try await store.checkpoint(of: "billing") == 42)
            #expect(try await store.checkpoint(of: "shipping") == 7)
            await #expect(throws: EventStoreError.self) { try await store.saveCheckpoint(1, for: "") }
            await #expect(throws: EventStoreError.self) { try await store.saveCheckpoint(1, for: "bad\u{0}name") }
        }
    }

    @Test("a checkpoint past the log's last position is refused, and the stored one stays", arguments: Backends.all)
    func aCheckpointPastTheEndIsRefused(backend: Backend) async throws {
        try await backend.withStore { store in
            _ = try await store.append(samples(2), to: try stream("beyond-1"), expectedVersion: .noStream)
            try await store.saveCheckpoint(2, for: "beyond")
            // Resuming after 10 would skip the events later written at positions 3 to 10.
            await #expect {
                try await store.saveCheckpoint(10, for: "beyond")
            } throws: { error in
                guard case EventStoreError.invalidArgument(let message) = error else { return false }
                return message == "checkpoint 10 for consumer \"beyond\" is past the log's last position, 2"
            }
            #expect(try await store.checkpoint(of: "beyond") == 2)
            try await store.saveCheckpoint(0, for: "beyond")  // moving back (a rebuild) is allowed
            #expect(try await store.checkpoint(of: "beyond") == 0)
        }
    }

    @Test(arguments: Backends.all)
    func aRestartedProjectionResumesAfterItsCheckpointAndLosesNothing(backend: Backend) async throws {
        try await backend.withStore { store in
            for index in 0..<5 {
                _ = try await store.append(samples(20), to: try stream("order-\(index)"), expectedVersion: .noStream)
            }
            let first = CheckpointedProjection(store: store, consumer: "totals", checkpointEvery: 10)
            var handledFirst: [UInt64] = []
            await #expect(throws: Crash.self) {
                try await first.run(until: .whenCaughtUp) { event in
                    if event.position == 37 { throw Crash() }
                    handledFirst.append(event.position)
                }
            }
            #expect(handledFirst == Array(1...36))
            #expect(try await store.checkpoint(of: "totals") == 30)

            // "Restart": a new store object on the same backend, and more events committed meanwhile.
            let restarted = KeyValueEventStore(backend: store.backend)
            _ = try await restarted.append(samples(5), to: try stream("order-9"), expectedVersion: .noStream)
            var handledSecond: [UInt64] = []
            let saved = try await CheckpointedProjection(store: restarted, consumer: "totals", checkpointEvery: 10)
                .run(until: .whenCaughtUp) { handledSecond.append($0.position) }
            #expect(handledSecond == Array(31...105))
            #expect(saved == 105)
            #expect(try await restarted.checkpoint(of: "totals") == 105)
            // Every event was handled at least once; only those after the last checkpoint were handled twice.
            #expect(Set(handledFirst + handledSecond) == Set(1...105))
            #expect(Set(handledFirst).intersection(handledSecond) == Set(31...36))
        }
    }

    @Test(arguments: Backends.all)
    func aFilteredProjectionCheckpointsItsProgressWhenCaughtUp(backend: Backend) async throws {
        try await backend.withStore { store in
            _ = try await store.append(samples(8, type: "Noise"), to: try stream("noise-1"), expectedVersion: .noStream)
            _ = try await store.append(samples(2, type: "Signal"), to: try stream("signal-1"), expectedVersion: .noStream)
            let projection = CheckpointedProjection(
                store: store, consumer: "signals", checkpointEvery: 100, filter: .eventTypes("Signal"))
            var seen: [UInt64] = []
            try await projection.run(until: .whenCaughtUp) { seen.append($0.position) }
            #expect(seen == [9, 10])
            #expect(try await store.checkpoint(of: "signals") == 10)
            // Nothing new: a second run handles nothing.
            var again: [UInt64] = []
            try await projection.run(until: .whenCaughtUp) { again.append($0.position) }
            #expect(again.isEmpty)
        }
    }

    @Test(arguments: Backends.all)
    func aCancelledLiveProjectionCheckpointsWhatItHandled(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("live-1")
            _ = try await store.append(samples(3), to: name, expectedVersion: .noStream)
            let (handled, signal) = AsyncStream<UInt64>.makeStream()
            let projection = CheckpointedProjection(store: store, consumer: "live", checkpointEvery: 1_000)
            let runner = Task { try await projection.run { signal.yield($0.position) } }
            var positions: [UInt64] = []
            for await position in handled {
                positions.append(position)
                if position == 3 {
                    _ = try await store.append(samples(2), to: name, expectedVersion: .exact(3))
                }
                if position == 5 { break }
            }
            runner.cancel()
            let saved = try await runner.value
            #expect(positions == [1, 2, 3, 4, 5])
            #expect(saved == 5)
            #expect(try await store.checkpoint(of: "live") == 5)
        }
    }
}
