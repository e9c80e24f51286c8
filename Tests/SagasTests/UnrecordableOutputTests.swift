// an action that returned (its effect happened) but whose output the runner then cannot record.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite struct UnrecordableOutputTests {
    /// A store whose events may be at most 4 KiB, with a frozen clock (as makeStore()).
    func smallEventStore() -> KeyValueEventStore {
        let now = Date()
        return KeyValueEventStore(
            backend: InMemoryKeyValueStore(clock: { now }), limits: EventStoreLimits(maximumEventSize: 4_096),
            clock: { now })
    }

    func saga(bank: Bank, debit options: StepOptions) -> SagaDefinition<Transfer> {
        var saga = SagaDefinition<Transfer>("unrecordable")
        saga.step("reserve", options: StepOptions(retry: .never)) { step in
            try bank.call("reserve", key: step.idempotencyKey)
            return Receipt(reference: "r")
        } compensation: { step, _ in
            try bank.call("undo-reserve", key: step.idempotencyKey)
        }
        saga.step("debit", options: options) { step in
            try bank.call("debit", key: step.idempotencyKey)  // the effect happens here
            // The action returns normally, but its output is larger than one event may be.
            return Receipt(reference: String(repeating: "x", count: 10_000))
        } compensation: { step, _ in
            try bank.call("undo-debit", key: step.idempotencyKey)
        }
        return saga
    }

    @Test func anAtMostOnceActionThatReturnedIsNotRunAgainBecauseItsOutputCouldNotBeRecorded() async throws {
        let store = smallEventStore()
        let bank = Bank()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let options = StepOptions(
            semantics: .atMostOnce, retry: RetryPolicy(maximumAttempts: 3, initialBackoff: .zero, jitter: 0))
        _ = try await runner.start(saga(bank: bank, debit: options), id: try sagaID(), input: sampleTransfer)
        // The action returned each time: its effect happened. An atMostOnce effect must happen at most once.
        #expect(bank.names.filter { $0 == "debit" }.count == 1, "calls: \(bank.names)")
    }

    @Test func aCompensatedSagaUndoesAnEffectWhoseOutputCouldNotBeRecorded() async throws {
        let store = smallEventStore()
        let bank = Bank()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let outcome = try await runner.start(
            saga(bank: bank, debit: StepOptions(retry: .never)), id: try sagaID(), input: sampleTransfer)
        guard case .compensated(let failedStep, _) = outcome else {
            Issue.record("outcome \(outcome)")
            return
        }
        #expect(failedStep == "debit")
        // "a compensated saga has an undo for every effect": debit's action returned, so it took effect.
        #expect(bank.names.contains("debit"))
        #expect(bank.names.contains("undo-debit"), "calls: \(bank.names)")
    }
    struct Quote: Codable, Sendable { var rate: Double }

    @Test func anAtMostOnceActionWhoseOutputDoesNotEncodeIsNotRunAgain() async throws {
        let bank = Bank()
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        var saga = SagaDefinition<Transfer>("unencodable")
        saga.step(
            "debit",
            options: StepOptions(
                semantics: .atMostOnce, retry: RetryPolicy(maximumAttempts: 3, initialBackoff: .zero, jitter: 0))
        ) { step in
            try bank.call("debit", key: step.idempotencyKey)  // the effect happens here
            return Quote(rate: .nan)  // JSON cannot hold NaN: the runner's encoding of the output throws
        } compensation: { step, _ in
            try bank.call("undo-debit", key: step.idempotencyKey)
        }
        _ = try await runner.start(saga, id: try sagaID(), input: sampleTransfer)
        #expect(bank.names.filter { $0 == "debit" }.count == 1, "calls: \(bank.names)")
    }

    @Test func theFailureRecordSaysTheActionTookEffectAndIsNotRetried() async throws {
        let bank = Bank()
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        var saga = SagaDefinition<Transfer>("unencodable-at-least-once")
        saga.step(
            "debit", options: StepOptions(retry: RetryPolicy(maximumAttempts: 3, initialBackoff: .zero, jitter: 0))
        ) { step in
            try bank.call("debit", key: step.idempotencyKey)
            return Quote(rate: .nan)
        } compensation: { step, quote in
            #expect(quote == nil)  // the output was never recorded
            try bank.call("undo-debit", key: step.idempotencyKey)
        }
        let id = try sagaID()
        let outcome = try await runner.start(saga, id: id, input: sampleTransfer)
        guard case .compensated(let failedStep, let error) = outcome else {
            Issue.record("outcome \(outcome)")
            return
        }
        #expect(failedStep == "debit")
        #expect(error.hasPrefix("the action returned but its output could not be recorded"), "\(error)")
        #expect(bank.names == ["debit", "undo-debit"])
        let failures = try await runner.history(of: id).filter { $0.kind == .stepFailed }
        #expect(failures.map(\.willRetry) == [false])
        #expect(failures.map(\.tookEffect) == [true])
    }

    @Test func anAppendingStepWhoseOutputDoesNotEncodeWritesNothingAndIsRetried() async throws {
        let store = makeStore()
        let account = try StreamName("account-dave")
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        var saga = SagaDefinition<Transfer>("unencodable-appending")
        saga.appendingStep(
            "deposit", options: StepOptions(retry: RetryPolicy(maximumAttempts: 2, initialBackoff: .zero, jitter: 0))
        ) { _ in
            StepEffect(
                output: Quote(rate: .nan),
                appends: [StreamAppend(stream: account, expectedVersion: .any,
                                       events: [EventData(type: "Deposited", data: Data("{}".utf8))])])
        } compensation: { _, _ in
            [StreamAppend(stream: account, expectedVersion: .any,
                          events: [EventData(type: "DepositReversed", data: Data("{}".utf8))])]
        }
        let id = try sagaID()
        let outcome = try await runner.start(saga, id: id, input: sampleTransfer)
        guard case .compensated(let failedStep, let error) = outcome else {
            Issue.record("outcome \(outcome)")
            return
        }
        #expect(failedStep == "deposit")
        #expect(error.contains("nothing was written"), "\(error)")
        // Its only effect, the appends, never committed: nothing to undo, and retrying it was harmless.
        #expect(try await store.read(account).isEmpty)
        let failures = try await runner.history(of: id).filter { $0.kind == .stepFailed }
        #expect(failures.map(\.willRetry) == [true, false])
        #expect(failures.map(\.tookEffect) == [false, false])
    }

    /// A saga created, its reserve step completed and its debit step failed for good, written record by record.
    func replayedFailure(_ failure: [String: Any]) async throws -> (outcome: SagaOutcome, calls: [String]) {
        let store = makeStore()
        let bank = Bank()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let id = try sagaID()
        let saga = transferSaga(bank: bank)
        try runner.register(saga)
        try await runner.create(saga, id: id, input: sampleTransfer)
        let receipt = try JSONEncoder().encode(Receipt(reference: "reserve-10")).base64EncodedString()
        try await appendRecord(store, id, "StepStarted", ["step": 0, "stepName": "reserve", "attempt": 1])
        try await appendRecord(
            store, id, "StepCompleted", ["step": 0, "stepName": "reserve", "attempt": 1, "output": receipt])
        try await appendRecord(store, id, "StepStarted", ["step": 1, "stepName": "debit", "attempt": 1])
        try await appendRecord(store, id, "StepFailed", failure)
        let outcome = try await runner.resume(id)
        return (outcome, bank.names)
    }

    @Test func anOldStepFailedWithoutTookEffectStillReplaysAsBefore() async throws {
        // As every runner wrote StepFailed before tookEffect was recorded: the field is absent.
        let (outcome, calls) = try await replayedFailure(
            ["step": 1, "stepName": "debit", "attempt": 1, "error": "declined", "willRetry": false])
        #expect(outcome == .compensated(failedStep: "debit", error: "declined"))
        // It reads as false: the failed debit is not compensated (it does not set compensatesFailedAction).
        #expect(calls == ["undo-reserve"])
    }

    @Test func aStepFailedThatTookEffectIsCompensated() async throws {
        let (outcome, calls) = try await replayedFailure(
            ["step": 1, "stepName": "debit", "attempt": 1, "error": "x", "willRetry": false, "tookEffect": true])
        #expect(outcome == .compensated(failedStep: "debit", error: "x"))
        #expect(calls == ["undo-debit", "undo-reserve"])
    }

    @Test func anUnrecordableResultIsRecordedAsTakingEffectEvenWhenTheRunIsCancelled() async throws {
        let store = makeStore()
        let bank = Bank()
        let (signals, signal) = AsyncStream.makeStream(of: String.self)
        var saga = SagaDefinition<Transfer>("unencodable-cancelled")
        saga.step("debit", options: StepOptions(retry: .never)) { step in
            try bank.call("debit", key: step.idempotencyKey)
            signal.yield(step.idempotencyKey)
            if step.idempotencyKey.hasSuffix("/1") && bank.names.count == 1 {
                try? await Task.sleep(for: .seconds(3_600))  // until the run is cancelled; then it returns anyway
            }
            return Quote(rate: .nan)
        } compensation: { step, _ in
            try bank.call("undo-debit", key: step.idempotencyKey)
        }
        let id = try sagaID()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let run = Task { try await runner.start(saga, id: id, input: sampleTransfer) }
        _ = await next(signals)
        run.cancel()
        _ = try? await run.value
        // Recorded final, as having taken effect: not left open for an atLeastOnce re-run on resume.
        let failures = try await runner.history(of: id).filter { $0.kind == .stepFailed }
        #expect(failures.map(\.tookEffect) == [true])
        let outcome = try await runner.resume(id)
        guard case .compensated(let failedStep, let error) = outcome else {
            Issue.record("outcome \(outcome)")
            return
        }
        #expect(failedStep == "debit")
        #expect(error.hasPrefix("the action returned but its output could not be recorded"), "\(error)")
        #expect(bank.names == ["debit", "undo-debit"])
    }
}
