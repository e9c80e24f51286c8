// What a cancelled run records, on a store that refuses work from a cancelled task (as a networked backend does),
// and that a cancelled run starts no further attempt.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

/// A store whose appends either throw CancellationError in a cancelled task, as a networked backend's do
/// (`checks`), or ignore cancellation and always complete, as a store may. Once `crashed` is set it refuses every
/// append, so that a runner stopped then records nothing more, exactly as after a kill (sessions still close).
struct CancellationCheckingStore: EventStoring {
    let base: KeyValueEventStore
    var checks = true
    let crashed = Locked(false)

    private func appending<Value: Sendable>(_ body: @escaping @Sendable () async throws -> Value) async throws -> Value {
        try await Self.appending(checks: checks, crashed: crashed, body)
    }

    static func appending<Value: Sendable>(
        checks: Bool, crashed: Locked<Bool>, _ body: @escaping @Sendable () async throws -> Value
    ) async throws -> Value {
        if crashed.withLock({ $0 }) { throw TestFailure(message: "the runner crashed") }
        if checks {
            try Task.checkCancellation()
            return try await body()
        }
        return try await Task { try await body() }.value
    }

    var limits: EventStoreLimits { base.limits }
    func append(_ events: [EventData], to stream: StreamName, expectedVersion: ExpectedVersion) async throws
        -> AppendResult
    {
        try await appending { [base] in try await base.append(events, to: stream, expectedVersion: expectedVersion) }
    }
    func append(_ appends: [StreamAppend]) async throws -> [AppendResult] {
        try await appending { [base] in try await base.append(appends) }
    }
    func read(_ stream: StreamName, from start: ReadStart, direction: ReadDirection, limit: Int) async throws
        -> [RecordedEvent]
    {
        try await base.read(stream, from: start, direction: direction, limit: limit)
    }
    func read(
        _ stream: StreamName, from start: ReadStart, direction: ReadDirection, limit: Int,
        visiting visit: (BorrowedEvent) throws -> Bool
    ) async throws -> Int {
        try await base.read(stream, from: start, direction: direction, limit: limit, visiting: visit)
    }
    func version(of stream: StreamName) async throws -> UInt64 { try await base.version(of: stream) }
    func readAll(from position: UInt64, limit: Int) async throws -> [RecordedEvent] {
        try await base.readAll(from: position, limit: limit)
    }
    func readAll(from position: UInt64, limit: Int, visiting visit: (BorrowedEvent) throws -> Bool) async throws
        -> Int
    {
        try await base.readAll(from: position, limit: limit, visiting: visit)
    }
    func lastPosition() async throws -> UInt64 { try await base.lastPosition() }
    func openSession(on stream: StreamName, sessionTimeout: Duration, openTimeout: Duration) async throws
        -> any StreamSession
    {
        CancellationCheckingSession(
            base: try await base.openSession(on: stream, sessionTimeout: sessionTimeout, openTimeout: openTimeout),
            checks: checks, crashed: crashed)
    }
    func logNotifications() async throws -> AsyncThrowingStream<Void, any Error> { try await base.logNotifications() }
    func readCategory(_ category: String, from position: UInt64, limit: Int) async throws -> [RecordedEvent] {
        try await base.readCategory(category, from: position, limit: limit)
    }
    func readEvents(ofType type: String, from position: UInt64, limit: Int) async throws -> [RecordedEvent] {
        try await base.readEvents(ofType: type, from: position, limit: limit)
    }
    func listStreams(prefix: String, after: StreamName?, limit: Int) async throws -> [StreamSummary] {
        try await base.listStreams(prefix: prefix, after: after, limit: limit)
    }
    func checkpoint(of consumer: String) async throws -> UInt64? { try await base.checkpoint(of: consumer) }
    func saveCheckpoint(_ position: UInt64, for consumer: String) async throws {
        try await base.saveCheckpoint(position, for: consumer)
    }
    func versionedMetadata(of stream: StreamName) async throws -> VersionedStreamMetadata {
        try await base.versionedMetadata(of: stream)
    }
    func setMetadata(_ metadata: StreamMetadata, for stream: StreamName, expectedVersion: ExpectedVersion)
        async throws -> UInt64
    {
        try await base.setMetadata(metadata, for: stream, expectedVersion: expectedVersion)
    }
    func delete(_ stream: StreamName, expectedVersion: ExpectedVersion, mode: DeletionMode) async throws -> UInt64 {
        try await base.delete(stream, expectedVersion: expectedVersion, mode: mode)
    }
}

