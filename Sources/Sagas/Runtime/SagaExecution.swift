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
// - Compensation runs in reverse step order and at least once per step; a compensation a crash interrupted runs
//   again with its attempt number.
// - Cancellation of the calling task stops the run without recording a failure; recovery resumes it later.

import EventStore
import Foundation

struct SagaExecution {
    let saga: ErasedSaga
    let session: any StreamSession
    let store: any EventStoring
    let clock: any SagaClock
    let hooks: SagaHooks
    let configuration: SagaRunnerConfiguration
    var state: SagaState

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
        let part = StreamAppend(stream: session.stream, expectedVersion: .exact(state.version), events: [try record.eventData()])
        let results = try await session.append([part] + others)
        try state.apply(record, version: results[0].version, stream: session.stream)
    }

    func indexClosed() throws -> StreamAppend {
        StreamAppend(
            stream: try SagaStreams.index(), expectedVersion: .any,
            events: [try SagaIndexRecord(saga: state.id.rawValue, definition: saga.name).eventData(type: SagaIndexRecord.closed)])
    }

    func stepRecord(_ kind: SagaEventKind, step: Int, attempt: Int, key: String) -> SagaRecord {
        var record = SagaRecord(kind, at: clock.now())
        record.step = step
        record.stepName = saga.steps[step].name
        record.attempt = attempt
        record.idempotencyKey = key
        return record
    }

    func event(_ step: Int, _ phase: StepPhase, attempt: Int, key: String, error: String? = nil, willRetry: Bool = false)
        -> SagaStepEvent
    {
        SagaStepEvent(
            sagaID: state.id, definition: saga.name, step: saga.steps[step].name, phase: phase, attempt: attempt,
            idempotencyKey: key, error: error, willRetry: willRetry, at: clock.now())
    }

    func invocation(_ step: Int, _ phase: StepPhase, attempt: Int) -> StepInvocation {
        StepInvocation(
            sagaID: state.id, input: state.input, stepName: saga.steps[step].name, phase: phase, attempt: attempt,
            outputs: state.outputs, coder: saga.coder)
    }

    // MARK: Forward

    private mutating func advance() async throws {
        guard let index = state.nextStep else {
            try await record(SagaRecord(.sagaCompleted, at: clock.now()), with: [try indexClosed()])
            return
        }
        let step = saga.steps[index]
        var attempt = (state.attempts[index] ?? 0) + 1
        var resumed = false
        if let open = state.openStep, open.index == index {
            let key = invocation(index, .action, attempt: open.attempt).idempotencyKey
            if step.options.semantics == .atMostOnce {
                let error = "interrupted by a crash; an atMostOnce step never runs twice"
                var failed = stepRecord(.stepFailed, step: index, attempt: open.attempt, key: key)
                failed.error = error
                failed.willRetry = false
                try await record(failed)
                hooks.stepFailed?(event(index, .action, attempt: open.attempt, key: key, error: error))
                return
            }
            attempt = open.attempt
            resumed = true
        }
        while true {
            let call = invocation(index, .action, attempt: attempt)
            let result: Result<(output: Data, appends: [StreamAppend]), any Error>
            do {
                let resources = try step.resources(call)
                result = try await StepAttempt.withResources(
                    resources, store: store, sagaSession: session, configuration: configuration
                ) { () async throws -> Result<(output: Data, appends: [StreamAppend]), any Error> in
                    var started = stepRecord(.stepStarted, step: index, attempt: attempt, key: call.idempotencyKey)
                    started.resumed = resumed ? true : nil
                    try await record(started)
                    hooks.stepStarted?(event(index, .action, attempt: attempt, key: call.idempotencyKey))
                    let outcome = await Self.attempt(step.options.timeout, clock: clock) {
                        try await step.action(call)
                    }
                    if case .success(let value) = outcome {
                        // The effect's appends and StepCompleted commit together, under the resource locks.
                        var completed = stepRecord(.stepCompleted, step: index, attempt: attempt, key: call.idempotencyKey)
                        completed.output = value.output
                        do {
                            try await record(completed, with: value.appends)
                        } catch let error where !Self.isSagaFatal(error, sagaStream: session.stream) {
                            return .failure(error)
                        }
                    }
                    return outcome
                }
            } catch let error where !Self.isSagaFatal(error, sagaStream: session.stream) {
                result = .failure(error)  // the resources could not be taken
            }
            switch result {
            case .success:
                hooks.stepFinished?(event(index, .action, attempt: attempt, key: call.idempotencyKey))
                return
            case .failure(let error):
                if Task.isCancelled { throw CancellationError() }
                let willRetry = attempt < step.options.retry.maximumAttempts
                var failed = stepRecord(.stepFailed, step: index, attempt: attempt, key: call.idempotencyKey)
                failed.error = Self.describe(error)
                failed.willRetry = willRetry
                try await record(failed)
                hooks.stepFailed?(
                    event(index, .action, attempt: attempt, key: call.idempotencyKey, error: failed.error, willRetry: willRetry))
                guard willRetry else { return }
                try await StepAttempt.pause(
                    for: step.options.retry.backoff(afterAttempt: attempt, random: configuration.random()), clock: clock,
                    session: session, configuration: configuration)
                attempt += 1
                resumed = false
            }
        }
    }

    // MARK: Compensation

    /// The steps still to compensate, last step first.
    var pendingCompensations: [Int] { Self.pendingCompensations(saga: saga, state: state) }

    /// The steps of `state` still to compensate, last step first.
    static func pendingCompensations(saga: ErasedSaga, state: SagaState) -> [Int] {
        let last = min(state.failedStep ?? (state.stepNames.count - 1), saga.steps.count - 1)
        return stride(from: last, through: 0, by: -1).filter { index in
            guard saga.steps[index].compensation != nil else { return false }
            guard !state.compensated.contains(index), !state.skipped.contains(index) else { return false }
            return state.outputs[index] != nil
                || (index == state.failedStep && saga.steps[index].options.compensatesFailedAction)
        }
    }

    private mutating func compensateNext() async throws {
        guard let index = pendingCompensations.first else {
            try await record(SagaRecord(.sagaCompensated, at: clock.now()), with: [try indexClosed()])
            return
        }
        let step = saga.steps[index]
        guard let compensation = step.compensation else { return }
        var attempt = (state.compensationAttempts[index] ?? 0) + 1
        var resumed = false
        if let open = state.openCompensation, open.index == index {
            attempt = open.attempt
            resumed = true
        }
        let base = state.compensationRetryBase[index] ?? 0
        let output = state.outputs[index]
        while true {
            let call = invocation(index, .compensation, attempt: attempt)
            let result: Result<[StreamAppend], any Error>
            do {
                let resources = try step.resources(call)
                result = try await StepAttempt.withResources(
                    resources, store: store, sagaSession: session, configuration: configuration
                ) { () async throws -> Result<[StreamAppend], any Error> in
                    var started = stepRecord(.compensationStarted, step: index, attempt: attempt, key: call.idempotencyKey)
                    started.resumed = resumed ? true : nil
                    try await record(started)
                    hooks.stepStarted?(event(index, .compensation, attempt: attempt, key: call.idempotencyKey))
                    let outcome = await Self.attempt(step.options.compensationTimeout, clock: clock) {
                        try await compensation(call, output)
                    }
                    if case .success(let appends) = outcome {
                        let done = stepRecord(.stepCompensated, step: index, attempt: attempt, key: call.idempotencyKey)
                        do {
                            try await record(done, with: appends)
                        } catch let error where !Self.isSagaFatal(error, sagaStream: session.stream) {
                            return .failure(error)
                        }
                    }
                    return outcome
                }
            } catch let error where !Self.isSagaFatal(error, sagaStream: session.stream) {
                result = .failure(error)
            }
            switch result {
            case .success:
                hooks.stepFinished?(event(index, .compensation, attempt: attempt, key: call.idempotencyKey))
                return
            case .failure(let error):
                if Task.isCancelled { throw CancellationError() }
                let willRetry = attempt - base < step.options.compensationRetry.maximumAttempts
                var failed = stepRecord(.compensationFailed, step: index, attempt: attempt, key: call.idempotencyKey)
                failed.error = Self.describe(error)
                failed.willRetry = willRetry
                try await record(failed)
                hooks.stepFailed?(
                    event(index, .compensation, attempt: attempt, key: call.idempotencyKey, error: failed.error,
                        willRetry: willRetry))
                guard willRetry else {
                    var stuck = SagaRecord(.sagaStuck, at: clock.now())
                    stuck.step = index
                    stuck.stepName = step.name
                    stuck.error = failed.error
                    try await record(stuck)
                    return
                }
                try await StepAttempt.pause(
                    for: step.options.compensationRetry.backoff(afterAttempt: attempt - base, random: configuration.random()),
                    clock: clock, session: session, configuration: configuration)
                attempt += 1
                resumed = false
            }
        }
    }

    // MARK: Helpers

    /// Runs one attempt, turning its error (or its timeout) into a value.
    private static func attempt<Value: Sendable>(
        _ timeout: Duration?, clock: any SagaClock, _ body: @escaping @Sendable () async throws -> Value
    ) async -> Result<Value, any Error> {
        do {
            return .success(try await StepAttempt.withTimeout(timeout, clock: clock, body))
        } catch {
            return .failure(error)
        }
    }

    /// Whether `error` means this runner can no longer advance the saga (rather than that the attempt failed).
    static func isSagaFatal(_ error: any Error, sagaStream: StreamName) -> Bool {
        if error is CancellationError { return true }
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
