// A CheckpointedProjection run that is cancelled before it reads its checkpoint still ends as `run` documents a
// cancelled run ends: normally, returning the stored checkpoint (and, when exclusive, releasing its lease).
//
// Found by review r2 (each test failed before the fix): `consume` began with `store.checkpoint(of:)` in the caller's
// task, so on a backend whose reads honour cancellation (etcd; here CancellableReadsKeyValueStore) a run started in a
// cancelled task, or cancelled while it took the lease, threw CancellationError instead. Each test guards:
// - sharedRunCancelledBeforeItReads: a shared run started in a cancelled task returns the stored checkpoint.
// - exclusiveRunCancelledAsItAcquires: an exclusive run cancelled as its lease is handed over returns the stored
//   checkpoint and releases the lease.
// - sharedRunCancelledOnEtcd: the same as the first on a real etcd (whose reads are aborted by cancellation).

import EventStore
import EventStoreKV
import Foundation
import KeyValueTestSupport
import Testing

/// An in-memory backend whose reads honour Task cancellation, as etcd's do (EtcdHTTPConnection: a read request is
/// aborted by cancellation, `cancellable: true`); the contract allows it, and CheckpointedProjection's own comments
/// rely on it ("read outside the cancelled task, which a backend would refuse").
final class CancellableReadsKeyValueStore: ForwardingKeyValueStore, @unchecked Sendable {
    // @unchecked: no state of its own (see ForwardingKeyValueStore).
    override func get(_ key: Key) async throws -> KeyValueEntry? {
        try Task.checkCancellation()
        return try await inner.get(key)
    }

    override func get(_ keys: [Key]) async throws -> [KeyValueEntry?] {
        try Task.checkCancellation()
        return try await inner.get(keys)
    }
}

@Suite("Checkpointed projection: a run cancelled before it reads its checkpoint")
struct CancelledProjectionCheckpointTests {
    @Test("a shared run started in a cancelled task returns the stored checkpoint, as run's doc says")
    func sharedRunCancelledBeforeItReads() async throws {
        let store = KeyValueEventStore(backend: CancellableReadsKeyValueStore(InMemoryKeyValueStore()))
        _ = try await store.append(samples(3), to: try stream("cpc-shared-1"), expectedVersion: .noStream)
        try await store.saveCheckpoint(2, for: "cpc-shared")
        let projection = CheckpointedProjection(store: store, consumer: "cpc-shared")
        let run = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await projection.run { _ in }
        }
        switch await run.result {
        case .success(let saved): #expect(saved == 2)
        case .failure(let error): Issue.record("a cancelled run threw instead of returning normally: \(error)")
        }
        try await store.close()
    }

    @Test("an exclusive run cancelled just as it gets the lease returns the stored checkpoint and releases the lease")
    func exclusiveRunCancelledAsItAcquires() async throws {
        let base = KeyValueEventStore(backend: CancellableReadsKeyValueStore(InMemoryKeyValueStore()))
        _ = try await base.append(samples(3), to: try stream("cpc-excl-1"), expectedVersion: .noStream)
        try await base.saveCheckpoint(2, for: "cpc-excl")
        // The cancellation arrives while the lease is being taken (after its transaction was sent: a commit is not
        // withdrawn, so the session is handed back), which is deterministic here: the session's hand-over cancels.
        let store = ForwardingEventStore(
            base: base,
            sessions: { session in
                withUnsafeCurrentTask { $0?.cancel() }
                return session
            })
        let projection = CheckpointedProjection(
            store: store, consumer: "cpc-excl", exclusivity: .exclusive(lease: .seconds(3_600)))
        let run = Task { try await projection.run { _ in } }
        switch await run.result {
        case .success(let saved): #expect(saved == 2)
        case .failure(let error): Issue.record("a cancelled run threw instead of returning normally: \(error)")
        }
        // Either way the lease was released.
        let next = try await base.openSession(
            on: try StreamName.system("$consumer-cpc-excl"), sessionTimeout: .seconds(5), openTimeout: .zero)
        try await next.close()
        try await base.close()
    }

    @Test("on etcd, a shared run started in a cancelled task returns the stored checkpoint", .enabled(if: Backend.etcd != nil))
    func sharedRunCancelledOnEtcd() async throws {
        try await Backend.etcd!.withStore { store in
            _ = try await store.append(samples(3), to: try stream("cpc-etcd-1"), expectedVersion: .noStream)
            try await store.saveCheckpoint(2, for: "cpc-etcd")
            let projection = CheckpointedProjection(store: store, consumer: "cpc-etcd")
            let run = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await projection.run { _ in }
            }
            switch await run.result {
            case .success(let saved): #expect(saved == 2)
            case .failure(let error): Issue.record("a cancelled run threw instead of returning normally: \(error)")
            }
        }
    }
}
