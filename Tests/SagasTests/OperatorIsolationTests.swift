// One saga whose log cannot be replayed must not hide every stuck saga from the operator: stuckSagas() leaves it
// out, as recover() isolates it (reports it failed and goes on). Twentieth session's reviews: first a damaged log
// (a record no runner writes), then one that reads empty (retention hides every event of it); each made the listing
// fail for every saga.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite struct OperatorIsolationTests {
    @Test(arguments: ["damaged", "hidden"])
    func aSagaWhoseLogCannotBeReplayedDoesNotHideTheOtherStuckSagas(_ problem: String) async throws {
        let store = makeStore()
        let bank = Bank()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        // Saga "a": stuck, waiting for an operator.
        bank.fail("credit")
        bank.fail("undo-debit")
        let undo = StepOptions(retry: .never, compensationRetry: RetryPolicy(maximumAttempts: 1, initialBackoff: .zero))
        let saga = transferSaga(bank: bank, options: ["debit": undo])
        let stuck = try sagaID("a-stuck")
        #expect(
            try await runner.start(saga, id: stuck, input: sampleTransfer)
                == .stuck(step: "debit", error: "undo-debit refused"))
        // Saga "b": open in the index, then its log damaged, or every event of it hidden by retention.
        let other = try sagaID("b-\(problem)")
        try await runner.create(saga, id: other, input: sampleTransfer)
        if problem == "damaged" {
            try await appendRecord(store, other, "SagaCompleted", [:])
        } else {
            try await store.setMetadata(
                StreamMetadata(truncateBefore: 1_000), for: try StreamName.system("$saga-\(other.rawValue)"))
        }

        // Recovery reports "b" as failed and goes on with the others...
        let recovered = try await runner.recover()
        #expect(recovered.count == 2)
        if case .failed = recovered.first(where: { $0.sagaID == other })?.result {} else {
            Issue.record("recovery of b: \(recovered)")
        }
        // ...and the operator console lists the stuck saga too.
        do {
            let listed = try await runner.stuckSagas()
            #expect(listed.map(\.sagaID) == [stuck])
        } catch {
            Issue.record("stuckSagas() failed for every saga because of one: \(error)")
        }
    }
}
