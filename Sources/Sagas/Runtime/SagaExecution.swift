// Drives one saga, under its runner's session lock, from its current state to an outcome.
//
// Invariants:
// - Every record is appended through the saga's session with the expected version of the state it was decided
//   on; the state is then updated by the same fold replay uses. A failed append stops the run (another runner
//   has the saga, or the store failed) and nothing is assumed about it.
// - A step's effect happens before its StepCompleted is recorded (at least once), except for appending steps,
//   whose effect commits atomically with StepCompleted (exactly once).
// - StepStarted is recorded before the action runs. On resume, an open step either re-runs with its attempt
//   number (atLeastOnce) or is recorded as failed (atMostOnce) and never runs again.
// - The steps of a parallel group run as child tasks that append through one SagaJournal, one record at a time.
//   Once one of them fails for good, none starts another attempt (an attempt already running, or interrupted by a
//   crash and resumed, still finishes); the group ends when every child has, and only then does compensation
//   begin. Steps a crash left open while the saga was already compensating are finished the same way first, so
//   that compensation knows what they did.
// - An action's failed attempt is retried while its RetryPolicy has attempts left, unless it threw
//   PermanentStepFailure: then the step has failed for good (recorded with willRetry false).
// - An action that returned has taken effect, even if its result cannot be recorded (its output does not encode,
//   or the store refuses its StepCompleted for a reason that does not stop the run). That is final, whatever the
//   retry policy: StepFailed with willRetry false and tookEffect true, and the step is compensated (with a nil
//   output). An appending step is the exception: its only effect is its appends, and they did not commit, so its
//   failed attempt is retried within its policy like any other.
// - A step's or compensation's appends never go to a system stream ("$..."; the saga's own log, the index, the
//   resource locks): such an attempt fails before anything is written, and an action's is not retried.
// - Compensation runs in reverse step order and at least once per step; a compensation a crash interrupted runs
//   again with its attempt number.
// - Cancellation of the calling task stops the run: no new attempt starts (not even after a backoff pause that
//   ended normally), and recovery resumes the saga later. The attempt running when it came is recorded as it
//   ended, outside the cancelled task, when that is known: one whose action or compensation returned is recorded
//   completed (its effect happened), or, for an action whose result cannot be recorded, failed for good as having
//   taken effect; an atMostOnce action that threw is recorded failed, with a retry if its
//   policy has one left (a thrown error means no effect). Any other attempt (an atLeastOnce action or a
//   compensation that threw) is left open, as a crash leaves it, and runs again under the same key on resume. An
//   attempt whose record cannot be written is left open too, and resumed as after a crash (an atMostOnce action
//   is then failed).

import EventStore
import Foundation

struct SagaExecution: Sendable {
    let saga: ErasedSaga
    let session: any StreamSession
    let store: any EventStoring
    let clock: any SagaClock
    let hooks: SagaHooks
    let configuration: SagaRunnerConfiguration
    var state: SagaState
    /// Set while the steps of a parallel group run: each of them records through it.
    var journal: SagaJournal? = nil

    /// Runs until the saga finishes or is stuck.
    mutating func run() async throws -> SagaOutcome {
        while true {
            try Task.checkCancellation()
            switch state.status {
            case .running: try await advance()
            case .compensating: try await compensateNext()
            case .completed: return .completed
            case .resolved: return .resolved
            case .compensated:
                return .compensated(failedStep: stepName(state.failedStep), error: state.failure ?? "")
            case .stuck:
                return .stuck(step: stepName(state.stuckStep), error: state.stuckError ?? "")
            }
        }
    }

    func stepName(_ index: Int?) -> String {
        index.flatMap { state.stepNames.indices.contains($0) ? state.stepNames[$0] : nil } ?? ""
    }

    // MARK: Recording

    /// Appends `record` to the saga's log (with `others` in the same transaction) and applies it.
    mutating func record(_ record: SagaRecord, with others: [StreamAppend] = []) async throws {
        if let journal {
            state = try await journal.record(record, with: others)
        } else {
            state = try await Self.append(record, with: others, to: session, after: state)
        }
    }

    /// Like `record(_:with:)`, but appends from an unstructured task, so that the end of an attempt is recorded
    /// even when the calling task is cancelled (a backend may refuse work from a cancelled task).
    private mutating func recordOutsideCancellation(_ record: SagaRecord, with others: [StreamAppend] = [])
        async throws
    {
        let (journal, session, state) = (journal, session, state)
        self.state = try await Task {
            if let journal { return try await journal.record(record, with: others) }
            return try await Self.append(record, with: others, to: session, after: state)
        }.value
    }

