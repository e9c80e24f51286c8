import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

private func statusIsCorrupted(_ runner: SagaRunner, _ id: SagaID) async -> (Bool, String) {
    do {
        let status = try await runner.status(of: id)
        return (false, "status read as \(status)")
    } catch EventStoreError.corrupted {
        return (true, "corrupted")
    } catch {
        return (false, "threw \(error)")
    }
}

@Suite(.timeLimit(.minutes(10))) struct SagaLogContradictionReviewTests {
    @Test func aSagaStuckAfterSagaCompletedIsCorruption() async throws {
        let store = makeStore()
        let bank = Bank()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let id = try sagaID()
        let saga = transferSaga(bank: bank)
        #expect(try await runner.start(saga, id: id, input: sampleTransfer) == .completed)
        try await appendRecord(store, id, "SagaStuck", ["step": 2, "error": "bogus"])
        let (corrupted, seen) = await statusIsCorrupted(runner, id)
        #expect(corrupted, "a SagaStuck after SagaCompleted: \(seen)")
        let outcome = try? await runner.retry(id)
        #expect(!bank.names.contains { $0.hasPrefix("undo-") },
                "a completed saga was compensated: \(bank.names), outcome \(String(describing: outcome))")
    }

    @Test func aStepStartedAfterSagaCompletedIsCorruption() async throws {
        let store = makeStore()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let id = try sagaID()
        #expect(try await runner.start(transferSaga(bank: Bank()), id: id, input: sampleTransfer) == .completed)
        try await appendRecord(store, id, "StepStarted", ["step": 0, "stepName": "reserve", "attempt": 2])
        let (corrupted, seen) = await statusIsCorrupted(runner, id)
        #expect(corrupted, "a StepStarted after SagaCompleted: \(seen)")
    }

    @Test func aSagaCompletedBeforeAnyStepRanIsCorruption() async throws {
        let store = makeStore()
        let bank = Bank()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let id = try sagaID()
        let saga = transferSaga(bank: bank)
        try runner.register(saga)
        try await runner.create(saga, id: id, input: sampleTransfer)
        try await appendRecord(store, id, "SagaCompleted", [:])
        let (corrupted, seen) = await statusIsCorrupted(runner, id)
        #expect(corrupted, "SagaCompleted with no step run: \(seen)")
        let outcome = try? await runner.resume(id)
        #expect(outcome != .completed, "resume reports a saga none of whose steps ran as completed; bank: \(bank.names)")
    }

    @Test func aStepCompensatedForAStepThatNeverRanIsCorruption() async throws {
        let store = makeStore()
        let bank = Bank()
        bank.fail("debit")
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let id = try sagaID()
        let saga = transferSaga(bank: bank)
        try runner.register(saga)
        try await runner.create(saga, id: id, input: sampleTransfer)
        try await appendRecord(store, id, "StepCompensated", ["step": 0, "stepName": "reserve", "attempt": 1])
        let (corrupted, seen) = await statusIsCorrupted(runner, id)
        #expect(corrupted, "StepCompensated for a step that never ran: \(seen)")
        let outcome = try? await runner.resume(id)
        #expect(!bank.names.contains("reserve") || bank.names.contains("undo-reserve"),
                "reserve took effect and was never undone: \(bank.names), outcome \(String(describing: outcome))")
    }
}

@Suite(.timeLimit(.minutes(10))) struct SagaCancellationReviewTests {
    @Test func aRunnerStoppedDuringAnAtMostOnceStepLeavesItRetryableNotFailed() async throws {
        let store = makeStore()
        let bank = Bank()
        let (signals, signal) = AsyncStream.makeStream(of: String.self)
        let options = StepOptions(semantics: .atMostOnce, retry: RetryPolicy(maximumAttempts: 3))
        var saga = SagaDefinition<Transfer>("stop-at-most-once")
        saga.step("reserve", options: StepOptions(retry: .never)) { step in
            try bank.call("reserve", key: step.idempotencyKey)
            return Receipt(reference: "r")
        } compensation: { step, _ in try bank.call("undo-reserve", key: step.idempotencyKey) }
        saga.step("charge", options: options) { step in
            try bank.call("charge", key: step.idempotencyKey)
            if step.attempt == 1 {
                signal.yield(step.idempotencyKey)
                try await Task.sleep(for: .seconds(3_600))  // honours cancellation: throws before any effect
            }
            return Receipt(reference: "c")
        } compensation: { step, _ in try bank.call("undo-charge", key: step.idempotencyKey) }
        let id = try sagaID()
        let first = SagaRunner(store: store, clock: ManualSagaClock())
        let definition = saga
        let run = Task { try await first.start(definition, id: id, input: sampleTransfer) }
        _ = await next(signals)
        run.cancel()  // a graceful stop, not a crash
        _ = try? await run.value
        let second = SagaRunner(store: store, clock: ManualSagaClock())
        try second.register(saga)
        let outcome = try await second.resume(id)
        let log = try await kinds(second, id)
        #expect(outcome == .completed, "outcome \(outcome); calls \(bank.names); log \(log)")
    }
}
