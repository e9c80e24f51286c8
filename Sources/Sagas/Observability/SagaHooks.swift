// Hooks the runner calls as steps start, finish and fail, for metrics and logs.
//
// Invariants:
// - A hook is called after the matching record is durably in the saga log (so a hook never reports something a
//   crash could undo), except `stepStarted`, which fires after StepStarted is recorded and before the action runs.
// - Hooks are called on the runner's task, in log order; a slow hook slows the saga. The steps of a parallel group
//   run as tasks of their own, so their hooks can be called concurrently (each still after its own record).

import Foundation

/// One step event reported to a hook.
public struct SagaStepEvent: Sendable, Hashable {
    /// The saga instance.
    public var sagaID: SagaID
    /// The saga definition's name.
    public var definition: String
    /// The step's name.
    public var step: String
    /// The action or the compensation.
    public var phase: StepPhase
    /// The attempt number, from 1.
    public var attempt: Int
    /// The attempt's idempotency key.
    public var idempotencyKey: String
    /// For a failure, the error's description.
    public var error: String?
    /// For a failure, whether another attempt follows.
    public var willRetry: Bool
    /// The runner's clock time.
    public var at: Date
}

/// Callbacks for step events. Each is optional. For the steps of a parallel group they can be called concurrently.
public struct SagaHooks: Sendable {
    /// Called when an attempt of an action or compensation starts.
    public var stepStarted: (@Sendable (SagaStepEvent) -> Void)?
    /// Called when an action or compensation finishes successfully.
    public var stepFinished: (@Sendable (SagaStepEvent) -> Void)?
    /// Called when an attempt of an action or compensation fails.
    public var stepFailed: (@Sendable (SagaStepEvent) -> Void)?

    /// Creates hooks.
    public init(
        stepStarted: (@Sendable (SagaStepEvent) -> Void)? = nil,
        stepFinished: (@Sendable (SagaStepEvent) -> Void)? = nil,
        stepFailed: (@Sendable (SagaStepEvent) -> Void)? = nil
    ) {
        self.stepStarted = stepStarted
        self.stepFinished = stepFinished
        self.stepFailed = stepFailed
    }
}
