// stuckSagas() leaves out a saga whose log reads empty, as recover() isolates it (reports it failed and goes on),
// not only one whose log is corrupted (twentieth session's review: the listing failed for every saga).

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite struct EmptyLogOperatorIsolationTests {
    @Test func aSagaWhoseLogReadsEmptyDoesNotHideTheOtherStuckSagas() async throws {
        let store = makeStore()
        let bank = Bank()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        bank.fail("credit")
        bank.fail("undo-debit")
        let undo = StepOptions(retry: .never, compensationRetry: RetryPolicy(maximumAttempts: 1, initialBackoff: .zero))
        let saga = transferSaga(bank: bank, options: ["debit": undo])
        let stuck = try sagaID("a-stuck")
        #expect(
            try await runner.start(saga, id: stuck, input: sampleTransfer)
                == .stuck(step: "debit", error: "undo-debit refused"))
        // Saga "b": open in the index, but every event of its log is hidden (retention set on its stream).
        let hidden = try sagaID("b-hidden")
        try await runner.create(saga, id: hidden, input: sampleTransfer)
        try await store.setMetadata(
            StreamMetadata(truncateBefore: 1_000), for: try StreamName.system("$saga-\(hidden.rawValue)"))

        // Recovery reports "b" as failed and goes on with the others...
        let recovered = try await runner.recover()
        #expect(recovered.count == 2)
        if case .failed = recovered.first(where: { $0.sagaID == hidden })?.result {} else {
            Issue.record("recovery of b: \(recovered)")
        }
        // ...and the operator console should list the stuck saga too.
        do {
            let listed = try await runner.stuckSagas()
            #expect(listed.map(\.sagaID) == [stuck])
        } catch {
            Issue.record("stuckSagas() failed for every saga because of one: \(error)")
        }
    }
}
