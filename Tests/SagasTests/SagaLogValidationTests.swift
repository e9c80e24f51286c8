// SagaState.apply refuses, as corruption, records a runner could not have written in the saga's phase, and reads
// the ones it could.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

private func readsAsCorrupted(_ store: KeyValueEventStore, _ id: SagaID) async -> Bool {
    do {
        _ = try await SagaRunner(store: store, clock: ManualSagaClock()).status(of: id)
        return false
    } catch EventStoreError.corrupted {
        return true
    } catch {
        return false
    }
}

@Suite(.timeLimit(.minutes(10))) struct SagaLogValidationTests {
    /// A saga created but not run: running, no step started.
    static var whileRunning: [(String, [String: Any])] {
        [
        ("StepStarted", ["step": 0, "attempt": 2]),  // attempt 1 comes first
        ("StepCompleted", ["step": 0, "attempt": 1]),  // never started
        ("CompensationStarted", ["step": 0, "attempt": 1]),  // not compensating
        ("CompensationFailed", ["step": 0, "attempt": 1]),
        ("SagaCompensated", [:]),
        ("SagaStuck", ["step": 0, "error": "x"]),
        ("SagaRetried", [:]),  // only while stuck
        ("CompensationSkipped", ["step": 0, "attempt": 0]),
        ("SagaResolved", [:]),
        ]
    }

    @Test(arguments: 0..<whileRunning.count) func aRecordARunningSagaCannotTakeIsCorruption(case index: Int)
        async throws
    {
        let store = makeStore()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let id = try sagaID()
        try await runner.create(transferSaga(bank: Bank()), id: id, input: sampleTransfer)
        let (kind, fields) = Self.whileRunning[index]
        try await appendRecord(store, id, kind, fields)
        #expect(await readsAsCorrupted(store, id), "\(kind) \(fields) was accepted")
    }

    /// A stuck saga: credit failed, debit's compensation failed without retries.
    static var whileStuck: [(String, [String: Any])] {
        [
        ("StepCompensated", ["step": 1, "attempt": 1]),  // no compensation is running
        ("CompensationStarted", ["step": 1, "attempt": 2]),  // only after an operator's retry
        ("StepStarted", ["step": 2, "attempt": 2]),
        ("SagaCompleted", [:]),
        ("SagaCompensated", [:]),
        ("StepFailed", ["step": 0, "attempt": 2, "willRetry": false]),  // only forward, never while stuck
        ]
    }

    @Test(arguments: 0..<whileStuck.count) func aRecordAStuckSagaCannotTakeIsCorruption(case index: Int)
        async throws
    {
        let store = makeStore()
        let bank = Bank()
        bank.fail("credit")
        bank.fail("undo-debit")
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let id = try sagaID()
        let noRetry = StepOptions(retry: .never, compensationRetry: .never)
        let saga = transferSaga(bank: bank, options: ["reserve": noRetry, "debit": noRetry, "credit": noRetry])
        let outcome = try await runner.start(saga, id: id, input: sampleTransfer)
        #expect(outcome == .stuck(step: "debit", error: "undo-debit refused"))
        let (kind, fields) = Self.whileStuck[index]
        try await appendRecord(store, id, kind, fields)
        #expect(await readsAsCorrupted(store, id), "\(kind) \(fields) was accepted")
    }

    @Test func aStuckSagaStillTakesEveryOperatorAction() async throws {
        let store = makeStore()
        let bank = Bank()
        bank.fail("credit")
        bank.fail("undo-debit", times: 1)
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let id = try sagaID()
        let noRetry = StepOptions(retry: .never, compensationRetry: .never)
        let saga = transferSaga(bank: bank, options: ["reserve": noRetry, "debit": noRetry, "credit": noRetry])
        let outcome = try await runner.start(saga, id: id, input: sampleTransfer)
        #expect(outcome == .stuck(step: "debit", error: "undo-debit refused"))
        #expect(try await runner.retry(id) == .compensated(failedStep: "credit", error: "credit refused"))
        #expect(bank.names == ["reserve", "debit", "credit", "undo-debit", "undo-debit", "undo-reserve"])
    }
}
