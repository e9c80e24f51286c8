// A clock that moves only when told to: tests advance it to release backoff pauses and to fire step timeouts.
//
// Invariants (guarded by the `state` mutex):
// - A sleeper is resumed exactly once: by `advance(by:)` once its deadline is reached, or by its task's
//   cancellation (then with CancellationError). Continuations are resumed outside the lock.
// - `requestedSleeps` records every sleep ever requested, in order, so tests can check backoff durations.
// - A `waitForSleepers` waiter is resumed exactly once: as soon as at least its count of sleepers are waiting, or
//   when its task is cancelled.

import EventStore
import Foundation

/// A controllable ``SagaClock`` for tests: time stands still until ``advance(by:)`` moves it.
public final class ManualSagaClock: SagaClock {
    private struct Sleeper {
        var id: UInt64
        var deadline: Date
        var continuation: CheckedContinuation<Void, any Error>
    }
    private struct Waiter {
        var id: UInt64
        var count: Int
        var continuation: CheckedContinuation<Void, Never>
    }
    private struct State {
        var now: Date
        var nextID: UInt64 = 0
        var sleepers: [Sleeper] = []
        var cancelledBeforeRegistering: Set<UInt64> = []
        var waiters: [Waiter] = []
        var requestedSleeps: [Duration] = []
    }
    private let state: Locked<State>

    /// Creates a clock reading `start`.
    public init(start: Date = Date(timeIntervalSince1970: 1_700_000_000)) {
        state = Locked(State(now: start))
    }

    public func now() -> Date { state.withLock { $0.now } }

    /// Every sleep requested so far, in order.
    public var requestedSleeps: [Duration] { state.withLock { $0.requestedSleeps } }

    /// The durations the currently waiting sleepers still have to wait, shortest first.
    public var pendingSleeps: [Duration] {
        state.withLock { state in
            state.sleepers.map { sleeper in
                // A clock started at NaN or an infinity has no finite remainder: report none rather than trap.
                let remaining = sleeper.deadline.timeIntervalSince(state.now)
                return remaining.isFinite ? .seconds(remaining) : .zero
            }.sorted()
        }
    }

    public func sleep(for duration: Duration) async throws {
        try Task.checkCancellation()
        let id: UInt64 = state.withLock { state in
            state.requestedSleeps.append(duration)
            state.nextID += 1
            return state.nextID
        }
        guard duration > .zero else { return }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let ready: [Waiter]? = state.withLock { state in
                    if state.cancelledBeforeRegistering.remove(id) != nil { return nil }
                    let deadline = state.now.addingTimeInterval(Self.seconds(duration))
                    state.sleepers.append(Sleeper(id: id, deadline: deadline, continuation: continuation))
                    return Self.takeReadyWaiters(&state)
                }
                guard let ready else {
                    continuation.resume(throwing: CancellationError())
                    return
                }
                for waiter in ready { waiter.continuation.resume() }
            }
        } onCancel: {
            let sleeper: Sleeper? = state.withLock { state in
                guard let index = state.sleepers.firstIndex(where: { $0.id == id }) else {
                    state.cancelledBeforeRegistering.insert(id)
                    return nil
                }
                return state.sleepers.remove(at: index)
            }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves time forward by `duration`, waking every sleeper whose deadline is reached.
    public func advance(by duration: Duration) {
        let due: [Sleeper] = state.withLock { state in
            state.now = state.now.addingTimeInterval(Self.seconds(duration))
            let now = state.now
            let due = state.sleepers.filter { $0.deadline <= now }
            state.sleepers.removeAll { $0.deadline <= now }
            return due
        }
        for sleeper in due { sleeper.continuation.resume() }
    }

    /// Suspends until at least `count` sleepers are waiting on this clock, or until the task is cancelled.
    public func waitForSleepers(_ count: Int = 1) async {
        let id: UInt64 = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready: Bool = state.withLock { state in
                    if state.cancelledBeforeRegistering.remove(id) != nil || state.sleepers.count >= count {
                        return true
                    }
                    state.waiters.append(Waiter(id: id, count: count, continuation: continuation))
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            let waiter: Waiter? = state.withLock { state in
                guard let index = state.waiters.firstIndex(where: { $0.id == id }) else {
                    state.cancelledBeforeRegistering.insert(id)
                    return nil
                }
                return state.waiters.remove(at: index)
            }
            waiter?.continuation.resume()
        }
    }

    private static func takeReadyWaiters(_ state: inout State) -> [Waiter] {
        let count = state.sleepers.count
        let ready = state.waiters.filter { $0.count <= count }
        state.waiters.removeAll { $0.count <= count }
        return ready
    }

    static func seconds(_ duration: Duration) -> TimeInterval {
        // A ratio of durations, not `components`, which traps for durations past Int64 seconds.
        duration / .seconds(1)
    }
}
