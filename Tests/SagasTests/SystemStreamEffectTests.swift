// A step's appends that name the saga machinery's own streams (here the index "$sagas-index") are refused before
// anything is written: otherwise every later recover() and stuckSagas() would read an index event that is not the
// machinery's and throw `corrupted`, for every saga, forever.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite struct SystemStreamEffectTests {
    func indexAppend() throws -> StreamAppend {
        StreamAppend(
            stream: try StreamName.system("$sagas-index"), expectedVersion: .any,
            events: [EventData(type: "Deposited", data: Data("{}".utf8))])
    }

    /// The event types in the saga index.
    func indexTypes(_ store: KeyValueEventStore) async throws -> [String] {
        try await store.read(try StreamName.system("$sagas-index")).map(\.type)
    }

    @Test func anEffectAppendingToTheSagaIndexIsRefusedAndRecoveryStillWorks() async throws {
        let store = makeStore()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        var saga = SagaDefinition<Transfer>("system-stream-effect")
        let index = try indexAppend()
        // Retries allowed: a programming error is still not retried.
        saga.appendingStep(
            "record", options: StepOptions(retry: RetryPolicy(maximumAttempts: 3, initialBackoff: .zero, jitter: 0))
        ) { _ in
            StepEffect(output: NoOutput(), appends: [index])
        } compensation: { _, _ in [] }
        let id = try sagaID()
        let outcome = try? await runner.start(saga, id: id, input: sampleTransfer)
        do {
            _ = try await runner.recover()
            _ = try await runner.stuckSagas()
        } catch {
            Issue.record("recovery of every saga is broken: \(error); outcome \(String(describing: outcome))")
        }
        // The attempt was refused: the saga did not complete, and nothing but the runner's own entries is in the index.
        guard case .compensated(let failedStep, let error) = outcome else {
            Issue.record("outcome \(String(describing: outcome))")
            return
        }
        #expect(failedStep == "record")
        #expect(error.contains("$sagas-index"), "\(error)")
        #expect(try await indexTypes(store) == ["SagaOpened", "SagaClosed"])
        let failures = try await runner.history(of: id).filter { $0.kind == .stepFailed }
        #expect(failures.map(\.willRetry) == [false])
    }

    @Test func aCompensationAppendingToTheSagaIndexIsRefusedAndTheSagaIsStuck() async throws {
        let store = makeStore()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        var saga = SagaDefinition<Transfer>("system-stream-compensation")
        let index = try indexAppend()
        let retries = RetryPolicy(maximumAttempts: 2, initialBackoff: .zero, jitter: 0)
        saga.appendingStep("record", options: StepOptions(compensationRetry: retries)) { _ in
            StepEffect(output: NoOutput(), appends: [])
        } compensation: { _, _ in [index] }
        saga.step("fail", options: StepOptions(retry: .never)) { _ -> NoOutput in
            throw PermanentStepFailure(TestFailure(message: "declined"))
        }
        let id = try sagaID()
        let outcome = try await runner.start(saga, id: id, input: sampleTransfer)
        guard case .stuck(let step, let error) = outcome else {
            Issue.record("outcome \(outcome)")
            return
        }
        #expect(step == "record")
        #expect(error.contains("$sagas-index"), "\(error)")
        #expect(try await indexTypes(store) == ["SagaOpened"])
        // A compensation is retried as usual (as when it throws PermanentStepFailure), then the saga is stuck.
        let failures = try await runner.history(of: id).filter { $0.kind == .compensationFailed }
        #expect(failures.map(\.willRetry) == [true, false])
        _ = try await runner.recover()
        #expect(try await runner.stuckSagas().map(\.sagaID) == [id])
    }
}
