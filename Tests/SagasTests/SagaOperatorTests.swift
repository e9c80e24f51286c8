// Compensations that cannot succeed: the saga becomes Stuck, is listed for an operator, and the operator's
// retry, skip and resolve each move it on.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Synchronization
import Testing

@Suite(.timeLimit(.minutes(10))) struct SagaOperatorTests {
    /// A transfer whose credit fails and whose debit's compensation fails (twice per run) until `bank` allows it.
    func stuckTransfer(bank: Bank, runner: SagaRunner, id: SagaID) async throws -> SagaOutcome {
        bank.fail("credit")
        bank.fail("undo-debit")
        let undo = StepOptions(retry: .never, compensationRetry: RetryPolicy(maximumAttempts: 2, initialBackoff: .zero))
        let saga = transferSaga(bank: bank, options: ["debit": undo])
        return try await runner.start(saga, id: id, input: sampleTransfer)
    }

    @Test func aFailingCompensationEndsStuckAndAnOperatorRetrySucceeds() async throws {
        let bank = Bank()
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        let id = try sagaID("stuck")
        #expect(
            try await stuckTransfer(bank: bank, runner: runner, id: id)
                == .stuck(step: "debit", error: "undo-debit refused"))
        #expect(try await runner.status(of: id) == .stuck)
        #expect(bank.names == ["reserve", "debit", "credit", "undo-debit", "undo-debit"])

        let stuck = try await runner.stuckSagas()
        #expect(stuck.map(\.sagaID) == [id])
        #expect(stuck.first?.definition == "transfer")
        #expect(stuck.first?.step == "debit")
        #expect(stuck.first?.error == "undo-debit refused")
        #expect(stuck.first?.pendingCompensations == ["debit", "reserve"])

        bank.fail("undo-debit", times: 0)
        #expect(
            try await runner.retry(id, note: "bank is back")
                == .compensated(failedStep: "credit", error: "credit refused"))
        #expect(Array(bank.names.suffix(2)) == ["undo-debit", "undo-reserve"])
        #expect(
            bank.calls.filter { $0.name == "undo-debit" }.map(\.key) == [
                "stuck/debit/compensation/1", "stuck/debit/compensation/2", "stuck/debit/compensation/3",
            ])
        #expect(try await runner.stuckSagas().isEmpty)
        let history = try await runner.history(of: id)
        #expect(history.contains { $0.kind == .sagaStuck && $0.error == "undo-debit refused" })
        #expect(history.contains { $0.kind == .sagaRetried && $0.note == "bank is back" })
        #expect(history.last?.kind == .sagaCompensated)
    }

    @Test func anOperatorRetryGetsAFreshRetryBudgetAndCanEndStuckAgain() async throws {
        let bank = Bank()
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        let id = try sagaID()
        _ = try await stuckTransfer(bank: bank, runner: runner, id: id)
        #expect(try await runner.retry(id) == .stuck(step: "debit", error: "undo-debit refused"))
        #expect(bank.names.filter { $0 == "undo-debit" }.count == 4)
    }

    @Test func skippingTheStuckCompensationContinuesWithTheEarlierSteps() async throws {
        let bank = Bank()
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        let id = try sagaID()
        _ = try await stuckTransfer(bank: bank, runner: runner, id: id)
        await #expect(throws: EventStoreError.self) {
            try await runner.skipCompensation(ofStep: "credit", in: id)  // credit never completed
        }
        let outcome = try await runner.skipCompensation(ofStep: "debit", in: id, note: "refunded by hand")
        #expect(outcome == .compensated(failedStep: "credit", error: "credit refused"))
        #expect(bank.names.last == "undo-reserve")
        #expect(try await runner.history(of: id).contains { $0.kind == .compensationSkipped && $0.step == "debit" })
    }

    /// Compensations run from the last step back: skipping an earlier pending one while a later one is stuck ran the
    /// stuck compensation once more, beyond its retry policy, without an operator's retry (found by a review).
    @Test func skippingACompensationBeforeTheStuckOneIsRefusedAndRunsNothing() async throws {
        let bank = Bank()
        bank.fail("credit")
        bank.fail("undo-debit")
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        let id = try sagaID()
        let undo = StepOptions(retry: .never, compensationRetry: RetryPolicy(maximumAttempts: 2, initialBackoff: .zero))
        #expect(
            try await runner.start(transferSaga(bank: bank, options: ["debit": undo]), id: id, input: sampleTransfer)
                == .stuck(step: "debit", error: "undo-debit refused"))
        #expect(try await runner.stuckSagas().first?.pendingCompensations == ["debit", "reserve"])
        let before = try await runner.history(of: id).count
        await #expect {
            try await runner.skipCompensation(ofStep: "reserve", in: id, note: "released by hand")
        } throws: { error in
            guard case EventStoreError.invalidArgument(let message) = error else { return false }
            return message.contains("stuck on the compensation of step \"debit\"")
        }
        #expect(bank.names.filter { $0 == "undo-debit" }.count == 2)
        #expect(try await runner.history(of: id).count == before)
        #expect(try await runner.status(of: id) == .stuck)
    }

    @Test func markingResolvedFinishesTheSagaForRecovery() async throws {
        let bank = Bank()
        let store = makeStore()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let id = try sagaID()
        _ = try await stuckTransfer(bank: bank, runner: runner, id: id)
        try await runner.markResolved(id, note: "ticket 42")
        #expect(try await runner.status(of: id) == .resolved)
        #expect(try await runner.stuckSagas().isEmpty)
        #expect(try await runner.recover().isEmpty)
        #expect(try await runner.resume(id) == .resolved)
        #expect(bank.names.count == 5)  // nothing ran after the operator resolved it
    }

    @Test func operatorActionsOnASagaThatIsNotStuckAreRefusedAndWriteNothing() async throws {
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        let id = try sagaID()
        _ = try await runner.start(transferSaga(bank: Bank()), id: id, input: sampleTransfer)
        let before = try await runner.history(of: id).count
        await #expect(throws: EventStoreError.self) { try await runner.retry(id) }
        await #expect(throws: EventStoreError.self) { try await runner.skipCompensation(ofStep: "debit", in: id) }
        await #expect(throws: EventStoreError.self) { try await runner.markResolved(id, note: "no") }
        #expect(try await runner.history(of: id).count == before)
    }
}
