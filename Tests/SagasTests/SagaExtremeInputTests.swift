// Extreme inputs to retry policies, the manual clock and saga clocks, found by the eleventh session's third review:
// each trapped, or wrote a saga log no replay could read, before its fix.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite("Sagas: extreme retry, clock and random inputs", .timeLimit(.minutes(10)))
struct SagaExtremeInputTests {
    @Test("backoff after attempt Int.min or 0 is the initial pause, not a trap")
    func backoffBeforeTheFirstAttempt() {
        let policy = RetryPolicy(initialBackoff: .seconds(2), jitter: 0)
        #expect(policy.backoff(afterAttempt: .min, random: 0.5) == .seconds(2))
        #expect(policy.backoff(afterAttempt: 0, random: 0.5) == .seconds(2))
    }

    @Test("a NaN random number or jitter counts as no jitter")
    func nanRandomAndJitter() {
        let policy = RetryPolicy(initialBackoff: .seconds(2), jitter: 0.5)
        #expect(policy.backoff(afterAttempt: 1, random: .nan) == .seconds(2))
        #expect(RetryPolicy(initialBackoff: .seconds(2), jitter: .nan).backoff(afterAttempt: 1, random: 0.9) == .seconds(2))
    }

    @Test("a runner whose random source gives NaN still retries and completes")
    func runnerWithNaNRandom() async throws {
        let bank = Bank()
        bank.fail("debit", times: 1)
        let clock = ManualSagaClock()
        let runner = SagaRunner(store: makeStore(), clock: clock, configuration: SagaRunnerConfiguration(random: { .nan }))
        let saga = transferSaga(bank: bank, options: ["debit": StepOptions(retry: RetryPolicy(initialBackoff: .seconds(1)))])
        let run = Task { try await runner.start(saga, id: try sagaID(), input: sampleTransfer) }
        await clock.waitForSleepers(1)
        clock.advance(by: .seconds(1))
        #expect(try await run.value == .completed)
    }

    @Test("the manual clock advances by durations past Int64 seconds without trapping")
    func advanceByEnormousDuration() {
        let clock = ManualSagaClock()
        let start = clock.now()
        clock.advance(by: .seconds(Int64.max) * 2)
        #expect(clock.now() > start)
        let backoff = RetryPolicy(initialBackoff: .seconds(Int64.max) * 2, maximumBackoff: .seconds(Int64.max) * 2)
        #expect(backoff.backoff(afterAttempt: 1, random: 0) > .seconds(Int64.max))
    }

    @Test("a clock started at NaN reports its sleepers' remaining time as zero instead of trapping")
    func pendingSleepsAtNaNStart() async throws {
        let clock = ManualSagaClock(start: Date(timeIntervalSince1970: .nan))
        let sleeper = Task { try await clock.sleep(for: .seconds(1)) }
        await clock.waitForSleepers(1)
        #expect(clock.pendingSleeps == [.zero])
        sleeper.cancel()
        _ = try? await sleeper.value
    }

    @Test("a saga clock before year 1 is refused when the saga starts, and leaves no unreadable log")
    func clockBeforeYearOne() async throws {
        let store = makeStore()
        let runner = SagaRunner(store: store, clock: ManualSagaClock(start: Date(timeIntervalSince1970: -1e11)))
        let id = try sagaID("ancient")
        await #expect(throws: (any Error).self) {
            _ = try await runner.start(transferSaga(bank: Bank()), id: id, input: sampleTransfer)
        }
        #expect(try await store.readAll(from: 1, limit: 10).isEmpty, "nothing was written")
    }
}
