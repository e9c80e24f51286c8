// Defects found by the fifteenth session's review of consumers, each of which failed before its fix:
// - a projection whose handler honoured cancellation (threw from a cancelled Task.sleep) lost the events it had
//   handled since its last checkpoint, and the run threw CancellationError;
// - events of a stream whose name starts with "-" were indexed under the empty category, which readCategory refused.
// (A third finding, a checkpoint past the log's end, is in CheckpointConformanceTests.)

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Consumers: cancellation-aware handlers and the empty category")
struct ConsumerReviewTests {
    @Test("a cancelled projection whose handler throws because of the cancellation checkpoints what it handled",
        arguments: Backends.all)
    func cancellationAwareHandler(backend: Backend) async throws {
        try await backend.withStore { store in
            _ = try await store.append(samples(4), to: try stream("aware-1"), expectedVersion: .noStream)
            let (started, signal) = AsyncStream<UInt64>.makeStream()
            let projection = CheckpointedProjection(store: store, consumer: "aware", checkpointEvery: 1_000)
            let runner = Task {
                try await projection.run { event in
                    signal.yield(event.position)
                    if event.position == 4 { try await Task.sleep(for: .seconds(600)) }  // cancellable work
                }
            }
            for await position in started where position == 4 { break }
            runner.cancel()
            let outcome = await runner.result
            #expect(throws: Never.self) { try outcome.get() }
            #expect(try outcome.get() == 3)
            // Events 1 to 3 were handled; event 4 threw, so it is delivered again on the next run.
            #expect(try await store.checkpoint(of: "aware") == 3)
            let handled = Locked<[UInt64]>([])
            try await projection.run(until: .whenCaughtUp) { event in handled.withLock { $0.append(event.position) } }
            #expect(handled.withLock { $0 } == [4])
        }
    }

    @Test("a handler's own error still ends the run with that error when the run is not cancelled")
    func handlerErrorWithoutCancellation() async throws {
        struct Refused: Error {}
        try await Backend.inMemory.withStore { store in
            _ = try await store.append(samples(3), to: try stream("refuse-1"), expectedVersion: .noStream)
            let projection = CheckpointedProjection(store: store, consumer: "refuse", checkpointEvery: 1)
            await #expect(throws: Refused.self) {
                try await projection.run { event in if event.position == 2 { throw Refused() } }
            }
            #expect(try await store.checkpoint(of: "refuse") == 1)
        }
    }

    @Test("events of a stream whose name starts with - are read by the empty category", arguments: Backends.all)
    func emptyCategory(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try StreamName("-42")
            _ = try await store.append(samples(2), to: name, expectedVersion: .noStream)
            _ = try await store.append(samples(1), to: try stream("x-42"), expectedVersion: .noStream)
            #expect(name.category == "")
            let events = try await store.readCategory(name.category, from: 1, limit: 10)
            #expect(events.map(\.stream) == [name, name])
            #expect(try await store.readCategory("x", from: 1, limit: 10).count == 1)
            await #expect(throws: EventStoreError.self) {
                try await store.readCategory(String(repeating: "c", count: 256), from: 1, limit: 10)
            }
        }
    }
}
