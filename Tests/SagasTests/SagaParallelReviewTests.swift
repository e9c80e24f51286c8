// Defects a review of parallel step groups found, each shown by a test that failed before its fix: a sibling
// waiting to retry when another failed for good, the output error's wording, and attempt numbers in a stored log.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite(.timeLimit(.minutes(10))) struct SagaParallelReviewTests {
    /// "flaky" takes effect and then fails (hence compensatesFailedAction); its attempt 1 fails while "bad" is
    /// still running, so it goes into its retry backoff. "bad" then fails for good. flaky never runs again, and its
    /// failed attempt, which may have taken effect, must be compensated (with a nil output), as a sequential saga
    /// or a sibling whose attempt was running would have been. The run must not wait out flaky's backoff either.
    @Test func aSiblingInItsRetryBackoffWhenAnotherFailsForGoodIsCompensatedWithoutWaiting() async throws {
        let bank = Bank()
        let clock = ManualSagaClock()
        let flakyFailed = Signal()
        var saga = SagaDefinition<Transfer>("backoff-sibling")
        saga.step("before", options: StepOptions(retry: .never)) { _ in Receipt(reference: "before") } compensation: {
            step, _ in try bank.call("undo-before", key: step.idempotencyKey)
        }
        saga.inParallel { group in
            group.step("bad", options: StepOptions(retry: .never)) { step -> Receipt in
                try await flakyFailed.wait()
                try bank.call("bad", key: step.idempotencyKey)
                throw TestFailure(message: "bad refused")
            }
            group.step(
                "flaky",
                options: StepOptions(
                    retry: RetryPolicy(maximumAttempts: 3, initialBackoff: .seconds(3_600), jitter: 0),
                    compensatesFailedAction: true)
            ) { step -> Receipt in
                try bank.call("flaky", key: step.idempotencyKey)  // the effect happens, then the call fails
                throw TestFailure(message: "flaky failed after its effect")
            } compensation: { step, receipt in
                try bank.call("undo-flaky:\(receipt?.reference ?? "nil")", key: step.idempotencyKey)
            }
        }
        let failures = Locked<[String]>([])
        let hooks = SagaHooks(stepFailed: { event in
            failures.withLock { $0.append("\(event.step) \(event.attempt) retry=\(event.willRetry)") }
            if event.step == "flaky" { Task { await flakyFailed.raise() } }
        })
        let runner = SagaRunner(store: makeStore(), clock: clock, hooks: hooks)
        let id = try sagaID("backoff-sibling")
        let finished = Signal()
        let run = Task {
            let outcome = try await runner.start(saga, id: id, input: sampleTransfer)
            await finished.raise()
            return outcome
        }
        // The clock is never advanced: the run must end without waiting out flaky's hour-long backoff.
        var waitedOut = false
        do {
            try await finished.wait()
        } catch {
            waitedOut = true
            clock.advance(by: .seconds(3_600))  // let the run end anyway
        }
        #expect(!waitedOut, "the run waited for the backoff of a step that will never run again")
        #expect(try await run.value == .compensated(failedStep: "bad", error: "bad refused"))
        #expect(bank.names == ["flaky", "bad", "undo-flaky:nil", "undo-before"])
        #expect(failures.withLock { $0 } == ["flaky 1 retry=true", "bad 1 retry=false", "flaky 1 retry=false"])
        let history = try await runner.history(of: id)
        let flakyFailures = history.filter { $0.kind == .stepFailed && $0.step == "flaky" }
        #expect(flakyFailures.map(\.attempt) == [1, 1])
    }

    @Test func readingACompletedSiblingsOutputSaysWhyItIsNotVisible() async throws {
        let quickDone = Signal()
        let message = Locked<String?>(nil)
        var saga = SagaDefinition<Transfer>("sibling-message")
        saga.inParallel { group in
            let quick = group.step("quick", options: StepOptions(retry: .never)) { _ in Receipt(reference: "quick") }
            group.step("reader", options: StepOptions(retry: .never)) { step -> NoOutput in
                try await quickDone.wait()
                do {
                    _ = try step.output(of: quick)
                } catch let EventStoreError.invalidArgument(text) {
                    message.withLock { $0 = text }
                }
                return NoOutput()
            }
        }
        let hooks = SagaHooks(stepFinished: { event in
            if event.step == "quick" { Task { await quickDone.raise() } }
        })
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock(), hooks: hooks)
        #expect(try await runner.start(saga, id: try sagaID(), input: sampleTransfer) == .completed)
        let text = message.withLock { $0 } ?? ""
        #expect(text.contains("same parallel group") && text.contains("visible to \"reader\""), "\(text)")
    }

    /// A stored attempt number of Int.max made the next attempt's number overflow (a trap) on resume.
    @Test func aStoredAttemptNumberThatCannotBeFollowedIsCorruption() async throws {
        let store = makeStore()
        let id = try sagaID("attempt-max")
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let saga = transferSaga(bank: Bank())
        try runner.register(saga)
        try await runner.create(saga, id: id, input: sampleTransfer)
        let log = try StreamName.system("$saga-\(id)")
        let started = try await store.read(log)
        let fields = try #require(try JSONSerialization.jsonObject(with: started[0].data) as? [String: Any])
        let forged: [String: Any] = [
            "kind": "StepFailed", "at": fields["at"] ?? 0, "step": 0, "attempt": Int.max, "willRetry": true,
        ]
        _ = try await store.append(
            EventData(type: "StepFailed", data: try JSONSerialization.data(withJSONObject: forged)), to: log,
            expectedVersion: .any)
        do {
            _ = try await runner.resume(id)
            Issue.record("a log with attempt Int.max was resumed")
        } catch let EventStoreError.corrupted(location, detail) {
            #expect(location.contains("version 2"), "\(location)")
            #expect(detail.contains("attempt"), "\(detail)")
        }
    }
}
