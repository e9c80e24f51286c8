// One saga with a damaged log must not hide every stuck saga from the operator (twentieth session's review).

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite struct OperatorIsolationTests {
    @Test func aDamagedLogDoesNotHideTheOtherStuckSagasFromTheOperator() async throws {
        let store = makeStore()
        let bank = Bank()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        // Saga "a": stuck, waiting for an operator.
        bank.fail("credit")
        bank.fail("undo-debit")
        let undo = StepOptions(retry: .never, compensationRetry: RetryPolicy(maximumAttempts: 1, initialBackoff: .zero))
        let saga = transferSaga(bank: bank, options: ["debit": undo])
        let stuck = try sagaID("a-stuck")
        #expect(try await runner.start(saga, id: stuck, input: sampleTransfer) == .stuck(step: "debit", error: "undo-debit refused"))
        // Saga "b": started later, then its log is damaged (a record no runner writes).
        let damaged = try sagaID("b-damaged")
        try await runner.create(saga, id: damaged, input: sampleTransfer)
        try await appendRecord(store, damaged, "SagaCompleted", [:])

        // Recovery isolates the damaged saga (reports it as failed) and goes on with the others...
        let recovered = try await runner.recover()
        #expect(recovered.count == 2)
        // ...but the operator console does not: one damaged log hides every stuck saga.
        do {
            let listed = try await runner.stuckSagas()
            #expect(listed.map(\.sagaID) == [stuck])
        } catch {
            Issue.record("stuckSagas() failed for every saga because of one: \(error)")
        }
    }
}
