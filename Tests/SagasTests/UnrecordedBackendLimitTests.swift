// An action that returned, but whose StepCompleted a backend refuses as too large for one transaction (etcd's
// --max-request-bytes, 1.5 MiB by default, far below the 16 MiB maximumEventSize), is treated like one the store
// refuses with eventTooLarge: failed for good as having taken effect, and compensated (twentieth session's review:
// the refusal was an untyped backend error, which stopped the run, so every recovery ran the action again).

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

/// An in-memory key-value store that refuses a transaction over `limit` bytes of keys and values, as the etcd backend
/// does (EtcdTransaction.checkSize: `KeyValueStoreError.transactionTooLarge`, nothing written).
final class RequestLimitedKeyValueStore: KeyValueStore, @unchecked Sendable {
    // @unchecked Sendable: its only stored properties are immutable (`inner` is itself Sendable, `limit` an Int).
    let inner: InMemoryKeyValueStore
    let limit: Int

    init(inner: InMemoryKeyValueStore, limit: Int) {
        self.inner = inner
        self.limit = limit
    }

    private func check(_ transaction: KeyValueTransaction) throws {
        var bytes = 0
        for write in transaction.writes {
            switch write {
            case .put(let key, let value, _): bytes += key.count + value.count
            case .delete(let key): bytes += key.count
            }
        }
        if bytes > limit {
            throw KeyValueStoreError.transactionTooLarge(
                operations: transaction.writes.count, bytes: bytes, limit: "a request limit of \(limit) bytes")
        }
    }

    func get(_ key: Key) async throws -> KeyValueEntry? { try await inner.get(key) }
    func get(_ keys: [Key]) async throws -> [KeyValueEntry?] { try await inner.get(keys) }
    func get(_ keys: [Key], visiting visit: (Int, BorrowedEntry?) throws -> Void) async throws {
        try await inner.get(keys, visiting: visit)
    }
    func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws -> [KeyValueEntry] {
        try await inner.scan(range, direction: direction, limit: limit)
    }
    func scan(
        _ range: KeyRange, direction: ScanDirection, limit: Int, visiting visit: (BorrowedEntry) throws -> Bool
    ) async throws -> Int {
        try await inner.scan(range, direction: direction, limit: limit, visiting: visit)
    }
    func commit(_ transaction: KeyValueTransaction) async throws -> UInt64 {
        try check(transaction)
        return try await inner.commit(transaction)
    }
    func update<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value> {
        try await inner.update { context in
            let result = try await body(context)
            try self.check(result.transaction)
            return result
        }
    }
    func currentRevision() async throws -> UInt64 { try await inner.currentRevision() }
    func changes(after revision: UInt64, prefix: Key) -> AsyncThrowingStream<KeyValueChange, any Error> {
        inner.changes(after: revision, prefix: prefix)
    }
    func close() async throws { try await inner.close() }
}

@Suite struct UnrecordedBackendLimitTests {
    @Test func anOutputTheBackendRefusesAsTooLargeIsCompensatedNotRunAgain() async throws {
        let now = Date()
        // A backend that takes at most 64 KiB per transaction (etcd: 1.5 MiB); events may be 16 MiB (the default).
        let store = KeyValueEventStore(
            backend: RequestLimitedKeyValueStore(inner: InMemoryKeyValueStore(clock: { now }), limit: 64 * 1024),
            clock: { now })
        let bank = Bank()
        var saga = SagaDefinition<Transfer>("backend-limit")
        saga.step("debit", options: StepOptions(retry: .never)) { step in
            try bank.call("debit", key: step.idempotencyKey)  // the effect happens here
            // Far below maximumEventSize, above what the backend takes in one transaction.
            return Receipt(reference: String(repeating: "x", count: 100_000))
        } compensation: { step, _ in
            try bank.call("undo-debit", key: step.idempotencyKey)
        }
        let id = try sagaID()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        do {
            let outcome = try await runner.start(saga, id: id, input: sampleTransfer)
            guard case .compensated(let failedStep, _) = outcome else {
                Issue.record("outcome \(outcome)")
                return
            }
            #expect(failedStep == "debit")
        } catch {
            Issue.record("the run stopped, leaving debit's attempt open: \(error)")
        }
        // Every recovery would run the action again and stop again: the saga never ends, and the effect repeats.
        _ = try? await runner.recover()
        _ = try? await runner.recover()
        #expect(bank.names == ["debit", "undo-debit"], "calls: \(bank.names)")
    }

