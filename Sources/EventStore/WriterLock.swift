// WriterLock: an async mutex whose waiters queue in FIFO order, for single-writer sections (the page file's writer,
// a saga log's parallel group).
//
// Invariants:
// - At most one holder at a time; `unlock` hands the lock directly to the oldest waiter, so writers are served in
//   arrival order and none starves.
// - Waiting suspends the task (no thread is blocked), so a long `update` body never ties up the cooperative pool.

import Foundation

/// An async, FIFO mutual-exclusion lock.
package final class WriterLock: Sendable {
    private struct State {
        var locked = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Locked(State())

    /// Creates an unlocked lock.
    package init() {}

    /// Suspends until the lock is held by the caller. A free lock is taken without suspending: a continuation
    /// resumed at once still costs the task a trip through the executor on every uncontended commit.
    package func lock() async {
        let acquired = state.withLock { state in
            if state.locked { return false }
            state.locked = true
            return true
        }
        if acquired { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let acquired = state.withLock { state in
                if !state.locked {
                    state.locked = true
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if acquired { continuation.resume() }
        }
    }

    /// Releases the lock, handing it to the next waiter if any.
    package func unlock() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard !state.waiters.isEmpty else {
                state.locked = false
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }

    /// Runs `body` holding the lock.
    package func withLock<T>(_ body: () async throws -> T) async throws -> T {
        await lock()
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
