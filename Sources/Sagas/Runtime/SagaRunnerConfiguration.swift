// The knobs of a saga runner: lease lengths and how long it waits for locks.
//
// Invariants:
// - Lease lengths and waits are real (wall-clock) time: they are the store's session TTLs, not SagaClock time.
// - While a step runs, the runner renews its leases every third of `sessionTimeout`, so a step may run longer
//   than the lease; a runner that cannot renew in time loses the saga and its next append fails.

import EventStore
import Foundation

/// How a ``SagaRunner`` holds its locks.
public struct SagaRunnerConfiguration: Sendable {
    /// The lease length of the runner's lock on a saga stream and of its resource locks.
    public var sessionTimeout: Duration
    /// How long ``SagaRunner/start(_:id:input:)``, ``SagaRunner/resume(_:)`` and the operator actions wait for
    /// another runner's lock on the saga.
    public var lockWait: Duration
    /// How long recovery waits for a saga another runner holds before leaving it to that runner.
    public var recoveryLockWait: Duration
    /// How long a step waits for its resources before the attempt fails.
    public var resourceWait: Duration
    /// How many sagas ``SagaRunner/recover()`` resumes at once; at least 1.
    public var recoveryConcurrency: Int
    /// A random number in 0..<1 for backoff jitter; replace it to make jitter deterministic in tests.
    public var random: @Sendable () -> Double

    /// Creates a configuration.
    public init(
        sessionTimeout: Duration = .seconds(30), lockWait: Duration = .seconds(10),
        recoveryLockWait: Duration = .zero, resourceWait: Duration = .seconds(60), recoveryConcurrency: Int = 4,
        random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }
    ) {
        self.sessionTimeout = sessionTimeout
        self.lockWait = lockWait
        self.recoveryLockWait = recoveryLockWait
        self.resourceWait = resourceWait
        self.recoveryConcurrency = recoveryConcurrency
        self.random = random
    }

    /// Refuses values no lock can be held or waited for with, before a runner writes anything: a negative
    /// `resourceWait` would otherwise fail every step that takes a resource and compensate its saga for good.
    func validate() throws {
        // The stores grant leases of up to 100 years (their expiries are nanoseconds in an Int64).
        guard sessionTimeout > .zero, sessionTimeout <= .seconds(100 * 365 * 86_400) else {
            throw EventStoreError.invalidArgument("sessionTimeout must be positive and at most 100 years, got \(sessionTimeout)")
        }
        for (name, wait) in [("lockWait", lockWait), ("recoveryLockWait", recoveryLockWait), ("resourceWait", resourceWait)]
        where wait < .zero {
            throw EventStoreError.invalidArgument("\(name) must not be negative, got \(wait)")
        }
        guard recoveryConcurrency >= 1 else {
            throw EventStoreError.invalidArgument("recoveryConcurrency must be at least 1, got \(recoveryConcurrency)")
        }
    }
}

/// How a saga run ended (or paused for an operator).
public enum SagaOutcome: Sendable, Hashable {
    /// Every step completed.
    case completed
    /// A step failed and every completed step was compensated (or skipped by an operator).
    case compensated(failedStep: String, error: String)
    /// A compensation failed after its retries; see ``SagaRunner/stuckSagas()``.
    case stuck(step: String, error: String)
    /// An operator marked the saga resolved.
    case resolved

    /// Whether the saga has finished for good (completed, compensated or resolved), rather than being stuck.
    public var isFinished: Bool {
        if case .stuck = self { return false }
        return true
    }
}
