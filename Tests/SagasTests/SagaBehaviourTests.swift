// The saga's forward and compensating behaviour on the in-memory backend: order, outputs, history and hooks.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite(.timeLimit(.minutes(10))) struct SagaBehaviourTests {
    @Test func happyPathRunsEveryStepInOrderAndCompletes() async throws {
        let bank = Bank()
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        let id = try sagaID("happy")
        let outcome = try await runner.start(transferSaga(bank: bank), id: id, input: sampleTransfer)
        #expect(outcome == .completed)
        #expect(bank.names == ["reserve", "debit", "credit"])
        #expect(bank.calls.map(\.key) == ["happy/reserve/1", "happy/debit/1", "happy/credit/1"])
        #expect(try await runner.status(of: id) == .completed)
        #expect(
            try await kinds(runner, id) == [
                .sagaStarted, .stepStarted, .stepCompleted, .stepStarted, .stepCompleted, .stepStarted, .stepCompleted,
                .sagaCompleted,
            ])
    }

    @Test(arguments: [1, 2, 3])
    func failureAtStepKCompensatesEarlierStepsInReverse(failingStep: Int) async throws {
        let names = ["reserve", "debit", "credit"]
        let bank = Bank()
        bank.fail(names[failingStep - 1])
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        let id = try sagaID()
        let outcome = try await runner.start(transferSaga(bank: bank), id: id, input: sampleTransfer)
        #expect(outcome == .compensated(failedStep: names[failingStep - 1], error: "\(names[failingStep - 1]) refused"))
        let undone = names.prefix(failingStep - 1).reversed().map { "undo-\($0)" }
        #expect(bank.names == Array(names.prefix(failingStep)) + undone)
        #expect(try await runner.status(of: id) == .compensated)
    }

    @Test func laterStepsAndCompensationsSeeEarlierOutputs() async throws {
        let seen = Locked<[String]>([])
        var saga = SagaDefinition<Transfer>("outputs")
        let debit = saga.step("debit", options: StepOptions(retry: .never)) { step in
            Receipt(reference: "debit-\(step.input.from)")
        } compensation: { step, receipt in
            seen.withLock { $0.append("undo got \(receipt?.reference ?? "nil")") }
        }
        saga.step("credit", options: StepOptions(retry: .never)) { step -> NoOutput in
            let receipt = try step.output(of: debit)
            seen.withLock { $0.append("credit saw \(receipt.reference)") }
            throw TestFailure(message: "credit refused")
        }
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        let outcome = try await runner.start(saga, id: try sagaID(), input: sampleTransfer)
        #expect(outcome == .compensated(failedStep: "credit", error: "credit refused"))
        #expect(seen.withLock { $0 } == ["credit saw debit-alice", "undo got debit-alice"])
    }

    @Test func readingTheOutputOfAStepThatHasNotCompletedIsATypedError() async throws {
        let laterHandle = Locked<StepHandle<Receipt>?>(nil)
        let result = Locked<String?>(nil)
        var saga = SagaDefinition<Transfer>("early-read")
        saga.step("first", options: StepOptions(retry: .never)) { step -> NoOutput in
            guard let later = laterHandle.withLock({ $0 }) else { throw TestFailure(message: "no handle") }
            do {
                _ = try step.output(of: later)
                result.withLock { $0 = "read an output that does not exist" }
            } catch let error as EventStoreError {
                if case .invalidArgument = error { result.withLock { $0 = "invalidArgument" } }
            }
            return NoOutput()
        }
        laterHandle.withLock { $0 = saga.step("second") { _ in Receipt(reference: "x") } }
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        #expect(try await runner.start(saga, id: try sagaID(), input: sampleTransfer) == .completed)
        #expect(result.withLock { $0 } == "invalidArgument")
    }

    @Test func historyHasTimestampsFromTheSagaClock() async throws {
        let clock = ManualSagaClock(start: Date(timeIntervalSince1970: 1_000))
        let runner = SagaRunner(store: makeStore(), clock: clock)
        let id = try sagaID()
        _ = try await runner.start(transferSaga(bank: Bank()), id: id, input: sampleTransfer)
        let history = try await runner.history(of: id)
        #expect(history.count == 8)
        #expect(history.allSatisfy { $0.at == Date(timeIntervalSince1970: 1_000) })
        #expect(history.map(\.version) == Array(1...8))
        #expect(
            history[1].step == "reserve" && history[1].attempt == 1 && history[1].idempotencyKey == "\(id)/reserve/1")
    }

    @Test func hooksFireWhenStepsStartFinishAndFail() async throws {
        let log = Locked<[String]>([])
        let hooks = SagaHooks(
            stepStarted: { event in log.withLock { $0.append("start \(event.phase.rawValue) \(event.step)") } },
            stepFinished: { event in log.withLock { $0.append("finish \(event.phase.rawValue) \(event.step)") } },
            stepFailed: { event in log.withLock { $0.append("fail \(event.step): \(event.error ?? "")") } })
        let bank = Bank()
        bank.fail("debit")
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock(), hooks: hooks)
        _ = try await runner.start(transferSaga(bank: bank), id: try sagaID(), input: sampleTransfer)
        #expect(
            log.withLock { $0 } == [
                "start action reserve", "finish action reserve", "start action debit", "fail debit: debit refused",
                "start compensation reserve", "finish compensation reserve",
            ])
    }

    @Test func startingAnExistingSagaResumesItInsteadOfRunningItTwice() async throws {
        let bank = Bank()
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        let id = try sagaID()
        #expect(try await runner.start(transferSaga(bank: bank), id: id, input: sampleTransfer) == .completed)
        let other = Transfer(from: "carol", to: "dave", amount: 99)
        #expect(try await runner.start(transferSaga(bank: bank), id: id, input: other) == .completed)
        #expect(bank.names == ["reserve", "debit", "credit"])

        var refund = SagaDefinition<Transfer>("refund")
        refund.step("refund") { _ in NoOutput() }
        await #expect(throws: EventStoreError.self) { try await runner.start(refund, id: id, input: sampleTransfer) }
    }

    @Test func brokenDefinitionsAreRefusedBeforeAnythingIsWritten() async throws {
        let store = makeStore()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        var duplicate = SagaDefinition<Transfer>("dup")
        duplicate.step("a") { _ in NoOutput() }
        duplicate.step("a") { _ in NoOutput() }
        await #expect(throws: EventStoreError.self) {
            try await runner.start(duplicate, id: try sagaID(), input: sampleTransfer)
        }
        let empty = SagaDefinition<Transfer>("empty")
        #expect(throws: EventStoreError.self) { try runner.register(empty) }
        var badRetry = SagaDefinition<Transfer>("bad-retry")
        badRetry.step("a", options: StepOptions(retry: RetryPolicy(maximumAttempts: 0))) { _ in NoOutput() }
        #expect(throws: EventStoreError.self) { try runner.register(badRetry) }
        #expect(try await store.lastPosition() == 0)
        #expect(throws: EventStoreError.self) { try SagaID("a/b") }
        #expect(throws: EventStoreError.self) { try SagaID("") }
    }

    @Test func aSagaWhoseDefinitionChangedIsRefusedNotGuessedAt() async throws {
        let store = makeStore()
        let id = try sagaID()
        let first = SagaRunner(store: store, clock: ManualSagaClock())
        try await first.create(transferSaga(bank: Bank()), id: id, input: sampleTransfer)
        var changed = SagaDefinition<Transfer>("transfer")
        changed.step("only") { _ in NoOutput() }
        let second = SagaRunner(store: store, clock: ManualSagaClock())
        try second.register(changed)
        await #expect(throws: EventStoreError.self) { try await second.resume(id) }
        let third = SagaRunner(store: store, clock: ManualSagaClock())
        await #expect(throws: EventStoreError.self) { try await third.resume(id) }  // not registered at all
        await #expect(throws: EventStoreError.self) { try await third.resume(try sagaID("missing")) }
    }
}
