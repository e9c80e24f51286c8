// How one step runs: its crash semantics, its retry policy and its timeouts.
//
// Invariants:
// - A retry policy allows at least one attempt; backoff is never negative and never above `maximumBackoff`.
// - Jitter only shortens a pause (by at most `jitter` of it), so `maximumBackoff` is a hard bound.

import EventStore
import Foundation

/// What happens to a step that a crash interrupted: it was started but neither its completion nor its failure was
/// recorded, so its effect may or may not have happened.
public enum StepSemantics: Sendable, Hashable {
    /// The step runs again, with the same idempotency key (the default). Its effect may happen more than once;
    /// use ``StepContext/idempotencyKey`` downstream to drop duplicates.
    case atLeastOnce
    /// The step never runs again: it is recorded as failed and the saga compensates. Its effect happens at most once.
    case atMostOnce
}

/// How often, and with what pauses, a failing action or compensation is tried again.
public struct RetryPolicy: Sendable, Hashable {
    /// Attempts in all, including the first; at least 1.
    public var maximumAttempts: Int
    /// The pause after the first failure.
    public var initialBackoff: Duration
    /// How much each further pause grows (2 doubles it).
    public var multiplier: Double
    /// The longest pause.
    public var maximumBackoff: Duration
    /// The fraction of a pause that is random, from 0 (none) to 1: a pause is shortened by up to this fraction.
    public var jitter: Double

    /// Creates a policy.
    public init(
        maximumAttempts: Int = 3, initialBackoff: Duration = .milliseconds(200), multiplier: Double = 2,
        maximumBackoff: Duration = .seconds(30), jitter: Double = 0.2
    ) {
        self.maximumAttempts = maximumAttempts
        self.initialBackoff = initialBackoff
        self.multiplier = multiplier
        self.maximumBackoff = maximumBackoff
        self.jitter = jitter
    }

    /// One attempt, no retry.
    public static let never = RetryPolicy(maximumAttempts: 1, initialBackoff: .zero, jitter: 0)

    /// The pause after failed attempt number `attempt` (1-based), given a random number in `0..<1`.
    public func backoff(afterAttempt attempt: Int, random: Double) -> Duration {
        let initial = ManualSagaClock.seconds(initialBackoff)
        let cap = ManualSagaClock.seconds(maximumBackoff)
        // No pause grows from none: 0 × ∞ (a late attempt's growth) would be NaN and read as the cap.
        guard initial > 0 else { return .zero }
        let grown = initial * pow(max(multiplier, 1), Double(max(attempt, 1) - 1))
        let base = min(grown.isFinite ? grown : cap, cap)
        // NaN passes min and max unchanged: a NaN random number or jitter counts as none.
        let fraction = (jitter.isNaN ? 0 : min(max(jitter, 0), 1)) * (random.isNaN ? 0 : min(max(random, 0), 1))
        let pause = max(base * (1 - fraction), 0)
        return pause.isFinite ? .seconds(pause) : maximumBackoff
    }

    func validate(_ what: String) throws {
        guard maximumAttempts >= 1 else {
            throw EventStoreError.invalidArgument("\(what): maximumAttempts must be at least 1, got \(maximumAttempts)")
        }
        guard initialBackoff >= .zero, maximumBackoff >= .zero, multiplier.isFinite, jitter.isFinite else {
            throw EventStoreError.invalidArgument("\(what): backoff must be finite and not negative")
        }
    }
}

/// What a step's action throws to fail the step for good, whatever its retry policy: for a failure another attempt
/// would only repeat (a business rule refused the request), as opposed to a transient one (a conflict, a timeout).
/// The saga then compensates as if the retries had run out. The failure is recorded, and reported in
/// ``SagaOutcome/compensated(failedStep:error:)``, with the wrapped error's description. A compensation that throws
/// it is retried as usual.
public struct PermanentStepFailure: Error, CustomStringConvertible {
    /// The error that failed the step.
    public let error: any Error

    /// Wraps `error`, so that the step that throws it is not retried.
    public init(_ error: any Error) { self.error = error }

    public var description: String { String(describing: error) }
}

/// How one step of a saga runs.
public struct StepOptions: Sendable, Hashable {
    /// What a crash in the middle of the action means. ``StepSemantics/atLeastOnce`` unless set.
    public var semantics: StepSemantics
    /// Retries of the action.
    public var retry: RetryPolicy
    /// How long one attempt of the action may take; nil for no limit. A timed-out attempt is cancelled and fails.
    public var timeout: Duration?
    /// Retries of the compensation; when they run out the saga is Stuck.
    public var compensationRetry: RetryPolicy
    /// How long one attempt of the compensation may take; nil for no limit.
    public var compensationTimeout: Duration?
    /// Whether the compensation also runs, with no output, when this step's own action failed (or, for an
    /// atMostOnce step, was interrupted by a crash): for actions that can fail after they already took effect.
    /// Off by default: then a failure at step k compensates steps k-1 ... 1 only, unless step k's action returned
    /// but its output could not be recorded (then its effect happened, and it is compensated whatever this says).
    public var compensatesFailedAction: Bool

    /// Creates step options.
    public init(
        semantics: StepSemantics = .atLeastOnce, retry: RetryPolicy = RetryPolicy(), timeout: Duration? = nil,
        compensationRetry: RetryPolicy = RetryPolicy(maximumAttempts: 5), compensationTimeout: Duration? = nil,
        compensatesFailedAction: Bool = false
    ) {
        self.semantics = semantics
        self.retry = retry
        self.timeout = timeout
        self.compensationRetry = compensationRetry
        self.compensationTimeout = compensationTimeout
        self.compensatesFailedAction = compensatesFailedAction
    }
}