    /// Appends `record` (with `others`, in one transaction) to the log `session` holds, expecting the version of
    /// `state`, and returns the state after it.
    /// - Throws: `invalidArgument`, writing nothing, if the log's replay would refuse `record` after `state` (a
    ///   definition that no longer matches the log can ask for one): a record written anyway would make the saga's
    ///   log unreadable for every later runner.
    static func append(
        _ record: SagaRecord, with others: [StreamAppend], to session: any StreamSession, after state: SagaState
    ) async throws -> SagaState {
        // The exact expected version makes the record's version this one.
        let (version, overflow) = state.version.addingReportingOverflow(1)
        var next = state
        do {
            guard !overflow else { throw EventStoreError.invalidArgument("the saga's log is at its last version") }
            try next.apply(record, version: version, stream: session.stream)
        } catch EventStoreError.corrupted(_, let detail) {
            throw EventStoreError.invalidArgument(
                "the saga's definition does not match its log: \(detail); nothing was written")
        }
        let part = StreamAppend(
            stream: session.stream, expectedVersion: .exact(state.version), events: [try record.eventData()])
        let results = try await session.append([part] + others)
        if results[0].version != version {
            next = state
            try next.apply(record, version: results[0].version, stream: session.stream)
        }
        return next
    }

    func indexClosed() throws -> StreamAppend {
        try Self.indexClosed(state.id, definition: saga.name)
    }

    /// The index event that closes saga `id` of `definition`.
    static func indexClosed(_ id: SagaID, definition: String) throws -> StreamAppend {
        StreamAppend(
            stream: try SagaStreams.index(), expectedVersion: .any,
            events: [
                try SagaIndexRecord(saga: id.rawValue, definition: definition).eventData(type: SagaIndexRecord.closed)
            ])
    }

    func stepRecord(_ kind: SagaEventKind, step: Int, attempt: Int, key: String) -> SagaRecord {
        var record = SagaRecord(kind, at: clock.now())
        record.step = step
        record.stepName = saga.steps[step].name
        record.attempt = attempt
        record.idempotencyKey = key
        return record
    }

    func event(
        _ step: Int, _ phase: StepPhase, attempt: Int, key: String, error: String? = nil, willRetry: Bool = false
    )
        -> SagaStepEvent
    {
        SagaStepEvent(
            sagaID: state.id, definition: saga.name, step: saga.steps[step].name, phase: phase, attempt: attempt,
            idempotencyKey: key, error: error, willRetry: willRetry, at: clock.now())
    }

    func invocation(_ step: Int, _ phase: StepPhase, attempt: Int) -> StepInvocation {
        // An action sees the outputs of the steps before its group only, never a sibling's (which may or may not
        // have completed yet); a compensation sees every output.
        let first = saga.stage(of: step).lowerBound
        let outputs = phase == .action ? state.outputs.filter { $0.key < first } : state.outputs
        return StepInvocation(
            sagaID: state.id, input: state.input, stepName: saga.steps[step].name, phase: phase, attempt: attempt,
            outputs: outputs, coder: saga.coder)
    }

    // MARK: Forward

    private mutating func advance() async throws {
        guard let index = state.nextStep else {
            try await record(SagaRecord(.sagaCompleted, at: clock.now()), with: [try indexClosed()])
            return
        }
        let stage = saga.stage(of: index)
        if stage.count > 1 {
            // A parallel group: its steps that have not completed run until each has completed or failed for good
            // (or was not started again because a sibling failed).
            try await advanceConcurrently(stage.filter { state.outputs[$0] == nil })
        } else {
            try await advanceStep(index)
        }
    }

