// A cancelled append that waits for the page file's writer (behind a compaction or a long transaction) throws
// CancellationError and writes nothing, as EventStoring.append and KeyValueStore.commit document: it was not handed
// over yet. Before, the wait for the writer lock could not be cancelled, and the append then wrote.

import EventStore
import EventStoreKV
import Foundation
import KeyValueTestSupport
import Testing

/// Signals each time an `update` is entered, before it is handed to the wrapped store.
private final class UpdateSignallingStore: ForwardingKeyValueStore, @unchecked Sendable {
    // @unchecked: `entered` is an AsyncStream continuation, itself thread-safe; nothing else is stored.
    let entered: AsyncStream<Void>.Continuation

    init(_ inner: any KeyValueStore, entered: AsyncStream<Void>.Continuation) {
        self.entered = entered
        super.init(inner)
    }

    override func update<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value> {
        entered.yield()
        return try await inner.update(body)
    }
}

@Suite("Cancellation while waiting for the writer", .timeLimit(.minutes(5)))
struct WriterCancellationTests {
    @Test("an append cancelled while it waits for the page file's writer throws CancellationError and writes nothing")
    func appendCancelledWhileWaitingForTheWriter() async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("eventstore-cancel-writer-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pageFile = try await PageFileKeyValueStore.open(directory: directory)
        let (entries, entered) = AsyncStream<Void>.makeStream()
        let store = KeyValueEventStore(backend: UpdateSignallingStore(pageFile, entered: entered))
        let stream = try StreamName("orders-1")

        // Another writer holds the writer lock (as a compaction or a long transaction does) until released.
        let (releases, release) = AsyncStream<Void>.makeStream()
        let (holdings, holding) = AsyncStream<Void>.makeStream()
        let holder = Task {
            _ = try await pageFile.update { _ -> (transaction: KeyValueTransaction, value: Bool) in
                holding.yield()
                for await _ in releases { break }
                return (KeyValueTransaction(), true)
            }
        }
        for await _ in holdings { break }

        var iterator = entries.makeAsyncIterator()
        let append = Task {
            try await store.append([EventData(type: "Placed", data: Data())], to: stream, expectedVersion: .noStream)
        }
        _ = await iterator.next()  // the append reached `update`; it queues for the writer lock, or is about to
        append.cancel()
        release.yield()
        release.finish()
        _ = try await holder.value
        let outcome = await append.result
        let version = try await store.version(of: stream)
        entered.finish()
        holding.finish()
        try await store.close()

        switch outcome {
        case .failure(let error):
            #expect(error is CancellationError, "got \(error)")
            #expect(version == 0)
        case .success(let result):
            Issue.record("the append was cancelled before it was handed over, yet it wrote \(result); version \(version)")
        }
    }

    @Test("a cancelled waiter leaves the writer lock's queue; the others keep their order")
    func cancelledWaiterLeavesTheQueue() async throws {
        let lock = WriterLock()
        await lock.lock()
        let order = Locked<[Int]>([])
        var waiters: [Task<Void, any Error>] = []
        for number in 1...3 {
            waiters.append(Task { try await lock.withLockUnlessCancelled { order.withLock { $0.append(number) } } })
            // Queued in this order (the suite's time limit ends the wait if one never queues).
            while lock.queuedCount < number {
                try Task.checkCancellation()
                await Task.yield()
            }
        }
        let (first, second, third) = (waiters[0], waiters[1], waiters[2])
        second.cancel()
        // The cancelled waiter ends while the lock is still held: it left the queue.
        await #expect(throws: CancellationError.self) { try await second.value }
        lock.unlock()
        try await first.value
        try await third.value
        #expect(order.withLock { $0 } == [1, 3])
        // The lock is free again.
        try await lock.withLockUnlessCancelled {}
    }

    @Test("a task cancelled before it asks for the writer lock gets CancellationError, not a turn")
    func cancelledBeforeAsking() async throws {
        let lock = WriterLock()
        await lock.lock()
        let ran = Locked(false)
        let waiter = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            try await lock.withLockUnlessCancelled { ran.withLock { $0 = true } }
        }
        await #expect(throws: CancellationError.self) { try await waiter.value }
        lock.unlock()
        try await lock.withLockUnlessCancelled {}
        #expect(!ran.withLock { $0 })
    }
}
