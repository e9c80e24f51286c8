// The knobs of a saga runner: lease lengths and how long it waits for locks.
//
// Invariants:
// - Lease lengths and waits are real (wall-clock) time: they are the store's session TTLs, not SagaClock time.
// - While a step runs, the runner renews its leases every third of `sessionTimeout`, so a step may run longer
//   than the lease; a runner that cannot renew in time loses the saga and its next append fails.

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
    /// A random number in 0..<1 for backoff jitter; replace it to make jitter deterministic in tests.
    public var random: @Sendable () -> Double

    /// Creates a configuration.
    public init(
        sessionTimeout: Duration = .seconds(30), lockWait: Duration = .seconds(10),
        recoveryLockWait: Duration = .zero, resourceWait: Duration = .seconds(60),
        random: @escaping @Sendable () -> Double = { Double.random(in: 0..<1) }
    ) {
        self.sessionTimeout = sessionTimeout
        self.lockWait = lockWait
        self.recoveryLockWait = recoveryLockWait
        self.resourceWait = resourceWait
        self.random = random
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
