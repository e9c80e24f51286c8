// The manual clock that drives every timing test: sleepers wake only when time is advanced past their deadline,
// and a cancelled sleeper wakes at once with CancellationError.

import Foundation
import Sagas
import Testing

@Suite(.timeLimit(.minutes(10))) struct ManualSagaClockTests {
    @Test func sleepersWakeOnlyOnceTimeReachesTheirDeadline() async throws {
        let clock = ManualSagaClock(start: Date(timeIntervalSince1970: 0))
        let short = Task { try await clock.sleep(for: .seconds(2)) }
        let long = Task { try await clock.sleep(for: .seconds(10)) }
        await clock.waitForSleepers(2)
        #expect(clock.pendingSleeps == [.seconds(2), .seconds(10)])
        clock.advance(by: .seconds(3))
        try await short.value
        #expect(clock.pendingSleeps == [.seconds(7)])
        #expect(clock.now() == Date(timeIntervalSince1970: 3))
        clock.advance(by: .seconds(7))
        try await long.value
        #expect(clock.pendingSleeps.isEmpty)
        #expect(clock.requestedSleeps.sorted() == [.seconds(2), .seconds(10)])
    }

    @Test func aCancelledSleeperThrowsCancellationError() async throws {
        let clock = ManualSagaClock()
        let sleeper = Task { try await clock.sleep(for: .seconds(60)) }
        await clock.waitForSleepers(1)
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
        #expect(clock.pendingSleeps.isEmpty)
    }

    @Test func aZeroSleepReturnsAtOnce() async throws {
        let clock = ManualSagaClock()
        try await clock.sleep(for: .zero)
        #expect(clock.requestedSleeps == [.zero])
    }

    @Test func waitingForSleepersEndsWhenTheWaiterIsCancelled() async {
        let clock = ManualSagaClock()
        let waiter = Task { await clock.waitForSleepers(1) }
        waiter.cancel()
        await waiter.value
        #expect(clock.pendingSleeps.isEmpty)
    }
}
