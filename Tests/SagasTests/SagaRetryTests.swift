// Retries with backoff and step timeouts, driven by the manual clock: no test sleeps on real time.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite(.timeLimit(.minutes(10))) struct SagaRetryTests {
    @Test func failedAttemptsAreRetriedWithExponentialBackoffAndJitter() async throws {
        let bank = Bank()
        bank.fail("debit", times: 2)
        let clock = ManualSagaClock()
        let retry = RetryPolicy(
            maximumAttempts: 3, initialBackoff: .seconds(1), multiplier: 2, maximumBackoff: .seconds(60), jitter: 0.5)
        let runner = SagaRunner(
            store: makeStore(), clock: clock, configuration: SagaRunnerConfiguration(random: { 0.5 }))
        let id = try sagaID("retry")
        let saga = transferSaga(bank: bank, options: ["debit": StepOptions(retry: retry)])
        let run = Task { try await runner.start(saga, id: id, input: sampleTransfer) }

        await clock.waitForSleepers(1)
        #expect(clock.requestedSleeps == [.seconds(0.75)])  // 1 s, shortened by jitter 0.5 x random 0.5
        #expect(bank.names == ["reserve", "debit"])
        clock.advance(by: .seconds(0.75))
        await clock.waitForSleepers(1)
        #expect(clock.requestedSleeps == [.seconds(0.75), .seconds(1.5)])  // doubled
        #expect(bank.names == ["reserve", "debit", "debit"])
        clock.advance(by: .seconds(1.5))

        #expect(try await run.value == .completed)
        #expect(
            bank.calls.filter { $0.name == "debit" }.map(\.key) == ["retry/debit/1", "retry/debit/2", "retry/debit/3"])
        let failures = try await runner.history(of: id).filter { $0.kind == .stepFailed }
        #expect(failures.map(\.attempt) == [1, 2])
        #expect(failures.allSatisfy { $0.willRetry == true && $0.error == "debit refused" })
    }

    @Test func retriesStopAtTheMaximumAndTheSagaCompensates() async throws {
        let bank = Bank()
        bank.fail("credit")
        let clock = ManualSagaClock()
        let retry = RetryPolicy(maximumAttempts: 2, initialBackoff: .seconds(5), jitter: 0)
        let runner = SagaRunner(store: makeStore(), clock: clock)
        let saga = transferSaga(bank: bank, options: ["credit": StepOptions(retry: retry)])
        let run = Task { try await runner.start(saga, id: try sagaID(), input: sampleTransfer) }
        await clock.waitForSleepers(1)
        clock.advance(by: .seconds(5))
        #expect(try await run.value == .compensated(failedStep: "credit", error: "credit refused"))
        #expect(bank.names == ["reserve", "debit", "credit", "credit", "undo-debit", "undo-reserve"])
    }

    @Test func aPermanentFailureIsNotRetriedWhateverThePolicy() async throws {
        let attempts = Locked(0)
        var saga = SagaDefinition<Transfer>("refused")
        let bank = Bank()
        saga.step("reserve", options: StepOptions(retry: .never)) { step in
            try bank.call("reserve", key: step.idempotencyKey)
            return NoOutput()
        } compensation: { step, _ in
            try bank.call("undo-reserve", key: step.idempotencyKey)
        }
        let retry = RetryPolicy(maximumAttempts: 10, initialBackoff: .milliseconds(1), jitter: 0)
        saga.step("debit", options: StepOptions(retry: retry)) { _ -> NoOutput in
            attempts.withLock { $0 += 1 }
            throw PermanentStepFailure(TestFailure(message: "insufficient funds"))
        } compensation: { _, _ in }
        let runner = SagaRunner(store: makeStore())
        let id = try sagaID()
        #expect(
            try await runner.start(saga, id: id, input: sampleTransfer)
                == .compensated(failedStep: "debit", error: "insufficient funds"))
        #expect(attempts.withLock { $0 } == 1)
        #expect(bank.names == ["reserve", "undo-reserve"])
        let failures = try await runner.history(of: id).filter { $0.kind == .stepFailed }
        #expect(failures.map(\.willRetry) == [false])
    }

    @Test func backoffGrowsToItsCapAndJitterOnlyShortensIt() {
        let policy = RetryPolicy(
            maximumAttempts: 10, initialBackoff: .seconds(1), multiplier: 3, maximumBackoff: .seconds(20), jitter: 0.25)
        #expect(policy.backoff(afterAttempt: 1, random: 0) == .seconds(1))
        #expect(policy.backoff(afterAttempt: 2, random: 0) == .seconds(3))
        #expect(policy.backoff(afterAttempt: 3, random: 0) == .seconds(9))
        #expect(policy.backoff(afterAttempt: 4, random: 0) == .seconds(20))
        #expect(policy.backoff(afterAttempt: 400, random: 0) == .seconds(20))
        #expect(policy.backoff(afterAttempt: 4, random: 0.999_999) > .seconds(15))
        #expect(policy.backoff(afterAttempt: 4, random: 1) == .seconds(15))
    }

    @Test func anAttemptThatOutlivesItsTimeoutIsCancelledAndFails() async throws {
        let clock = ManualSagaClock()
        let cancelled = Locked(false)
        var saga = SagaDefinition<Transfer>("slow")
        let bank = Bank()
        saga.step("reserve", options: StepOptions(retry: .never)) { step in
            try bank.call("reserve", key: step.idempotencyKey)
            return NoOutput()
        } compensation: { step, _ in
            try bank.call("undo-reserve", key: step.idempotencyKey)
        }
        saga.step("slow", options: StepOptions(retry: .never, timeout: .seconds(5))) { _ -> NoOutput in
            do {
                try await Task.sleep(for: .seconds(3_600))
            } catch {
                cancelled.withLock { $0 = true }
                throw error
            }
            return NoOutput()
        }
        let runner = SagaRunner(store: makeStore(), clock: clock)
        let run = Task { try await runner.start(saga, id: try sagaID(), input: sampleTransfer) }
        await clock.waitForSleepers(1)
        #expect(clock.pendingSleeps == [.seconds(5)])
        clock.advance(by: .seconds(5))
        let outcome = try await run.value
        #expect(outcome == .compensated(failedStep: "slow", error: "timed out after 5.0 seconds"))
        #expect(cancelled.withLock { $0 })
        #expect(bank.names == ["reserve", "undo-reserve"])
    }

    @Test func anAttemptWithinItsTimeoutSucceedsWithoutTheClockMoving() async throws {
        let clock = ManualSagaClock()
        let bank = Bank()
        let timed = StepOptions(retry: .never, timeout: .seconds(1))
        let saga = transferSaga(bank: bank, options: ["reserve": timed, "debit": timed, "credit": timed])
        let runner = SagaRunner(store: makeStore(), clock: clock)
        #expect(try await runner.start(saga, id: try sagaID(), input: sampleTransfer) == .completed)
        #expect(clock.requestedSleeps == [.seconds(1), .seconds(1), .seconds(1)])
    }

    @Test func timedOutCompensationsAreRetriedToo() async throws {
        let clock = ManualSagaClock()
        let attempts = Locked(0)
        var saga = SagaDefinition<Transfer>("slow-undo")
        let options = StepOptions(
            retry: .never, compensationRetry: RetryPolicy(maximumAttempts: 2, initialBackoff: .seconds(1), jitter: 0),
            compensationTimeout: .seconds(10))
        saga.step("reserve", options: options) { _ in
            NoOutput()
        } compensation: { _, _ in
            let attempt = attempts.withLock {
                $0 += 1
                return $0
            }
            if attempt == 1 { try await Task.sleep(for: .seconds(3_600)) }
        }
        saga.step("fail", options: StepOptions(retry: .never)) { _ -> NoOutput in throw TestFailure(message: "no") }
        let runner = SagaRunner(store: makeStore(), clock: clock)
        let id = try sagaID()
        let run = Task { try await runner.start(saga, id: id, input: sampleTransfer) }
        await clock.waitForSleepers(1)  // the compensation timeout
        clock.advance(by: .seconds(10))
        await clock.waitForSleepers(1)  // the backoff
        clock.advance(by: .seconds(1))
        #expect(try await run.value == .compensated(failedStep: "fail", error: "no"))
        let failed = try await runner.history(of: id).filter { $0.kind == .compensationFailed }
        #expect(failed.map(\.error) == ["timed out after 10.0 seconds"])
    }
}
