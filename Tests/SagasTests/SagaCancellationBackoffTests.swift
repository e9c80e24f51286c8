// A cancelled run starts no new attempt, however the backoff pause before it ended.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

/// A SagaClock whose sleep, when its task is cancelled, returns at once instead of throwing. It stands in,
/// deterministically, for the other side of the race in the pause of a parallel group's step: there
/// `SagaJournal.untilStopped` also returns normally on cancellation, and may do so before the clock's sleep throws.
private struct ReturningOnCancelClock: SagaClock {
    let manual = ManualSagaClock()
    func now() -> Date { manual.now() }
    func sleep(for duration: Duration) async throws { try? await manual.sleep(for: duration) }
}

@Suite(.timeLimit(.minutes(10))) struct SagaCancellationBackoffTests {
    @Test func aCancelledRunStartsNoNewAttemptAfterAParallelStepsBackoff() async throws {
        // A store that completes appends even for a cancelled task: only the runner itself can stop a new attempt.
        let store = CancellationCheckingStore(base: makeStore(), checks: false)
        let bank = Bank()
        bank.fail("a", times: 1)
        let runTask = Locked<Task<SagaOutcome, any Error>?>(nil)
        var hooks = SagaHooks()
        hooks.stepFailed = { event in
            if event.step == "a" { runTask.withLock { $0?.cancel() } }
        }
        var saga = SagaDefinition<Transfer>("cancel-in-backoff")
        let retrying = StepOptions(retry: RetryPolicy(maximumAttempts: 3))
        _ = saga.inParallel { group in
            (
                group.step("a", options: retrying) { step in
                    try bank.call("a", key: step.idempotencyKey)
                    return Receipt(reference: "a")
                },
                group.step("b", options: retrying) { step in
                    try bank.call("b", key: step.idempotencyKey)
                    return Receipt(reference: "b")
                }
            )
        }
        let id = try sagaID()
        let runner = SagaRunner(store: store, clock: ReturningOnCancelClock(), hooks: hooks)
        let (go, goSignal) = AsyncStream.makeStream(of: String.self)
        let definition = saga
        let run = Task {
            _ = await next(go)
            return try await runner.start(definition, id: id, input: sampleTransfer)
        }
        runTask.withLock { $0 = run }
        goSignal.yield("go")
        await #expect(throws: CancellationError.self) { try await run.value }
        #expect(bank.names.filter { $0 == "a" }.count == 1, "a cancelled run ran a again: \(bank.names)")
        let second = SagaRunner(store: store, clock: ManualSagaClock())
        try second.register(saga)
        #expect(try await second.resume(id) == .completed)
        #expect(bank.names.filter { $0 == "a" }.count == 2, "\(bank.names)")
    }
}