    /// A store whose backend takes at most `limit` bytes per transaction, on a clock that stands still.
    private func limitedStore(_ limit: Int) -> KeyValueEventStore {
        let now = Date()
        return KeyValueEventStore(
            backend: RequestLimitedKeyValueStore(inner: InMemoryKeyValueStore(clock: { now }), limit: limit),
            clock: { now })
    }

    // Twenty-first session's review (probes that passed, kept): the same refusal in a parallel group, and of a
    // compensation's appends.

    @Test func aParallelStepsUnrecordableOutputCompensatesTheGroupOnce() async throws {
        let store = limitedStore(64 * 1024)
        let bank = Bank()
        var saga = SagaDefinition<Transfer>("backend-limit-parallel")
        saga.step("pre") { step in
            try bank.call("pre", key: step.idempotencyKey)
            return Receipt(reference: "p")
        } compensation: { step, _ in try bank.call("undo-pre", key: step.idempotencyKey) }
        saga.inParallel { group in
            group.step("a", options: StepOptions(semantics: .atMostOnce, retry: .never)) { step in
                try bank.call("a", key: step.idempotencyKey)
                return Receipt(reference: String(repeating: "x", count: 100_000))
            } compensation: { step, output in
                #expect(output == nil, "the output was never recorded")
                try bank.call("undo-a", key: step.idempotencyKey)
            }
            group.step("b") { step in
                try bank.call("b", key: step.idempotencyKey)
                return Receipt(reference: "b")
            } compensation: { step, _ in try bank.call("undo-b", key: step.idempotencyKey) }
        }
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let outcome = try await runner.start(saga, id: try sagaID(), input: sampleTransfer)
        guard case .compensated = outcome else {
            Issue.record("outcome \(outcome)")
            return
        }
        _ = try await runner.recover()
        #expect(bank.names.sorted() == ["a", "b", "pre", "undo-a", "undo-b", "undo-pre"], "calls: \(bank.names)")
    }

    @Test func aCompensationWhoseAppendsAreTooLargeLeavesTheSagaStuckAndWritesNothing() async throws {
        let store = limitedStore(64 * 1024)
        let bank = Bank()
        var saga = SagaDefinition<Transfer>("backend-limit-compensation")
        let retry = RetryPolicy(maximumAttempts: 2, initialBackoff: .zero, jitter: 0)
        saga.appendingStep("pre", options: StepOptions(compensationRetry: retry)) { _ in
            StepEffect(output: 1, appends: [])
        } compensation: { step, _ in
            try bank.call("undo-pre", key: step.idempotencyKey)
            return [
                StreamAppend(
                    stream: try StreamName("refunds-1"), expectedVersion: .any,
                    events: [EventData(type: "Refunded", data: Data(repeating: 1, count: 100_000))])
            ]
        }
        saga.step("fail", options: StepOptions(retry: .never)) { _ -> Int in
            throw PermanentStepFailure(LimitProbeFailure())
        }
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let outcome = try await runner.start(saga, id: try sagaID(), input: sampleTransfer)
        guard case .stuck(let step, _) = outcome else {
            Issue.record("outcome \(outcome)")
            return
        }
        #expect(step == "pre")
        #expect(bank.names == ["undo-pre", "undo-pre"], "two attempts, as the policy allows")
        #expect(try await store.version(of: try StreamName("refunds-1")) == 0)
    }

    @Test func scavengeHalvesItsBatchesUnderARequestLimitAndRemovesEveryHiddenEvent() async throws {
        let store = limitedStore(4 * 1024)
        let hidden = try StreamName("hidden-1")
        for _ in 0..<300 {
            _ = try await store.append([EventData(type: "T", data: Data("x".utf8))], to: hidden, expectedVersion: .any)
        }
        let kept = try StreamName("kept-1")
        _ = try await store.append([EventData(type: "T", data: Data("k".utf8))], to: kept, expectedVersion: .any)
        try await store.setMetadata(StreamMetadata(maxCount: 1), for: hidden)
        let report = try await store.scavenge()
        #expect(report.eventsRemoved == 299)
        #expect(try await store.readAll(from: 1, limit: 1000).map(\.position) == [300, 301])
        #expect(try await store.read(hidden).map(\.version) == [300])
    }
}

private struct LimitProbeFailure: Error {}
