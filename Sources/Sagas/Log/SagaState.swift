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
//   resolved) accept no further record.
// - Events that contradict the phase are corruption (EventStoreError.corrupted naming the stream, the version and
//   the record): `apply` accepts only what a runner, an operator action or recovery can write:
//   - StepStarted while running, for a step neither completed nor failed for good, as its next attempt
//     (attempts + 1), or the open attempt again (a resumed one; also while compensating, for a parallel group's
//     step a crash left open). StepCompleted only for the open attempt. StepFailed while running or compensating
//     for a step neither completed nor failed for good, with the open attempt's number if one is open (none is
//     when its resources could not be taken, or for a final "not retried" failure). A StepFailed that took
//     effect (the action returned but its result could not be recorded) is never followed by a retry.
//   - CompensationStarted, StepCompensated, CompensationFailed, SagaStuck and SagaCompensated only while
//     compensating; the first four only for a step whose action completed or failed for good and that was
//     neither compensated nor skipped. CompensationStarted only once no action is open or awaiting a retry, as
//     the next compensation attempt or the open one again; StepCompensated only for the open compensation
//     attempt (so once per step); SagaStuck and SagaCompensated only when no compensation is open, and
//     SagaCompensated only when no action is open or awaiting a retry.
//   - SagaCompleted only while running, with every step completed and none open.
//   - SagaRetried, CompensationSkipped and SagaResolved only while stuck.

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
    /// The steps of `finallyFailed` whose action had returned (its effect happened) but whose result could not be
    /// recorded (StepFailed with tookEffect): they are compensated whatever their options say.
    var tookEffect: Set<Int> = []
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
        if record.kind != .sagaStarted { try checkPhase(of: record.kind, bad: bad) }
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
            try checkForward(step, "StepStarted", bad: bad)
            if let open = openSteps[step] {
                // Only the attempt a crash interrupted starts again (resumed), under its own number.
                guard attempt == open else {
                    throw bad("StepStarted attempt \(attempt) for step \(step), whose attempt \(open) is still open")
                }
            } else {
                // Once compensating, no new attempt starts; forward, the next attempt is the one after the last.
                guard status == .running else {
                    throw bad("StepStarted for step \(step), which is not running, while the saga is \(status.rawValue)")
                }
                let next = (attempts[step] ?? 0) + 1
                guard attempt == next else {
                    throw bad("StepStarted attempt \(attempt) for step \(step), whose next attempt is \(next)")
                }
            }
            openSteps[step] = attempt
            retryPending.remove(step)
            attempts[step] = max(attempts[step] ?? 0, attempt)
        case .stepCompleted:
            let step = try stepIndex()
            guard let open = openSteps[step] else {
                throw bad("StepCompleted for step \(step), which is not running")
            }
            let attempt = try attemptNumber()
            guard attempt == open else {
                throw bad("StepCompleted attempt \(attempt) for step \(step), whose open attempt is \(open)")
            }
            outputs[step] = record.output ?? Data()
            openSteps[step] = nil
        case .stepFailed:
            let step = try stepIndex()
            let attempt = try attemptNumber()
            try checkForward(step, "StepFailed", bad: bad)
            if let open = openSteps[step], attempt != open {
                throw bad("StepFailed attempt \(attempt) for step \(step), whose open attempt is \(open)")
            }
            openSteps[step] = nil
            attempts[step] = max(attempts[step] ?? 0, attempt)
            if record.tookEffect == true {
                // An action that took effect is never run again.
                guard record.willRetry != true else {
                    throw bad("StepFailed for step \(step) both took effect and will be retried")
                }
                tookEffect.insert(step)
            }
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
            try checkCompensable(step, "CompensationStarted", bad: bad)
            guard openSteps.isEmpty, retryPending.isEmpty else {
                throw bad("CompensationStarted for step \(step) while an action is still open or awaiting its retry")
            }
            if let open = openCompensation {
                // Only the compensation a crash interrupted starts again, under its own number.
                guard open.index == step, open.attempt == attempt else {
                    throw bad(
                        "CompensationStarted for step \(step) attempt \(attempt) while step \(open.index)'s "
                            + "compensation attempt \(open.attempt) is open")
                }
            } else {
                let next = (compensationAttempts[step] ?? 0) + 1
                guard attempt == next else {
                    throw bad("CompensationStarted attempt \(attempt) for step \(step), whose next attempt is \(next)")
                }
            }
            openCompensation = (step, attempt)
            compensationAttempts[step] = max(compensationAttempts[step] ?? 0, attempt)
        case .stepCompensated:
            let step = try stepIndex()
            let attempt = try attemptNumber()
            try checkCompensable(step, "StepCompensated", bad: bad)
            guard let open = openCompensation, open.index == step, open.attempt == attempt else {
                throw bad("StepCompensated for step \(step) attempt \(attempt), whose compensation is not running")
            }
            compensated.insert(step)
            openCompensation = nil
        case .compensationFailed:
            let step = try stepIndex()
            let attempt = try attemptNumber()
            try checkCompensable(step, "CompensationFailed", bad: bad)
            // Without CompensationStarted when its resources could not be taken.
            if let open = openCompensation, open.index != step || open.attempt != attempt {
                throw bad(
                    "CompensationFailed for step \(step) attempt \(attempt) while step \(open.index)'s compensation "
                        + "attempt \(open.attempt) is open")
            }
            openCompensation = nil
            compensationAttempts[step] = max(compensationAttempts[step] ?? 0, attempt)
        case .compensationSkipped:
            let step = try stepIndex()
            try checkCompensable(step, "CompensationSkipped", bad: bad)
            skipped.insert(step)
            status = .compensating
            stuckStep = nil
            stuckError = nil
            stuckPending = nil
        case .sagaStuck:
            guard openCompensation == nil else { throw bad("SagaStuck while a compensation is running") }
            // The step is optional here, but when named it is checked like every other record's.
            let step = record.step == nil ? nil : try stepIndex()
            if let step { try checkCompensable(step, "SagaStuck", bad: bad) }
            if let pending = record.pending, let outside = pending.first(where: { !stepNames.indices.contains($0) }) {
                throw bad("SagaStuck names pending step \(outside) of \(stepNames.count)")
            }
            status = .stuck
            stuckStep = step
            stuckError = record.error
            stuckPending = record.pending
        case .sagaRetried:
            status = .compensating
            compensationRetryBase = compensationAttempts
            stuckStep = nil
            stuckError = nil
            stuckPending = nil
        case .sagaCompleted:
            guard openSteps.isEmpty, outputs.count == stepNames.count else {
                throw bad("SagaCompleted with \(outputs.count) of \(stepNames.count) steps completed")
            }
            status = .completed
        case .sagaCompensated:
            guard openSteps.isEmpty, retryPending.isEmpty, openCompensation == nil else {
                throw bad("SagaCompensated while an action or a compensation is still open")
            }
            status = .compensated
        case .sagaResolved: status = .resolved
        }
        self.version = version
    }

    /// Throws unless a record of `kind` can follow in the current phase: nothing follows a terminal record; a
    /// stuck saga takes only an operator's record; forward records come while running (or, for the attempts a
    /// parallel group still finishes, while compensating); compensation records and the terminal records only in
    /// the phase the runner writes them in.
    private func checkPhase(of kind: SagaEventKind, bad: (String) -> EventStoreError) throws {
        let allowed: Set<SagaStatus>
        switch kind {
        case .sagaStarted: return
        case .stepStarted, .stepCompleted, .stepFailed: allowed = [.running, .compensating]
        case .compensationStarted, .stepCompensated, .compensationFailed, .sagaStuck, .sagaCompensated:
            allowed = [.compensating]
        case .sagaCompleted: allowed = [.running]
        case .compensationSkipped, .sagaRetried, .sagaResolved: allowed = [.stuck]
        }
        guard allowed.contains(status) else { throw bad("\(kind.rawValue) while the saga is \(status.rawValue)") }
    }

    /// Throws unless step `step`'s action may still be attempted: it has not completed nor failed for good.
    private func checkForward(_ step: Int, _ kind: String, bad: (String) -> EventStoreError) throws {
        if outputs[step] != nil { throw bad("\(kind) for step \(step), which has completed") }
        if finallyFailed.contains(step) { throw bad("\(kind) for step \(step), which has failed for good") }
    }

    /// Throws unless step `step` has a compensation to run: its action completed (or failed for good, which
    /// its options may compensate) and it was neither compensated nor skipped yet.
    private func checkCompensable(_ step: Int, _ kind: String, bad: (String) -> EventStoreError) throws {
        guard outputs[step] != nil || finallyFailed.contains(step) else {
            throw bad("\(kind) for step \(step), whose action never took effect")
        }
        if compensated.contains(step) { throw bad("\(kind) for step \(step), which was already compensated") }
        if skipped.contains(step) { throw bad("\(kind) for step \(step), whose compensation was skipped") }
    }
}
