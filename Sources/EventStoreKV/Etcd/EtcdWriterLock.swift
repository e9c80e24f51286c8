// A FIFO async lock that serializes this process's read-modify-write updates against one etcd store.
//
// Why: every event-store append reads and writes the global head, so optimistic updates from many tasks of one
// process would all conflict and retry round after round against the cluster. Taking turns locally leaves only
// other processes as a source of conflicts, which the optimistic conditions still catch.
//
// Invariants: at most one holder; waiters are resumed in arrival order; a task cancelled before it asks, or before
// its turn, throws CancellationError and never runs its body (a waiter is removed), and a turn handed to a waiter is
// never lost. All state is in one `Locked`.

import EventStore

final class EtcdWriterLock: Sendable {
    private struct State {
        var held = false
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
        var nextID: UInt64 = 0
    }

    private let state = Locked(State())

    /// Runs `body` while holding the lock.
    func withLock<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        try await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async throws {
        try Task.checkCancellation()
        let id = state.withLock { state -> UInt64 in
            state.nextID += 1
            return state.nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                // Cancelled before queuing: `onCancel` already ran and found nothing to remove (the flag is set
                // before the handler runs, and both sides decide under the same lock).
                enum Outcome { case acquired, cancelled, queued }
                let outcome = state.withLock { state -> Outcome in
                    if !state.held {
                        state.held = true
                        return .acquired
                    }
                    if Task.isCancelled { return .cancelled }
                    state.waiters.append((id, continuation))
                    return .queued
                }
                switch outcome {
                case .acquired: continuation.resume()
                case .cancelled: continuation.resume(throwing: CancellationError())
                case .queued: break
                }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                return state.waiters.remove(at: index).continuation
            }
            waiter?.resume(throwing: CancellationError())
        }
    }

    private func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            guard !state.waiters.isEmpty else {
                state.held = false
                return nil
            }
            return state.waiters.removeFirst().continuation  // the turn passes straight to the next waiter
        }
        next?.resume()
    }
}
