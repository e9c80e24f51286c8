// The operator's API for sagas that need a person: list the stuck ones, retry one, skip a step's compensation,
// or mark one resolved.
//
// Invariants:
// - Every operator action takes the saga's session lock and appends with the expected version, like a runner, and
//   is recorded in the saga's log (SagaRetried, CompensationSkipped, SagaResolved) with the operator's note.
// - An action is refused with a typed error, and nothing is written, unless the saga is Stuck.
// - Marking a saga resolved closes it in the index, in the same transaction.

import EventStore
import Foundation

/// A saga waiting for an operator.
public struct StuckSaga: Sendable, Hashable {
    /// The saga.
    public var sagaID: SagaID
    /// Its definition's name.
    public var definition: String
    /// The step whose compensation failed.
    public var step: String
    /// The last error of that compensation.
    public var error: String
    /// The steps whose compensation is still to run, the stuck one first: as the runner that got stuck recorded
    /// them, so a runner without the saga's definition lists them too.
    public var pendingCompensations: [String]

    /// Creates a stuck-saga report entry.
    public init(sagaID: SagaID, definition: String, step: String, error: String, pendingCompensations: [String]) {
        self.sagaID = sagaID
        self.definition = definition
        self.step = step
        self.error = error
        self.pendingCompensations = pendingCompensations
    }
}

extension SagaRunner {
    /// Every saga that is Stuck, oldest first. A saga whose log cannot be replayed (damaged, or read as empty) is
    /// left out, so that it does not hide the others: ``recover()`` reports it as
    /// ``SagaRecovery/Result/failed(_:)``, naming the problem.
    public func stuckSagas() async throws -> [StuckSaga] {
        var stuck: [StuckSaga] = []
        for saga in try await openSagas().open {
            let state: SagaState
            do {
                state = try await load(saga.id)
            } catch EventStoreError.corrupted, EventStoreError.streamNotFound {
                continue
            }
            guard state.status == .stuck else { continue }
            let pending = pendingCompensations(of: state)
            stuck.append(
                StuckSaga(
                    sagaID: saga.id, definition: state.definition,
                    step: state.stuckStep.map { state.stepNames[$0] } ?? "", error: state.stuckError ?? "",
                    pendingCompensations: pending))
        }
        return stuck
    }

    /// Retries the compensation of a stuck saga, with a fresh retry budget, and runs it to its outcome.
    public func retry(_ id: SagaID, note: String? = nil) async throws -> SagaOutcome {
        try await withExecution(id, lockWait: configuration.lockWait) { execution in
            try Self.requireStuck(execution.state)
            var retried = SagaRecord(.sagaRetried, at: clock.now())
            retried.note = note
            try await execution.record(retried)
            return try await execution.run()
        }
    }

    /// Skips the compensation of `step` in a stuck saga (the operator undid it by hand, or it needs no undoing),
    /// then continues compensating the earlier steps. Compensations run from the last step back, so only the next
    /// one pending (the one the saga is stuck on) can be skipped: skipping an earlier one would run the stuck one
    /// again without an operator's ``retry(_:note:)``, beyond its retry policy.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` if the saga is not stuck or `step`'s compensation is not
    ///   the next one pending.
    public func skipCompensation(ofStep step: String, in id: SagaID, note: String? = nil) async throws
        -> SagaOutcome
    {
        try await withExecution(id, lockWait: configuration.lockWait) { execution in
            try Self.requireStuck(execution.state)
            let pending = execution.pendingCompensations
            guard let index = execution.state.stepNames.firstIndex(of: step), pending.contains(index) else {
                throw EventStoreError.invalidArgument("saga \(id) has no pending compensation for step \"\(step)\"")
            }
            guard index == pending.first else {
                let next = execution.state.stepNames[pending[0]]
                throw EventStoreError.invalidArgument(
                    "saga \(id) is stuck on the compensation of step \"\(next)\", which runs before \"\(step)\"'s: "
                        + "skip or retry \"\(next)\" first")
            }
            var skipped = execution.stepRecord(
                .compensationSkipped, step: index, attempt: execution.state.compensationAttempts[index] ?? 0,
                key: "\(id.rawValue)/\(step)/compensation")
            skipped.note = note
            try await execution.record(skipped)
            return try await execution.run()
        }
    }

    /// Marks a stuck saga resolved by hand: it is finished, and recovery no longer lists it. It runs no step, so
    /// the saga's definition need not be registered with this runner (a console, or a retired workflow).
    public func markResolved(_ id: SagaID, note: String) async throws {
        try await withLockedLog(id, lockWait: configuration.lockWait) { state, session in
            try Self.requireStuck(state)
            var resolved = SagaRecord(.sagaResolved, at: clock.now())
            resolved.note = note
            _ = try await SagaExecution.append(
                resolved, with: [try SagaExecution.indexClosed(id, definition: state.definition)], to: session,
                after: state)
        }
    }

    private static func requireStuck(_ state: SagaState) throws {
        guard state.status == .stuck else {
            throw EventStoreError.invalidArgument("saga \(state.id) is \(state.status.rawValue), not stuck")
        }
    }

    /// As the saga's SagaStuck recorded them; for logs from before that was recorded, from the registered
    /// definition, or failing that every step that took effect and was neither compensated nor skipped (the log
    /// alone cannot tell which steps have a compensation).
    private func pendingCompensations(of state: SagaState) -> [String] {
        if let pending = state.stuckPending { return pending.map { state.stepNames[$0] } }
        if let saga = try? definition(for: state) {
            return SagaExecution.pendingCompensations(saga: saga, state: state).map { state.stepNames[$0] }
        }
        return state.stepNames.indices.reversed().filter { index in
            (state.outputs[index] != nil || state.finallyFailed.contains(index))
                && !state.compensated.contains(index) && !state.skipped.contains(index)
        }.map { state.stepNames[$0] }
    }
}
