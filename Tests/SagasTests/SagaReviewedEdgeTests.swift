// Saga edge cases found in the seventh session's review, each of which failed before its fix:
// - the lease keeper (StepAttempt.keepAlive) stopped renewing for good after one failed renewal, so a transient
//   backend error during a long step let the lease run out and a second runner ran the same step at the same time;
// - the saga's lease was not renewed while a step waited for its resources, so a wait within resourceWait but longer
//   than the lease lost the saga (these two run in Tests/SagaLeaseChild);
// - a SagaStuck record naming a step out of range trapped in stuckSagas();
// - create() accepted an id held by a running saga of another definition.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite("Sagas: leases kept through failures and waits, and damaged or conflicting logs", .timeLimit(.minutes(10)))
struct SagaReviewedEdgeTests {
    // The two lease scenarios run in a child process (Tests/SagaLeaseChild): their leases run in real time, and
    // inside the test run hundreds of other tasks share two cooperative threads with their renewals, which loaded CI
    // runs delayed past 6 and 8 s leases. In a process of their own, only the kernel's scheduling stands between a
    // renewal and its time.

    @Test("one failed lease renewal during a long step must not let a second runner run the step at the same time")
    func oneFailedRenewalLetsASecondRunnerOverlap() async throws {
        try await Self.expectLeaseScenarioHolds("renewal-failure")
    }

    @Test("waiting for a resource within resourceWait must not lose the saga's own lease")
    func waitingForAResourceLosesTheSaga() async throws {
        try await Self.expectLeaseScenarioHolds("resource-wait")
    }

    /// Runs `scenario` in the lease child and expects every one of its checks to hold.
    static func expectLeaseScenarioHolds(_ scenario: String) async throws {
        let result = try await SagaCrashTests.runChild([scenario], killAfter: nil, executable: "SagaLeaseChild")
        #expect(result.status == .exited(0) && result.output == "ok\n", "\(result.output)\(result.errors)")
    }

    @Test("a SagaStuck record naming a step out of range is reported as corruption, not a crash")
    func stuckRecordWithABadStepIndex() async throws {
        let store = makeStore()
        let runner = SagaRunner(store: store)
        let saga = transferSaga(bank: Bank())
        try runner.register(saga)
        let id = try sagaID()
        try await runner.create(saga, id: id, input: sampleTransfer)
        // A damaged (or hand-edited) log: SagaStuck names step 7 of a 3-step saga. Every step-bearing record is
        // checked against the step count when the log is folded, except SagaStuck.
        let stream = try StreamName.system("$saga-\(id.rawValue)")
        let damaged = Data(#"{"kind":"SagaStuck","at":"2026-11-23T08:00:00Z","step":7,"error":"x"}"#.utf8)
        _ = try await store.append(
            [EventData(type: "SagaStuck", data: damaged)], to: stream, expectedVersion: .exact(1))
        // It used to trap on stepNames[7]. The operator's listing leaves the damaged saga out (so that it hides no
        // other), and recovery reports the corruption, naming the saga's log.
        #expect(try await runner.stuckSagas().isEmpty)
        let recovered = try await runner.recover()
        guard recovered.count == 1, case .failed(let reason) = recovered[0].result else {
            Issue.record("recovery: \(recovered)")
            return
        }
        #expect(reason.contains("corrupted") && reason.contains(id.rawValue), "\(reason)")
    }

    @Test("creating a saga whose id a running saga of another definition holds is refused")
    func createOverARunningSagaOfAnotherDefinition() async throws {
        let store = makeStore()
        // The "transfer" saga is running and its runner holds the saga's lock.
        let blocked = try await BlockedTransfer.start(on: store)

        var refund = SagaDefinition<Transfer>("refund")
        refund.step("pay-back") { _ in NoOutput() }
        let other = SagaRunner(store: store, clock: ManualSagaClock())
        // Documented: throws invalidArgument "if a saga with this id exists under another definition". When the
        // existing saga was locked, create() took the streamLocked branch and returned without checking.
        await #expect {
            try await other.create(refund, id: blocked.id, input: sampleTransfer)
        } throws: { error in
            guard case EventStoreError.invalidArgument = error else { return false }
            return true
        }
        await blocked.stop()
    }
}

/// Found in the eighth session's review:
/// - a saga id starting with "resource-" named a stream that is also a resource's lock stream ("$saga-resource-alice"
///   for saga "resource-alice" and for resource "alice"): its runner waited on its own lock, start failed, and every
///   recovery left the saga to "another runner" that did not exist;
/// - with no initial pause, a late attempt's backoff (0 × ∞ = NaN) came out as the maximum pause instead of none;
/// - the real clock's sleep trapped for a timeout written as "no limit" (.seconds(Int64.max)).
@Suite("Sagas: reserved ids, backoff without a pause, very long timeouts", .timeLimit(.minutes(10)))
struct SagaIDAndClockEdgeTests {
    @Test("a saga id starting with resource- is refused, while a stored one still decodes")
    func reservedPrefix() throws {
        #expect(throws: EventStoreError.self) { try SagaID("resource-alice") }
        #expect(try SagaID("resources") == SagaID("resources"))
        let stored = try JSONDecoder().decode([SagaID].self, from: Data(#"["resource-alice"]"#.utf8))
        #expect(stored.map(\.rawValue) == ["resource-alice"])
    }

    @Test("saga ids that differ in bytes are different ids, as their streams are")
    func idsCompareByBytes() throws {
        let composed = try SagaID("caf\u{E9}-1")
        let decomposed = try SagaID("cafe\u{301}-1")
        #expect(composed.rawValue == decomposed.rawValue, "Swift's String calls them equal")
        #expect(composed != decomposed)
        #expect(Set([composed, decomposed]).count == 2)
        #expect((composed < decomposed) != (decomposed < composed))
    }

    @Test("with no initial pause, every attempt's backoff is zero, however late")
    func zeroInitialBackoff() {
        let policy = RetryPolicy(maximumAttempts: 5_000, initialBackoff: .zero, multiplier: 2, jitter: 0)
        for attempt in [1, 10, 1_024, 1_100, 4_999] {
            #expect(policy.backoff(afterAttempt: attempt, random: 0) == .zero, "attempt \(attempt)")
        }
    }

    @Test("the real clock sleeps for .seconds(Int64.max) until cancelled, without trapping")
    func sleepWithoutLimit() async {
        await #expect(processExitsWith: .success) {
            let sleeper = Task { try await SystemSagaClock().sleep(for: .seconds(Int64.max)) }
            try await Task.sleep(for: .milliseconds(50))
            sleeper.cancel()
            guard case .failure(let error) = await sleeper.result, error is CancellationError else { exit(3) }
        }
    }
}
