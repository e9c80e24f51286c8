// A saga's state, folded from its log. The runner applies each record it appends with the same `apply` that
// replay uses, so the state in memory is always the state a resumed runner would rebuild.
//
// Invariants:
// - `version` is the saga stream's version after the last applied record; appends expect exactly it.
// - A step is "open" from its StepStarted until its StepCompleted or StepFailed. Only the steps of one parallel
//   group can be open at once (one step, outside groups).
// - `failedStep` is the first step whose action failed for good; `finallyFailed` holds every such step (several
//   steps of a parallel group can fail). `retryPending` holds the steps whose last attempt failed with a retry to
//   follow: a parallel group's step in its backoff when a sibling fails for good is never retried, and the runner
//   records its failure as final before compensating.
// - Attempt numbers are 1 ... Int.max - 1, so the next attempt's number never overflows.
// - Once the phase is compensating it never goes back to running; terminal phases (completed, compensated,
//   resolved) accept no further step records.
// - Events that contradict the phase (a StepCompleted for a step that was never started) are corruption.

import EventStore
import Foundation

/// Where a saga is in its life.
public enum SagaStatus: String, Sendable, Hashable, Codable {
    /// Running its steps forward.
    case running
    /// A step failed; completed steps are being compensated.
    case compensating
    /// A compensation failed after its retries; an operator must act.
    case stuck
    /// Every step completed.
    case completed
    /// Every completed step was compensated (or skipped by an operator).
    case compensated
    /// An operator marked the stuck saga resolved.
    case resolved

    /// Whether the saga has finished for good.
    public var isFinished: Bool { self == .completed || self == .compensated || self == .resolved }
}

struct SagaState: Sendable {
    var id: SagaID
    var definition = ""
    var input = Data()
    var stepNames: [String] = []
    var version: UInt64 = 0
    var status = SagaStatus.running
    var outputs: [Int: Data] = [:]
    var attempts: [Int: Int] = [:]
    /// The open steps, with their attempt numbers.
    var openSteps: [Int: Int] = [:]
    var failedStep: Int?
    var finallyFailed: Set<Int> = []
    var retryPending: Set<Int> = []
    var failure: String?
    var compensated: Set<Int> = []
    var skipped: Set<Int> = []
    var compensationAttempts: [Int: Int] = [:]
    var openCompensation: (index: Int, attempt: Int)?
    var stuckStep: Int?
    var stuckError: String?
    /// The compensations still to run when the saga got stuck, as its SagaStuck recorded them (nil in logs written
    /// before they were recorded).
    var stuckPending: [Int]?
    /// Compensation attempts made before the last operator retry: each retry grants a fresh retry budget.
    var compensationRetryBase: [Int: Int] = [:]

    init(id: SagaID) { self.id = id }

    /// The first step that has not completed, or nil if all have.
    var nextStep: Int? {
        (0..<stepNames.count).first { outputs[$0] == nil }
    }

    static func replay(_ events: [RecordedEvent], id: SagaID) throws -> SagaState {
        var state = SagaState(id: id)
        for event in events {
            try state.apply(try SagaRecord.decode(event), version: event.version, stream: event.stream)
        }
        return state
    }

    mutating func apply(_ record: SagaRecord, version: UInt64, stream: StreamName) throws {
        let location = "saga log \"\(stream)\" version \(version)"
        func bad(_ detail: String) -> EventStoreError { .corrupted(location: location, detail: detail) }
        func attemptNumber() throws -> Int {
            let attempt = record.attempt ?? 1
            guard attempt >= 1, attempt < Int.max else { throw bad("\(record.kind.rawValue) has attempt \(attempt)") }
            return attempt
        }
        func stepIndex() throws -> Int {
            guard let step = record.step, step >= 0, step < stepNames.count else {
                throw bad(
                    "\(record.kind.rawValue) names step \(record.step.map(String.init) ?? "none") of \(stepNames.count)"
                )
            }
            return step
        }
        if record.kind != .sagaStarted && self.version == 0 { throw bad("the log does not begin with SagaStarted") }
        switch record.kind {
        case .sagaStarted:
            guard self.version == 0, let definition = record.definition, let steps = record.steps else {
                throw bad("misplaced or incomplete SagaStarted")
            }
            self.definition = definition
            self.input = record.input ?? Data()
            self.stepNames = steps
        case .stepStarted:
            let step = try stepIndex()
            let attempt = try attemptNumber()
            openSteps[step] = attempt
            retryPending.remove(step)
            attempts[step] = max(attempts[step] ?? 0, attempt)
        case .stepCompleted:
            let step = try stepIndex()
            guard openSteps[step] != nil else { throw bad("StepCompleted for step \(step), which is not running") }
            outputs[step] = record.output ?? Data()
            openSteps[step] = nil
        case .stepFailed:
            let step = try stepIndex()
            openSteps[step] = nil
            attempts[step] = max(attempts[step] ?? 0, try attemptNumber())
            if record.willRetry == true {
                retryPending.insert(step)
            } else {
                retryPending.remove(step)
                finallyFailed.insert(step)
                // A sibling in a parallel group may fail after the first failure: the saga's failure stays the first.
                if status == .running {
                    status = .compensating
                    failedStep = step
                    failure = record.error
                }
            }
        case .compensationStarted:
            let step = try stepIndex()
            let attempt = try attemptNumber()
            openCompensation = (step, attempt)
            compensationAttempts[step] = max(compensationAttempts[step] ?? 0, attempt)
        case .stepCompensated:
            compensated.insert(try stepIndex())
            openCompensation = nil
        case .compensationFailed:
            let step = try stepIndex()
            openCompensation = nil
            compensationAttempts[step] = max(compensationAttempts[step] ?? 0, try attemptNumber())
        case .compensationSkipped:
            skipped.insert(try stepIndex())
            if status == .stuck {
                status = .compensating
                stuckStep = nil
                stuckError = nil
                stuckPending = nil
            }
        case .sagaStuck:
            status = .stuck
            // The step is optional here, but when named it is checked like every other record's.
            stuckStep = record.step == nil ? nil : try stepIndex()
            stuckError = record.error
            if let pending = record.pending, let outside = pending.first(where: { !stepNames.indices.contains($0) }) {
                throw bad("SagaStuck names pending step \(outside) of \(stepNames.count)")
            }
            stuckPending = record.pending
        case .sagaRetried:
            guard status == .stuck else { throw bad("SagaRetried for a saga that is \(status.rawValue)") }
            status = .compensating
            compensationRetryBase = compensationAttempts
            stuckStep = nil
            stuckError = nil
            stuckPending = nil
        case .sagaCompleted: status = .completed
        case .sagaCompensated: status = .compensated
        case .sagaResolved: status = .resolved
        }
        self.version = version
    }
}
