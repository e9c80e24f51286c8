// Mutation testing (twenty-fourth session): the recovery checkpoint (low-water mark) after a recovery that found
// nothing to read. The index head is then the mark minus one; no test recovered twice in a row (or on an empty index)
// and then started a saga, so a mark moved one past the index's end (skipping the next saga opened) went unnoticed.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite("Saga recovery: the checkpoint after recoveries that find nothing", .timeLimit(.minutes(5)))
struct RecoveryMarkTests {
    @Test func recoveriesThatFindNothingNeverMoveTheMarkPastTheNextSagaOpened() async throws {
        let store = makeStore()
        let bank = Bank()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        try runner.register(transferSaga(bank: bank))
        // On an empty index, and again once everything in it is finished: each recovery reads nothing.
        #expect(try await runner.recover().isEmpty)
        #expect(try await runner.recover().isEmpty)
        let first = try sagaID("first")
        try await runner.create(transferSaga(bank: bank), id: first, input: sampleTransfer)
        #expect(try await runner.recover().map(\.sagaID) == [first])
        #expect(try await runner.recover().isEmpty)
        #expect(try await runner.recover().isEmpty)

        let second = try sagaID("second")
        try await runner.create(transferSaga(bank: bank), id: second, input: sampleTransfer)
        let recovered = try await runner.recover()
        #expect(recovered.map(\.sagaID) == [second], "an unfinished saga was hidden by the recovery checkpoint")
        #expect(try await runner.status(of: second) == .completed)
    }
}
