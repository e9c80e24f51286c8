// Defects found by the fifteenth session's review of write semantics, each of which failed before its fix on every
// backend:
// - close() from a cancelled task marked the session closed, then failed to release the lease (the backend call
//   honoured the cancellation), and every later close() did nothing: the stream stayed locked for the whole lease;
// - a session on $deleted was not exclusive: every deletion appends to it regardless;
// - setMetadata from outside a session could hide every event of the locked stream, which delete may not.

import EventStore
import EventStoreKV
import Foundation
import KeyValueTestSupport
import Testing

@Suite("Sessions: release from a cancelled task, $deleted, metadata under a lock")
struct SessionWriteReviewTests {
    @Test("close() from a cancelled task releases the stream", arguments: Backends.all)
    func closeInACancelledTask(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let session = try await store.openSession(on: stream, sessionTimeout: .seconds(3_600), openTimeout: .zero)
            let first = await Task {
                withUnsafeCurrentTask { $0?.cancel() }
                try await session.close()
            }.result
            #expect(throws: Never.self) { try first.get() }
            let next = try await store.openSession(on: stream, sessionTimeout: .seconds(60), openTimeout: .zero)
            try await next.close()
            try await session.close()  // closing again is harmless
            await #expect(throws: EventStoreError.self) { _ = try await session.append(makeEvents(1), expectedVersion: .any) }
        }
    }

    @Test("a close whose release failed is tried again by the next close")
    func closeRetriesAFailedRelease() async throws {
        let backend = FailingUpdatesBackend(InMemoryKeyValueStore())
        let store = KeyValueEventStore(backend: backend)
        let stream = try uniqueStream()
        let session = try await store.openSession(on: stream, sessionTimeout: .seconds(3_600), openTimeout: .zero)
        backend.failing.withLock { $0 = true }
        await #expect(throws: EventStoreError.self) { try await session.close() }
        // Closed for use at once, although the lease is still held.
        await #expect(throws: EventStoreError.self) { _ = try await session.append(makeEvents(1), expectedVersion: .any) }
        backend.failing.withLock { $0 = false }
        try await session.close()
        let next = try await store.openSession(on: stream, sessionTimeout: .seconds(60), openTimeout: .zero)
        try await next.close()
    }

    @Test("no session can hold $deleted, which every deletion appends to", arguments: Backends.all)
    func noSessionOnDeletedStreams(backend: Backend) async throws {
        try await backend.withStore { store in
            await #expect {
                _ = try await store.openSession(on: .deletedStreams, sessionTimeout: .seconds(60), openTimeout: .zero)
            } throws: { error in
                guard case EventStoreError.invalidArgument(let message) = error else { return false }
                return message.contains("$deleted")
            }
            let victim = try uniqueStream()
            _ = try await store.append(makeEvents(1), to: victim, expectedVersion: .noStream)
            _ = try await store.delete(victim, expectedVersion: .any, mode: .soft)
            #expect(try await store.version(of: .deletedStreams) >= 1)
        }
    }

    @Test("metadata of a stream a session holds cannot be changed from outside it", arguments: Backends.all)
    func metadataUnderALock(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let session = try await store.openSession(on: stream, sessionTimeout: .seconds(3_600), openTimeout: .zero)
            _ = try await session.append(makeEvents(3), expectedVersion: .noStream)
            // Truncating before version 4 would hide all three events, as the refused deletion would.
            await #expect {
                try await store.setMetadata(StreamMetadata(truncateBefore: 4), for: stream)
            } throws: { error in
                guard case EventStoreError.streamLocked(let locked, _, _) = error else { return false }
                return locked == stream
            }
            #expect(try await store.read(stream).count == 3)
            #expect(try await store.metadata(of: stream) == StreamMetadata())
            try await session.close()
            try await store.setMetadata(StreamMetadata(truncateBefore: 4), for: stream)
            #expect(try await store.read(stream).isEmpty)
        }
    }
}

/// Fails every `update` with `unavailable` while `failing` is set.
final class FailingUpdatesBackend: ForwardingKeyValueStore, @unchecked Sendable {
    // `@unchecked Sendable`: `failing` is a Locked (pthread mutex); the rest is immutable.
    let failing = Locked(false)

    override func update<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value> {
        if failing.withLock({ $0 }) { throw KeyValueStoreError.unavailable("injected: the backend is down") }
        return try await inner.update(body)
    }
}
