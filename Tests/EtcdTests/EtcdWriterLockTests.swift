// Found in review: EtcdWriterLock promises that "a waiter cancelled before its turn is removed and throws
// CancellationError". A task already cancelled when it called `withLock` was not: withTaskCancellationHandler
// ran `onCancel` at once, before the operation had queued the waiter, so the waiter was queued afterwards, waited
// for its turn, and then ran its body as if it had never been cancelled.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("etcd: the writer lock and cancellation")
struct EtcdWriterLockTests {
    @Test("a task cancelled before it asks for the writer lock gets CancellationError, not a turn")
    func cancelledBeforeAcquire() async throws {
        let lock = EtcdWriterLock()
        let (held, holding) = AsyncStream.makeStream(of: Void.self)
        let (release, releasing) = AsyncStream.makeStream(of: Void.self)
        let holder = Task {
            try await lock.withLock {
                holding.yield()
                var iterator = release.makeAsyncIterator()
                _ = await iterator.next()
            }
        }
        var heldIterator = held.makeAsyncIterator()
        _ = await heldIterator.next()

        let bodyRan = Locked(false)
        let waiter = Task {
            withUnsafeCurrentTask { $0?.cancel() }  // cancelled before it asks for the lock
            try await lock.withLock { bodyRan.withLock { $0 = true } }
        }
        // Let the waiter queue up (or fail), then free the lock.
        for _ in 0..<1_000 { await Task.yield() }
        releasing.yield()
        try await holder.value

        let result = await waiter.result
        #expect(throws: CancellationError.self) { try result.get() }
        #expect(!bodyRan.withLock { $0 }, "a cancelled task ran under the writer lock")
    }
}