private struct CancellationCheckingSession: StreamSession {
    let base: any StreamSession
    let checks: Bool
    let crashed: Locked<Bool>

    private func appending<Value: Sendable>(_ body: @escaping @Sendable () async throws -> Value) async throws -> Value {
        try await CancellationCheckingStore.appending(checks: checks, crashed: crashed, body)
    }

    var id: UUID { base.id }
    var stream: StreamName { base.stream }
    func append(_ events: [EventData], expectedVersion: ExpectedVersion) async throws -> AppendResult {
        try await appending { [base] in try await base.append(events, expectedVersion: expectedVersion) }
    }
    func append(_ appends: [StreamAppend]) async throws -> [AppendResult] {
        try await appending { [base] in try await base.append(appends) }
    }
    func renew() async throws { try await base.renew() }
    func saveCheckpoint(_ position: UInt64, for consumer: String) async throws {
        try await base.saveCheckpoint(position, for: consumer)
    }
    func leaseExpiresAt() async -> Date { await base.leaseExpiresAt() }
    func hasExpired() async -> Bool { await base.hasExpired() }
    func close() async throws { try await base.close() }
}

/// A two-step saga whose "charge" step (atMostOnce, up to 3 attempts) blocks in attempt 1 until cancelled; with
/// `succeedsWhenCancelled` it then returns normally (its effect done) instead of throwing.
private func chargeSaga(
    bank: Bank, signal: AsyncStream<String>.Continuation, succeedsWhenCancelled: Bool, compensatesFailed: Bool = false
) -> SagaDefinition<Transfer> {
    var options = StepOptions(semantics: .atMostOnce, retry: RetryPolicy(maximumAttempts: 3))
    options.compensatesFailedAction = compensatesFailed
    var saga = SagaDefinition<Transfer>("cancel-at-most-once")
    saga.step("reserve", options: StepOptions(retry: .never)) { step in
        try bank.call("reserve", key: step.idempotencyKey)
        return Receipt(reference: "r")
    } compensation: { step, _ in try bank.call("undo-reserve", key: step.idempotencyKey) }
    saga.step("charge", options: options) { step in
        if step.attempt == 1 {
            signal.yield(step.idempotencyKey)
            do {
                try await Task.sleep(for: .seconds(3_600))
            } catch {
                guard succeedsWhenCancelled else { throw error }
            }
        }
        try bank.call("charge", key: step.idempotencyKey)
        return Receipt(reference: "c\(step.attempt)")
    } compensation: { step, _ in try bank.call("undo-charge", key: step.idempotencyKey) }
    return saga
}

