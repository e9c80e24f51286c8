// WriterLock: the single-writer lock, an async mutex whose waiters queue in FIFO order.
//
// Invariants:
// - At most one holder at a time; `unlock` hands the lock directly to the oldest waiter, so writers are served in
//   arrival order and none starves.
// - Waiting suspends the task (no thread is blocked), so a long `update` body never ties up the cooperative pool.

import EventStore
import Foundation

/// An async, FIFO mutual-exclusion lock.
final class WriterLock: Sendable {
    private struct State {
        var locked = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Locked(State())

    /// Suspends until the lock is held by the caller. A free lock is taken without suspending: a continuation
    /// resumed at once still costs the task a trip through the executor on every uncontended commit.
    func lock() async {
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
    func unlock() {
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
    func withLock<T>(_ body: () async throws -> T) async throws -> T {
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

/// Runs blocking work (fdatasync, page writes) on its own thread, off the Swift cooperative pool.
enum Offload {
    /// Runs `body` on a new thread and returns its result.
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.start()
        }
    }
}
