// Saga edge cases found in the seventh session's review, each of which failed before its fix:
// - the lease keeper (StepAttempt.keepAlive) stopped renewing for good after one failed renewal, so a transient
//   backend error during a long step let the lease run out and a second runner ran the same step at the same time;
// - the saga's lease was not renewed while a step waited for its resources, so a wait within resourceWait but longer
//   than the lease lost the saga;
// - a SagaStuck record naming a step out of range trapped in stuckSagas();
// - create() accepted an id held by a running saga of another definition.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

/// An in-memory backend whose next `update` can be made to fail once with a transient error.
final class FlakyOnceKeyValueStore: KeyValueStore {
    let inner = InMemoryKeyValueStore()
    private let armed = Locked(false)
    private let injected: AsyncStream<Void>.Continuation
    let injections: AsyncStream<Void>

    init() { (injections, injected) = AsyncStream.makeStream(of: Void.self) }

    /// Makes the next `update` throw `unavailable` (as a member failing over would).
    func failNextUpdate() { armed.withLock { $0 = true } }

    func get(_ key: Key) async throws -> KeyValueEntry? { try await inner.get(key) }
    func get(_ keys: [Key]) async throws -> [KeyValueEntry?] { try await inner.get(keys) }
    func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws -> [KeyValueEntry] {
        try await inner.scan(range, direction: direction, limit: limit)
    }
    func commit(_ transaction: KeyValueTransaction) async throws -> UInt64 { try await inner.commit(transaction) }
    func update<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value> {
        let fail = armed.withLock { armed -> Bool in
            defer { armed = false }
            return armed
        }
        if fail {
            injected.yield()
            throw KeyValueStoreError.unavailable("injected transient failure")
        }
        return try await inner.update(body)
    }
    func currentRevision() async throws -> UInt64 { try await inner.currentRevision() }
    func changes(after revision: UInt64, prefix: Key) -> AsyncThrowingStream<KeyValueChange, any Error> {
        inner.changes(after: revision, prefix: prefix)
    }
    func close() async throws { try await inner.close() }
}

@Suite("Sagas: leases kept through failures and waits, and damaged or conflicting logs")
struct SagaReviewedEdgeTests {
    @Test("one failed lease renewal during a long step must not let a second runner run the step at the same time")
    func oneFailedRenewalLetsASecondRunnerOverlap() async throws {
        let backend = FlakyOnceKeyValueStore()
        let store = KeyValueEventStore(backend: backend)
        let inFlight = Locked(0)
        let overlaps = Locked(0)
        let invocations = Locked(0)
        let gate = AsyncStream.makeStream(of: Void.self)
        var saga = SagaDefinition<Transfer>("long-step")
        saga.step("charge", options: StepOptions(retry: .never)) { _ -> NoOutput in
            let first = invocations.withLock {
                $0 += 1
                return $0 == 1
            }
            let running = inFlight.withLock {
                $0 += 1
                return $0
            }
            if running > 1 { overlaps.withLock { $0 += 1 } }
            defer { inFlight.withLock { $0 -= 1 } }
            if first {
                // StepStarted is durable and the lease fresh. The next backend update is the keeper's first
                // renewal (a third of the session timeout from now); make it fail once, then keep working.
                backend.failNextUpdate()
                var iterator = gate.stream.makeAsyncIterator()
                _ = await iterator.next()
            }
            return NoOutput()
        }
        // Sessions of 10 s, renewed every 3.3 s while the step runs (long enough that a loaded CI machine does not
        // lose them between the saga's own appends: 6 s leases were lost in clean-clone runs).
        let configuration = SagaRunnerConfiguration(sessionTimeout: .seconds(10), lockWait: .seconds(60))
        let runnerA = SagaRunner(store: store, configuration: configuration)
        let runnerB = SagaRunner(store: store, configuration: configuration)
        try runnerB.register(saga)
        let id = try sagaID()
        let definition = saga
        let (endedA, endA) = AsyncStream.makeStream(of: Void.self)
        let first = Task {
            defer { endA.yield() }
            return try await runnerA.start(definition, id: id, input: sampleTransfer)
        }

        // Wait for the one injected renewal failure; from here on runner A is alive and its step still running. Should
        // runner A end before its step ever ran, report that instead of waiting for an injection that cannot come.
        let injected = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                var injections = backend.injections.makeAsyncIterator()
                return await injections.next() != nil
            }
            group.addTask {
                // Not `first.result`: awaiting a task does not end when this child is cancelled, and runner A waits
                // for the gate this test opens only after the group returns.
                var ended = endedA.makeAsyncIterator()
                _ = await ended.next()
                return false
            }
            let winner = await group.next() ?? false
            group.cancelAll()
            return winner
        }
        guard injected else {
            Issue.record("runner A ended before its step ran: \(await first.result)")
            return
        }
        // A second runner (another node recovering, or an operator's resume) waits for the saga's lock. When runner
        // A gave up renewing after that one failure, the lock ran out while A's step was in flight, and B ran the
        // step too. Give it two lease lengths and more to do so, then let A's step finish.
        let second = Task { try await runnerB.resume(id) }
        try await Task.sleep(for: .seconds(22))
        #expect(invocations.withLock { $0 } == 1, "a second runner ran the step while the first still held it")
        gate.continuation.yield()
        #expect(try await first.value == .completed)
        #expect(try await second.value == .completed)
        #expect(overlaps.withLock { $0 } == 0, "the step ran in two runners at the same time")
    }

    @Test("waiting for a resource within resourceWait must not lose the saga's own lease")
    func waitingForAResourceLosesTheSaga() async throws {
        let store = makeStore()
        // Another saga's step holds resource "alice" with a 32 s lease that runs out on its own (its runner died).
        _ = try await store.openSession(
            on: try StreamName.system("$saga-resource-alice"), sessionTimeout: .seconds(32), openTimeout: .zero)
        var saga = SagaDefinition<Transfer>("waits")
        saga.step("debit", options: StepOptions(retry: .never), resources: { [$0.from] }) { _ in NoOutput() }
        // The saga's lease (14 s, renewed every 4.7 s) is shorter than the wait allowed for resources (60 s), as with
        // the defaults (30 s and 60 s). The resource frees up after about 32 s, well within resourceWait. (Leases
        // this long keep a loaded CI machine from losing the saga between its own appends: 8 s leases were lost in
        // clean-clone runs.)
        let runner = SagaRunner(
            store: store,
            configuration: SagaRunnerConfiguration(sessionTimeout: .seconds(14), resourceWait: .seconds(60)))
        let outcome = try await runner.start(saga, id: try sagaID(), input: sampleTransfer)
        #expect(outcome == .completed)
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
        // It used to trap on stepNames[7].
        await #expect {
            _ = try await runner.stuckSagas()
        } throws: { error in
            guard case EventStoreError.corrupted(let location, _) = error else { return false }
            return location.contains(id.rawValue)
        }
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
@Suite("Sagas: reserved ids, backoff without a pause, very long timeouts")
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
