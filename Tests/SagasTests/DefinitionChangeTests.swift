// A definition changed between a crash and resume (same name, same step names) gets a clear error before anything
// runs and leaves the saga log as it was: never a record that makes the log unreadable, a compensation silently
// dropped, or a healthy saga failed. Found by a review of the sagas (twenty-second session).

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite struct DefinitionChangeTests {
    /// The transfer saga of Support.swift, but "debit" now has no compensation (same step names).
    func withoutDebitCompensation(bank: Bank) -> SagaDefinition<Transfer> {
        var saga = SagaDefinition<Transfer>("transfer")
        for name in ["reserve", "debit", "credit"] {
            if name == "debit" {
                saga.step(name, options: StepOptions(retry: .never)) { step in
                    try bank.call(name, key: step.idempotencyKey)
                    return Receipt(reference: name)
                }
            } else {
                saga.step(name, options: StepOptions(retry: .never)) { step in
                    try bank.call(name, key: step.idempotencyKey)
                    return Receipt(reference: name)
                } compensation: { step, _ in
                    try bank.call("undo-\(name)", key: step.idempotencyKey)
                }
            }
        }
        return saga
    }

    @Test func resumingWithACompensationRemovedLeavesTheLogReadable() async throws {
        let store = makeStore()
        let bank = Bank()
        bank.fail("credit")
        let id = try sagaID()
        // Runner 1 stops while compensating "debit": its CompensationStarted stays open, as after a crash.
        let (signals, signal) = AsyncStream.makeStream(of: String.self)
        let first = SagaRunner(store: store, clock: ManualSagaClock())
        let run = Task {
            try await first.start(
                transferSaga(bank: bank, blockIn: "undo-debit", signal: signal), id: id, input: sampleTransfer)
        }
        _ = await next(signals)
        run.cancel()
        _ = try? await run.value
        #expect(try await kinds(first, id).last == .compensationStarted)

        // Runner 2 has a changed definition: same step names, "debit" without a compensation.
        let second = SagaRunner(store: store, clock: ManualSagaClock())
        try second.register(withoutDebitCompensation(bank: bank))
        let before = try await kinds(first, id)
        await #expect {
            try await second.resume(id)
        } throws: { error in
            guard case EventStoreError.invalidArgument(let message) = error else { return false }
            return message.contains("compensation of step \"debit\" open")
        }
        #expect(try await kinds(first, id) == before, "a record was written")
        // The saga's log still replays ...
        let status = await captureResult { try await second.status(of: id) }
        #expect(throws: Never.self) { try status.get() }
        // ... and the original definition must still be able to finish the saga.
        let third = SagaRunner(store: store, clock: ManualSagaClock())
        try third.register(transferSaga(bank: bank))
        let outcome = await captureResult { try await third.resume(id) }
        #expect(throws: Never.self) { try outcome.get() }
    }

    @Test func retryingAStuckSagaAfterItsPendingCompensationWasRemovedIsRefusedNotSkipped() async throws {
        let store = makeStore()
        let bank = Bank()
        bank.fail("credit")
        bank.fail("undo-debit")
        let id = try sagaID()
        // Runner 1 gets stuck compensating "debit": SagaStuck records debit and reserve as pending.
        let first = SagaRunner(store: store, clock: ManualSagaClock())
        let undo = StepOptions(retry: .never, compensationRetry: .never)
        #expect(
            try await first.start(transferSaga(bank: bank, options: ["debit": undo]), id: id, input: sampleTransfer)
                == .stuck(step: "debit", error: "undo-debit refused"))
        #expect(try await first.stuckSagas().first?.pendingCompensations == ["debit", "reserve"])

        // The operator retries from a runner whose definition (same step names) has no compensation for "debit".
        let second = SagaRunner(store: store, clock: ManualSagaClock())
        try second.register(withoutDebitCompensation(bank: bank))
        let outcome = await captureResult { try await second.retry(id, note: "bank is back") }
        #expect(throws: EventStoreError.self) { try outcome.get() }
        // The debit took effect and was never undone: the saga must not end compensated.
        #expect(bank.names.filter { $0 == "undo-debit" }.count == 1)
        #expect(try await second.status(of: id) != .compensated, "the debit was never undone")
    }

    struct Cents: Codable, Sendable { var cents: Int }

    /// "reserve" outputs `Output`; "debit" reads it, then blocks when `block` is set.
    func typed<Output: Codable & Sendable>(
        _ output: Output, bank: Bank, block: AsyncStream<String>.Continuation? = nil
    ) -> SagaDefinition<Transfer> {
        var saga = SagaDefinition<Transfer>("transfer")
        let reserve = saga.step("reserve", options: StepOptions(retry: .never, compensationRetry: .never)) { step in
            try bank.call("reserve", key: step.idempotencyKey)
            return output
        } compensation: { step, _ in
            try bank.call("undo-reserve", key: step.idempotencyKey)
        }
        saga.step("debit", options: StepOptions(retry: .never)) { step in
            _ = try step.output(of: reserve)
            try bank.call("debit", key: step.idempotencyKey)
            if let block {
                block.yield(step.idempotencyKey)
                try await Task.sleep(for: .seconds(3_600))  // until cancelled
            }
            return Receipt(reference: "debit")
        } compensation: { step, _ in
            try bank.call("undo-debit", key: step.idempotencyKey)
        }
        return saga
    }

    @Test func resumingWithAStepsOutputTypeChangedIsRefusedBeforeAnyStepRuns() async throws {
        let store = makeStore()
        let bank = Bank()
        let id = try sagaID()
        let (signals, signal) = AsyncStream.makeStream(of: String.self)
        let first = SagaRunner(store: store, clock: ManualSagaClock())
        let run = Task { try await first.start(typed(Receipt(reference: "r"), bank: bank, block: signal), id: id, input: sampleTransfer) }
        _ = await next(signals)
        run.cancel()
        _ = try? await run.value
        #expect(try await first.status(of: id) == .running)

        // Same name, same step names, same Input; "reserve" now outputs another type.
        let second = SagaRunner(store: store, clock: ManualSagaClock())
        try second.register(typed(Cents(cents: 1), bank: bank))
        let outcome = await captureResult { try await second.resume(id) }
        #expect(throws: EventStoreError.self) { try outcome.get() }
        // A healthy saga must not be failed and compensated (or left stuck) because its definition changed.
        #expect(try await second.status(of: id) == .running)
        #expect(bank.names == ["reserve", "debit"])
    }
}

/// What `body` returned or threw.
func captureResult<Value>(_ body: () async throws -> Value) async -> Result<Value, any Error> {
    do { return .success(try await body()) } catch { return .failure(error) }
}