@Suite(.timeLimit(.minutes(10))) struct SagaCancellationTests {
    @Test func aCancelledAtMostOnceAttemptThatThrewIsRecordedAndRetriedOnAStoreThatRefusesCancelledWork()
        async throws
    {
        let base = makeStore()
        let store = CancellationCheckingStore(base: base)
        let bank = Bank()
        let (signals, signal) = AsyncStream.makeStream(of: String.self)
        let saga = chargeSaga(bank: bank, signal: signal, succeedsWhenCancelled: false)
        let id = try sagaID()
        let first = SagaRunner(store: store, clock: ManualSagaClock())
        let run = Task { try await first.start(saga, id: id, input: sampleTransfer) }
        _ = await next(signals)
        run.cancel()
        await #expect(throws: CancellationError.self) { try await run.value }
        let second = SagaRunner(store: store, clock: ManualSagaClock())
        try second.register(saga)
        let history = try await second.history(of: id)
        let failed = try #require(history.last)
        #expect(failed.kind == .stepFailed && failed.willRetry == true, "\(history.map(\.kind))")
        let outcome = try await second.resume(id)
        #expect(outcome == .completed, "outcome \(outcome); calls \(bank.names)")
        #expect(bank.calls.map(\.key) == ["\(id.rawValue)/reserve/1", "\(id.rawValue)/charge/2"])
    }

    @Test func aCancelledAtMostOnceAttemptThatReturnedIsRecordedCompleted() async throws {
        let store = CancellationCheckingStore(base: makeStore())
        let bank = Bank()
        let (signals, signal) = AsyncStream.makeStream(of: String.self)
        let saga = chargeSaga(bank: bank, signal: signal, succeedsWhenCancelled: true, compensatesFailed: true)
        let id = try sagaID()
        let first = SagaRunner(store: store, clock: ManualSagaClock())
        let run = Task { try await first.start(saga, id: id, input: sampleTransfer) }
        _ = await next(signals)
        run.cancel()
        await #expect(throws: CancellationError.self) { try await run.value }
        let second = SagaRunner(store: store, clock: ManualSagaClock())
        try second.register(saga)
        let outcome = try await second.resume(id)
        // The charge took effect once: it must be recorded completed, neither failed as crash-interrupted (and
        // undone) nor run again.
        #expect(outcome == .completed, "outcome \(outcome); calls \(bank.names)")
        #expect(bank.names == ["reserve", "charge"])
    }
}

/// A one-shot gate that waits regardless of cancellation.
private final class Gate: Sendable {
    private struct State: Sendable {
        var open = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Locked(State())

    func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = state.withLock { state in
                if state.open { return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
    }
}

/// A ManualSagaClock that opens `cancelled` when a sleep of it is cancelled, just before it throws.
private struct ReportingCancelClock: SagaClock {
    let manual = ManualSagaClock()
    let cancelled = Gate()
    func now() -> Date { manual.now() }
    func sleep(for duration: Duration) async throws {
        do {
            try await manual.sleep(for: duration)
        } catch {
            cancelled.open()
            throw error
        }
    }
}

@Suite(.timeLimit(.minutes(10))) struct SagaCancellationTimeoutTests {
    @Test func aCancelledAttemptUnderATimeoutIsRecordedByHowItsActionEnded() async throws {
        let store = makeStore()
        let bank = Bank()
        let clock = ReportingCancelClock()
        let (signals, signal) = AsyncStream.makeStream(of: String.self)
        let options = StepOptions(
            semantics: .atMostOnce, retry: RetryPolicy(maximumAttempts: 3), timeout: .seconds(60))
        var saga = SagaDefinition<Transfer>("cancel-under-timeout")
        saga.step("charge", options: options) { step in
            if step.attempt == 1 {
                signal.yield(step.idempotencyKey)
                try? await Task.sleep(for: .seconds(3_600))  // until cancelled
                // Finishes its effect only after the timeout's timer has given up: the action returns normally.
                await clock.cancelled.wait()
            }
            try bank.call("charge", key: step.idempotencyKey)
            return Receipt(reference: "c\(step.attempt)")
        } compensation: { step, _ in try bank.call("undo-charge", key: step.idempotencyKey) }
        let id = try sagaID()
        let first = SagaRunner(store: store, clock: clock)
        let definition = saga
        let run = Task { try await first.start(definition, id: id, input: sampleTransfer) }
        _ = await next(signals)
        run.cancel()
        await #expect(throws: CancellationError.self) { try await run.value }
        let second = SagaRunner(store: store, clock: ManualSagaClock())
        try second.register(saga)
        let outcome = try await second.resume(id)
        // The first attempt's charge took effect: reported as the timer's cancellation it would be recorded as a
        // failure without effect, and this atMostOnce step would be charged again.
        #expect(outcome == .completed, "outcome \(outcome)")
        #expect(bank.names == ["charge"], "\(bank.names)")
    }
}
