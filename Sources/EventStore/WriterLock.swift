// WriterLock: an async mutex whose waiters queue in FIFO order, for single-writer sections (the page file's writer,
// the etcd store's updates within one process, a saga log's parallel group).
//
// Invariants:
// - At most one holder at a time; `unlock` hands the lock directly to the oldest waiter, so writers are served in
//   arrival order and none starves.
// - Waiting suspends the task (no thread is blocked), so a long `update` body never ties up the cooperative pool.
// - A waiter that honours cancellation (`lockUnlessCancelled`) leaves the queue when its task is cancelled and throws
//   `CancellationError` without ever holding the lock. Removal and hand-over happen under `state`'s lock, so a
//   waiter is either handed the lock or removed, never both: one cancelled after it was handed the lock holds it.

import Foundation

/// An async, FIFO mutual-exclusion lock.
package final class WriterLock: Sendable {
    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct State {
        var locked = false
        var waiters: [Waiter] = []
        var nextID: UInt64 = 0
        /// Cancellable waiters given an id that have not queued yet.
        var arriving: Set<UInt64> = []
        /// Those of them whose cancellation ran before they queued (the handler may run first).
        var cancelledBeforeQueueing: Set<UInt64> = []
    }

    private let state = Locked(State())

    /// Creates an unlocked lock.
    package init() {}

    /// Suspends until the lock is held by the caller, whether or not its task is cancelled (for sections that must
    /// run, such as closing).
    package func lock() async {
        if tryLock() { return }
        // A waiter that cannot be cancelled is never resumed with an error.
        try? await wait(id: nil)
    }

    /// Suspends until the lock is held by the caller; throws `CancellationError`, without taking the lock, if the
    /// task is cancelled before or while it waits.
    package func lockUnlessCancelled() async throws {
        try Task.checkCancellation()
        if tryLock() { return }
        let id = state.withLock { state in
            state.nextID += 1
            state.arriving.insert(state.nextID)
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await wait(id: id)
        } onCancel: {
            cancel(id)
        }
    }

    /// Takes a free lock without suspending: a continuation resumed at once still costs the task a trip through the
    /// executor on every uncontended commit.
    private func tryLock() -> Bool {
        state.withLock { state in
            if state.locked { return false }
            state.locked = true
            return true
        }
    }

    /// Queues the caller (as `id`, if cancellable) until the lock is handed to it.
    private func wait(id: UInt64?) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            enum Start { case acquired, cancelled, queued }
            let start = state.withLock { state -> Start in
                if let id {
                    state.arriving.remove(id)
                    if state.cancelledBeforeQueueing.remove(id) != nil { return .cancelled }
                }
                if !state.locked {
                    state.locked = true
                    return .acquired
                }
                state.waiters.append(Waiter(id: id ?? 0, continuation: continuation))
                return .queued
            }
            switch start {
            case .acquired: continuation.resume()
            case .cancelled: continuation.resume(throwing: CancellationError())
            case .queued: break
            }
        }
    }

    /// Removes the cancelled waiter `id` from the queue and resumes it with `CancellationError`; if it has not
    /// queued yet, it will not queue. A waiter already handed the lock keeps it.
    private func cancel(_ id: UInt64) {
        let removed = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            if let index = state.waiters.firstIndex(where: { $0.id == id }) {
                return state.waiters.remove(at: index).continuation
            }
            if state.arriving.contains(id) { state.cancelledBeforeQueueing.insert(id) }
            return nil
        }
        removed?.resume(throwing: CancellationError())
    }

    /// How many tasks are queued for the lock (for tests).
    package var queuedCount: Int { state.withLock { $0.waiters.count } }

    /// Releases the lock, handing it to the next waiter if any.
    package func unlock() {
        let next = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard !state.waiters.isEmpty else {
                state.locked = false
                return nil
            }
            return state.waiters.removeFirst().continuation
        }
        next?.resume()
    }

    /// Runs `body` holding the lock, taken whether or not the task is cancelled.
    package func withLock<T>(_ body: () async throws -> T) async throws -> T {
        await lock()
        return try await holding(body)
    }

    /// Runs `body` holding the lock; throws `CancellationError`, without running `body`, if the task is cancelled
    /// before the lock is taken.
    package func withLockUnlessCancelled<T>(_ body: () async throws -> T) async throws -> T {
        try await lockUnlessCancelled()
        return try await holding(body)
    }

    private func holding<T>(_ body: () async throws -> T) async throws -> T {
        do {
            let result = try await body()
            unlock()
            return result
        } catch {
            unlock()
            throw error
        }
    }
}
