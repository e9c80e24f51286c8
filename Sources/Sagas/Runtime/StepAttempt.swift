// Running one attempt of an action or compensation: under its resource locks, with its leases kept alive, and
// with its timeout measured on the SagaClock.
//
// Invariants:
// - Resource locks are taken in sorted name order (so two sagas never deadlock on each other's resources) and are
//   all released after the attempt, whether it succeeded, failed or was cancelled.
// - A timed-out attempt is cancelled and awaited before the timeout error is reported: the next attempt never
//   overlaps the previous one (the action must honour cancellation for the timeout to take effect promptly).
//   When the caller is cancelled instead, the timer's own cancellation is never reported: the action's result or
//   error is, so that the attempt is recorded by how it really ended.
// - The saga's lease is renewed from before the first resource lock is awaited until the attempt ends, and every
//   resource lock from the moment it is held, so neither a long wait for a resource nor a long attempt lets one
//   expire. A renewal that fails for any reason but a lost lease is retried soon (a quarter of the interval), never
//   given up on: one transient backend error must not let another runner take the saga mid-step.
// - Renewal is still best effort: a lease that is really lost (the process stalled past it, or the backend stayed
//   unreachable) is detected by the fenced append that follows the attempt.

import EventStore
import Foundation

/// A step attempt ran out of time.
struct StepTimedOut: Error, CustomStringConvertible {
    var timeout: Duration
    var description: String { "timed out after \(timeout)" }
}

/// A step's action returned, so its effect happened, but its result could not be recorded: its output did not
/// encode, or the store refused its StepCompleted (for a reason that does not stop the run, such as an output
/// larger than an event may be). The step has failed for good: it is not run again, and it is compensated.
struct UnrecordedResult: Error, CustomStringConvertible {
    var error: any Error
    var description: String { "the action returned but its output could not be recorded: \(error)" }
}

/// An appending step's action returned, but its output did not encode or its StepCompleted and appends did not
/// commit: nothing was written, so it took no effect, and the attempt fails like one that threw.
struct UncommittedResult: Error, CustomStringConvertible {
    var error: any Error
    var description: String {
        "the action returned but its output and appends could not be committed, so nothing was written: \(error)"
    }
}

/// How the first task of `StepAttempt.withTimeout` to finish ended.
private enum TimedEnding<Value: Sendable>: Sendable {
    case returned(Value)
    case timedOut
    case timerCancelled
}

enum StepAttempt {
    /// Runs `body`, failing with ``StepTimedOut`` if it takes longer than `timeout` on `clock`. When the calling
    /// task is cancelled, what `body` returned or threw is reported, never the timer's cancellation: the caller
    /// records the attempt by how it really ended.
    static func withTimeout<Value: Sendable>(
        _ timeout: Duration?, clock: any SagaClock, _ body: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        guard let timeout else { return try await body() }
        return try await withThrowingTaskGroup(of: TimedEnding<Value>.self) { group in
            group.addTask { .returned(try await body()) }
            group.addTask {
                do {
                    try await clock.sleep(for: timeout)
                    return .timedOut
                } catch {
                    return .timerCancelled
                }
            }
            defer { group.cancelAll() }
            while let ending = try await group.next() {
                switch ending {
                case .returned(let value): return value
                case .timedOut: throw StepTimedOut(timeout: timeout)
                case .timerCancelled: continue  // the body is cancelled too: wait for how it ends
                }
            }
            throw CancellationError()  // unreachable: the body's task always ends the loop
        }
    }

    /// Takes the locks of `resources`, runs `body` while renewing them and `sagaSession`, and releases them.
    static func withResources<Value: Sendable>(
        _ resources: [String], store: any EventStoring, sagaSession: any StreamSession,
        configuration: SagaRunnerConfiguration, _ body: () async throws -> Value
    ) async throws -> Value {
        // Renewal starts before the first wait for a resource: `resourceWait` may be longer than the saga's lease.
        let renewed = Locked<[any StreamSession]>([sagaSession])
        let keeper = keepAlive(renewed, every: configuration.sessionTimeout / 3)
        defer { keeper.cancel() }
        var held: [any StreamSession] = []
        do {
            for name in Set(resources).sorted() {
                let session = try await store.openSession(
                    on: try SagaStreams.resource(name), sessionTimeout: configuration.sessionTimeout,
                    openTimeout: configuration.resourceWait)
                held.append(session)
                renewed.withLock { $0.append(session) }
            }
        } catch {
            keeper.cancel()
            await release(held)
            throw error
        }
        do {
            let value = try await body()
            keeper.cancel()
            await release(held)
            return value
        } catch {
            keeper.cancel()
            await release(held)
            throw error
        }
    }

    /// Waits out a backoff pause on `clock` while renewing `session`, so a long pause does not lose the saga.
    static func pause(
        for duration: Duration, clock: any SagaClock, session: any StreamSession, configuration: SagaRunnerConfiguration
    ) async throws {
        let keeper = keepAlive(Locked([session]), every: configuration.sessionTimeout / 3)
        defer { keeper.cancel() }
        try await clock.sleep(for: duration)
    }

    /// Renews each of `sessions` (the list may grow meanwhile) every `interval` (real time) until cancelled. A
    /// session whose lease is gone (`sessionExpired`) is left alone; any other failure is retried after a quarter of
    /// the interval, while the lease still holds.
    private static func keepAlive(_ sessions: Locked<[any StreamSession]>, every interval: Duration) -> Task<Void, Never> {
        Task {
            var lost = Set<Int>()
            var wait = interval
            while !Task.isCancelled {
                do { try await Task.sleep(for: wait) } catch { return }
                wait = interval
                for (index, session) in sessions.withLock({ $0 }).enumerated() where !lost.contains(index) {
                    do {
                        try await session.renew()
                    } catch is CancellationError {
                        return
                    } catch EventStoreError.sessionExpired {
                        lost.insert(index)
                    } catch {
                        if Task.isCancelled { return }
                        wait = interval / 4
                    }
                }
            }
        }
    }

    /// Closes `sessions` even when the calling task is cancelled. A close that fails leaves the lease to expire.
    static func release(_ sessions: [any StreamSession]) async {
        guard !sessions.isEmpty else { return }
        await Task.detached {
            for session in sessions { try? await session.close() }
        }.value
    }
}
