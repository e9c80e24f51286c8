// What a step's action or compensation sees: the saga's input, earlier outputs and its idempotency keys.
//
// Invariants:
// - `idempotencyKey` is "sagaID/step/attempt" for an action and "sagaID/step/compensation/attempt" for a
//   compensation. A crash-interrupted attempt that runs again keeps its attempt number, so its key is unchanged.
// - `stepKey` ("sagaID/step") is the same for every attempt of the step.
// - Outputs are decoded from what StepCompleted recorded, so a resumed saga sees exactly what the first run saw.

import EventStore
import Foundation

/// A typed reference to a step, returned when the step is defined; later steps use it to read its output.
public struct StepHandle<Output: Codable & Sendable>: Sendable, Hashable {
    /// The step's name.
    public let name: String
    let index: Int
}

/// Whether a context belongs to a step's action or to its compensation.
public enum StepPhase: String, Sendable, Hashable, Codable {
    /// The forward action.
    case action
    /// The compensating action.
    case compensation
}

/// What one attempt of a step's action or compensation is given.
public struct StepContext<Input: Codable & Sendable>: Sendable {
    /// The saga instance.
    public let sagaID: SagaID
    /// The input the saga was started with.
    public let input: Input
    /// The step's name.
    public let stepName: String
    /// Whether this is the action or the compensation.
    public let phase: StepPhase
    /// The attempt number, from 1. A crash-interrupted attempt that runs again keeps its number.
    public let attempt: Int
    /// "sagaID/step/attempt" (or "sagaID/step/compensation/attempt"): send it with the side effect so that a
    /// re-run after a crash can be recognised downstream.
    public let idempotencyKey: String
    let outputs: [Int: Data]
    let coder: any EventCoder

    /// "sagaID/step": the same for every attempt of the step, for effects that must happen once across retries.
    public var stepKey: String { "\(sagaID.rawValue)/\(stepName)" }

    /// The output an earlier step recorded.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` if that step's output is not visible here: it has not
    ///   completed (it is not earlier, or it is being compensated after failing), or it is in the same parallel
    ///   group as this action (siblings never see each other's outputs, completed or not);
    ///   ``EventStoreError/codingFailed(type:reason:)`` if it does not decode.
    public func output<Output>(of step: StepHandle<Output>) throws -> Output {
        guard let data = outputs[step.index] else {
            throw EventStoreError.invalidArgument(
                "step \"\(step.name)\" of saga \(sagaID) has no output visible to \"\(stepName)\": it has not "
                    + "completed, or it is in the same parallel group")
        }
        do {
            return try coder.decode(Output.self, from: data)
        } catch {
            throw EventStoreError.codingFailed(type: "output of step \(step.name)", reason: "\(error)")
        }
    }
}

/// The exactly-once result of a step whose effect is an event-store append: the appends are committed in the same
/// atomic transaction as the step's StepCompleted (or StepCompensated) record.
public struct StepEffect<Output: Codable & Sendable>: Sendable {
    /// The step's output, recorded with StepCompleted.
    public var output: Output
    /// The appends that are the step's effect. They must go to user streams: an append to a system stream (a name
    /// starting with `$`, such as the saga's own log or `$sagas-index`) is refused with
    /// ``EventStoreError/invalidArgument(_:)`` before anything is written, and the step fails for good.
    public var appends: [StreamAppend]

    /// Creates an effect.
    public init(output: Output, appends: [StreamAppend]) {
        self.output = output
        self.appends = appends
    }
}

/// The output of a step that produces nothing worth recording.
public struct NoOutput: Codable, Sendable, Hashable {
    /// Creates the empty output.
    public init() {}
}

/// How the type-erased runner calls a step: everything but the input's and the outputs' Swift types.
struct StepInvocation: Sendable {
    var sagaID: SagaID
    var input: Data
    var stepName: String
    var phase: StepPhase
    var attempt: Int
    var outputs: [Int: Data]
    var coder: any EventCoder

    var idempotencyKey: String {
        switch phase {
        case .action: "\(sagaID.rawValue)/\(stepName)/\(attempt)"
        case .compensation: "\(sagaID.rawValue)/\(stepName)/compensation/\(attempt)"
        }
    }

    func context<Input: Codable & Sendable>(_ type: Input.Type) throws -> StepContext<Input> {
        let decoded: Input
        do {
            decoded = try coder.decode(Input.self, from: input)
        } catch {
            throw EventStoreError.codingFailed(type: "input of saga \(sagaID)", reason: "\(error)")
        }
        return StepContext(
            sagaID: sagaID, input: decoded, stepName: stepName, phase: phase, attempt: attempt,
            idempotencyKey: idempotencyKey, outputs: outputs, coder: coder)
    }
}
