// Steps whose effect is an event-store append: the effect and StepCompleted commit in one transaction. (The
// session multi-stream append this relies on is checked on every backend in ConformanceTests.)

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Synchronization
import Testing

@Suite(.timeLimit(.minutes(10))) struct SagaExactlyOnceTests {
    func depositSaga(account: StreamName, expected: ExpectedVersion = .any) -> SagaDefinition<Transfer> {
        var saga = SagaDefinition<Transfer>("deposit")
        saga.appendingStep(
            "deposit", options: StepOptions(retry: RetryPolicy(maximumAttempts: 2, initialBackoff: .zero))
        ) { step in
            let event = EventData(type: "Deposited", data: Data("\(step.input.amount)".utf8))
            return StepEffect(
                output: NoOutput(), appends: [StreamAppend(stream: account, expectedVersion: expected, events: [event])]
            )
        } compensation: { step, _ in
            [
                StreamAppend(
                    stream: account, expectedVersion: .any,
                    events: [EventData(type: "Withdrawn", data: Data("\(step.input.amount)".utf8))])
            ]
        }
        saga.step("notify", options: StepOptions(retry: .never)) { step -> NoOutput in
            if step.input.amount < 0 { throw TestFailure(message: "negative") }
            return NoOutput()
        }
        return saga
    }

    @Test func theEffectCommitsInTheSameTransactionAsStepCompleted() async throws {
        let store = makeStore()
        let account = try StreamName("account-alice")
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let id = try sagaID()
        #expect(try await runner.start(depositSaga(account: account), id: id, input: sampleTransfer) == .completed)
        let deposits = try await store.read(account)
        #expect(deposits.map(\.type) == ["Deposited"])
        let completed = try await store.read(try StreamName.system("$saga-\(id)")).filter { $0.type == "StepCompleted" }
        // One transaction: the saga's record and the effect sit at adjacent global positions.
        #expect(completed.first.map { $0.position + 1 } == deposits.first?.position)
    }

    @Test func aCompensationsAppendsCommitWithStepCompensated() async throws {
        let store = makeStore()
        let account = try StreamName("account-bob")
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let negative = Transfer(from: "a", to: "b", amount: -5)
        let outcome = try await runner.start(depositSaga(account: account), id: try sagaID(), input: negative)
        #expect(outcome == .compensated(failedStep: "notify", error: "negative"))
        #expect(try await store.read(account).map(\.type) == ["Deposited", "Withdrawn"])
    }

    @Test func anEffectThatCannotCommitFailsTheStepAndWritesNothing() async throws {
        let store = makeStore()
        let account = try StreamName("account-carol")
        _ = try await store.append(EventData(type: "Opened", data: Data()), to: account, expectedVersion: .noStream)
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let id = try sagaID()
        let outcome = try await runner.start(
            depositSaga(account: account, expected: .noStream), id: id, input: sampleTransfer)
        guard case .compensated(let step, let error) = outcome else {
            Issue.record("expected compensation, got \(outcome)")
            return
        }
        #expect(step == "deposit")
        #expect(error.contains("account-carol"))
        #expect(try await store.read(account).map(\.type) == ["Opened"])
        #expect(try await runner.history(of: id).filter { $0.kind == .stepFailed }.count == 2)
    }
}