    /// Runs the actions of `steps` concurrently, recording through one SagaJournal.
    private mutating func advanceConcurrently(_ steps: [Int]) async throws {
        let journal = SagaJournal(state: state, session: session)
        var member = self
        member.journal = journal
        let base = member
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in steps {
                group.addTask {
                    var sibling = base
                    do {
                        try await sibling.advanceStep(index)
                    } catch is GroupStopped {
                        // A sibling failed for good first: this step is not started again.
                    }
                }
            }
            try await group.waitForAll()
        }
        state = await journal.state
    }

    /// Runs step `index`'s action, with its retries, until it completes or fails for good.
    private mutating func advanceStep(_ index: Int) async throws {
        let step = saga.steps[index]
        var attempt = (state.attempts[index] ?? 0) + 1
        var resumed = false
        if let openAttempt = state.openSteps[index] {
            if step.options.semantics == .atMostOnce {
                try await recordFinalFailure(
                    index, attempt: openAttempt, error: "interrupted by a crash; an atMostOnce step never runs twice")
                return
            }
            attempt = openAttempt
            resumed = true
        }
        while true {
            let failure = try await runAttempt(
                index, .action, number: attempt, resumed: resumed, timeout: step.options.timeout
            ) { call in
                try await step.action(call)
            }
            guard let failure else { return }
            // An action that returned took effect: running it again would repeat the effect, so its failure to be
            // recorded is final, and marked so that the step is compensated.
            let tookEffect = failure is UnrecordedResult
            let final = failure is PermanentStepFailure || tookEffect
            let retry = attempt < step.options.retry.maximumAttempts && !final
            let (_, willRetry) = try await recordFailure(
                index, .action, number: attempt, error: failure, willRetry: retry, tookEffect: tookEffect)
            guard willRetry else { return }
            try await pause(step.options.retry, after: attempt)
            // A sibling failed for good during the pause: no new attempt (compensateNext records this one's failure
            // as final).
            if let journal, await journal.stopped { return }
            attempt += 1
            resumed = false
        }
    }

    // MARK: Compensation

    /// The steps still to compensate, last step first.
    var pendingCompensations: [Int] { Self.pendingCompensations(saga: saga, state: state) }

    /// The steps of `state` still to compensate, last step first.
    static func pendingCompensations(saga: ErasedSaga, state: SagaState) -> [Int] {
        let last = min(state.stepNames.count, saga.steps.count) - 1
        guard last >= 0 else { return [] }
        return stride(from: last, through: 0, by: -1).filter { index in
            guard saga.steps[index].compensation != nil else { return false }
            guard !state.compensated.contains(index), !state.skipped.contains(index) else { return false }
            return state.outputs[index] != nil
                || (state.finallyFailed.contains(index)
                    && (saga.steps[index].options.compensatesFailedAction || state.tookEffect.contains(index)))
        }
    }

    private mutating func compensateNext() async throws {
        if !state.openSteps.isEmpty {
            // A crash interrupted steps of a parallel group after a sibling had failed for good. Their attempts
            // finish first, as they would have without the crash (an atLeastOnce one runs again under its key, an
            // atMostOnce one is recorded failed), so that compensation knows whether each took effect.
            try await advanceConcurrently(state.openSteps.keys.sorted())
            return
        }
        if let index = state.retryPending.min() {
            // A group's step was waiting to retry when a sibling failed for good: it is never retried, and its last
            // attempt, which may have taken effect, now counts as failed for good (compensated if its options say so).
            try await recordFinalFailure(
                index, attempt: state.attempts[index] ?? 1,
                error: "not retried: another step of its parallel group failed for good")
            return
        }
        guard let index = pendingCompensations.first else {
            try await record(SagaRecord(.sagaCompensated, at: clock.now()), with: [try indexClosed()])
            return
        }
        let step = saga.steps[index]
        guard let compensation = step.compensation else {
            // pendingCompensations lists only steps with a compensation; returning here would loop forever.
            throw EventStoreError.invalidArgument("step \"\(step.name)\" has no compensation to run")
        }
        var attempt = (state.compensationAttempts[index] ?? 0) + 1
        var resumed = false
        if let open = state.openCompensation {
            guard open.index == index else {
                // The log has another step's compensation open: a definition changed since (that step lost its
                // compensation, or its compensatesFailedAction) must not skip it and write what replay refuses.
                let name = saga.steps.indices.contains(open.index) ? saga.steps[open.index].name : "#\(open.index)"
                throw EventStoreError.invalidArgument(
                    "the saga's log has the compensation of step \"\(name)\" open, but its "
                        + "definition would compensate \"\(step.name)\" next: the definition does not match the log")
            }
            attempt = open.attempt
            resumed = true
        }
        let base = state.compensationRetryBase[index] ?? 0
        let output = state.outputs[index]
        while true {
            let failure = try await runAttempt(
                index, .compensation, number: attempt, resumed: resumed, timeout: step.options.compensationTimeout
            ) { call in
                StepResult(output: { nil }, appends: try await compensation(call, output))
            }
            guard let failure else { return }
            let willRetry = attempt - base < step.options.compensationRetry.maximumAttempts
            let (error, _) = try await recordFailure(
                index, .compensation, number: attempt, error: failure, willRetry: willRetry)
            guard willRetry else {
                var stuck = SagaRecord(.sagaStuck, at: clock.now())
                stuck.step = index
                stuck.stepName = step.name
                stuck.error = error
                stuck.pending = Self.pendingCompensations(saga: saga, state: state)
                try await record(stuck)
                return
            }
            try await pause(step.options.compensationRetry, after: attempt - base)
            attempt += 1
            resumed = false
        }
    }

    // MARK: Attempts

    /// One attempt of an action or compensation: takes the step's resources, records its start, runs `body` under
    /// `timeout` and, on success, records its completion together with the appends `body` returned.
    /// - Returns: nil on success, or the error that failed the attempt: what `body` threw; a
    ///   ``PermanentStepFailure`` wrapping `invalidArgument` if `body` returned an append to a system stream
    ///   (nothing is written); for an action that returned, an ``UnrecordedResult`` if its output did not encode or
    ///   its StepCompleted was refused (its effect happened), or, for an appending step, an ``UncommittedResult``
    ///   (nothing was committed, so it took no effect); or the store's refusal of a compensation's StepCompensated.
    /// - Throws: only what stops the run: cancellation, or a failure to write the saga's own log.
    private mutating func runAttempt(
        _ index: Int, _ phase: StepPhase, number: Int, resumed: Bool, timeout: Duration?,
        _ body: @escaping @Sendable (StepInvocation) async throws -> StepResult
    ) async throws -> (any Error)? {
        // A cancelled run starts no new attempt.
        try Task.checkCancellation()
        let call = invocation(index, phase, attempt: number)
        let (startKind, doneKind): (SagaEventKind, SagaEventKind) =
            phase == .action ? (.stepStarted, .stepCompleted) : (.compensationStarted, .stepCompensated)
        do {
            let resources = try saga.steps[index].resources(call)
            let failure = try await StepAttempt.withResources(
                resources, store: store, sagaSession: session, configuration: configuration
            ) { () async throws -> (any Error)? in
                var started = stepRecord(startKind, step: index, attempt: number, key: call.idempotencyKey)
                started.resumed = resumed ? true : nil
                try await record(started)
                hooks.stepStarted?(event(index, phase, attempt: number, key: call.idempotencyKey))
                let value: StepResult
                do {
                    value = try await StepAttempt.withTimeout(timeout, clock: clock) { try await body(call) }
                } catch {
                    return error
                }
                // A step's appends never touch the saga machinery's streams (its log, the index, the resource locks):
                // a programming error, refused before anything is written, and not retried (for an action; a
                // compensation is retried as usual and, failing for good, leaves the saga stuck).
                if let system = value.appends.first(where: { $0.stream.isSystem }) {
                    return PermanentStepFailure(
                        EventStoreError.invalidArgument(
                            "step \"\(saga.steps[index].name)\" returned an append to the system stream "
                                + "\"\(system.stream)\"; a step's appends must go to user streams"))
                }
                // The attempt returned. A plain action's effect has happened; an appending step's effect is its
                // appends, which commit below or not at all.
                let appending = saga.steps[index].appending
                func unrecorded(_ error: any Error) -> any Error {
                    guard phase == .action else { return error }
                    return appending ? UncommittedResult(error: error) : UnrecordedResult(error: error)
                }
                var done = stepRecord(doneKind, step: index, attempt: number, key: call.idempotencyKey)
                do {
                    done.output = try value.output()
                } catch {
                    return unrecorded(error)
                }
                // The effect's appends and the completion commit together, under the resource locks; also when the
                // run was cancelled meanwhile: the attempt returned, so its effect happened, and leaving it open
                // would fail an atMostOnce step that took effect, or run an atLeastOnce one again.
                do {
                    try await recordOutsideCancellation(done, with: value.appends)
                } catch let error where !Self.isSagaFatal(error, sagaStream: session.stream) {
                    return unrecorded(error)
                }
                return nil
            }
            if failure == nil { hooks.stepFinished?(event(index, phase, attempt: number, key: call.idempotencyKey)) }
            return failure
        } catch let error where !Self.isSagaFatal(error, sagaStream: session.stream) {
            return error  // the resources could not be taken
        }
    }

    /// Records a failed attempt (StepFailed or CompensationFailed) and reports it to the hook.
    /// - Parameter tookEffect: for an action's final failure, that the action had returned (its effect happened)
    ///   but its result could not be recorded: the StepFailed says so, and the step is compensated.
    /// - Returns: the error as recorded, and whether another attempt follows: an action is not retried once the
    ///   saga is compensating (a sibling in its parallel group failed for good first; SagaJournal records that).
    /// - Throws: CancellationError instead, if the run was cancelled. Only an atMostOnce action's failure, or one
    ///   that took effect, is then recorded first (outside the cancelled task): an atMostOnce action that threw had
    ///   no effect, and recorded it is retried on resume within its policy, where left open it would be failed for
    ///   good as if a crash had interrupted it; one that took effect must be compensated, not run again. Any other
    ///   attempt is left open, to run again under the same key on resume.
    private mutating func recordFailure(
        _ index: Int, _ phase: StepPhase, number: Int, error: any Error, willRetry: Bool, tookEffect: Bool = false
    ) async throws -> (error: String, willRetry: Bool) {
        let cancelled = Task.isCancelled
        if cancelled, !tookEffect, phase != .action || saga.steps[index].options.semantics != .atMostOnce {
            throw CancellationError()
        }
        let key = invocation(index, phase, attempt: number).idempotencyKey
        var failed = stepRecord(
            phase == .action ? .stepFailed : .compensationFailed, step: index, attempt: number, key: key)
        failed.error = Self.describe(error)
        failed.willRetry = willRetry
        failed.tookEffect = tookEffect ? true : nil
        if cancelled {
            // Not written: the attempt stays open, and recovery treats it as a crash would have left it.
            do { try await recordOutsideCancellation(failed) } catch { throw CancellationError() }
        } else {
            try await record(failed)
        }
        // What was recorded: SagaJournal records an action's failure as final once the saga is compensating.
        let retries = phase == .action ? state.retryPending.contains(index) : willRetry
        hooks.stepFailed?(
            event(index, phase, attempt: number, key: key, error: failed.error, willRetry: retries))
        if cancelled { throw CancellationError() }
        return (failed.error ?? "", retries)
    }

    /// Records that attempt `attempt` of step `index`'s action failed for good with `error`, for a reason decided here
    /// rather than by running it, and reports it to the hook.
    private mutating func recordFinalFailure(_ index: Int, attempt: Int, error: String) async throws {
        let key = invocation(index, .action, attempt: attempt).idempotencyKey
        var failed = stepRecord(.stepFailed, step: index, attempt: attempt, key: key)
        failed.error = error
        failed.willRetry = false
        try await record(failed)
        hooks.stepFailed?(event(index, .action, attempt: attempt, key: key, error: error))
    }

    /// Waits out the backoff after failed attempt `attempt`, keeping the saga's lease alive. In a parallel group, the
    /// pause ends early if a sibling fails for good meanwhile.
    /// - Throws: CancellationError if the run was cancelled, however the wait ended (`untilStopped` returns
    ///   normally on cancellation, and may win the race against the clock's sleep): no attempt follows.
    private func pause(_ policy: RetryPolicy, after attempt: Int) async throws {
        let duration = policy.backoff(afterAttempt: attempt, random: configuration.random())
        guard let journal else {
            try await StepAttempt.pause(for: duration, clock: clock, session: session, configuration: configuration)
            try Task.checkCancellation()
            return
        }
        let (clock, session, configuration) = (clock, session, configuration)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                try await StepAttempt.pause(for: duration, clock: clock, session: session, configuration: configuration)
            }
            group.addTask { await journal.untilStopped() }
            try await group.next()
            group.cancelAll()
        }
        try Task.checkCancellation()
    }

    // MARK: Helpers

    /// Whether `error` means this runner can no longer advance the saga (rather than that the attempt failed).
    static func isSagaFatal(_ error: any Error, sagaStream: StreamName) -> Bool {
        if error is CancellationError || error is GroupStopped { return true }
        guard let error = error as? EventStoreError else { return false }
        switch error {
        case .sessionExpired, .sessionClosed, .storeFailed, .storeClosed, .corrupted, .ioFailure, .backend:
            return true
        case .wrongExpectedVersion(let stream, _, _), .streamLocked(let stream, _, _):
            return stream == sagaStream
        default:
            return false
        }
    }

    static func describe(_ error: any Error) -> String {
        let text = String(describing: error)
        return text.utf8.count <= 4_000 ? text : String(text.prefix(4_000)) + "..."
    }
}
