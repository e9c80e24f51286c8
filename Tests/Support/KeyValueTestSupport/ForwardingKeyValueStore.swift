// A key-value store that forwards every call to another, for tests that inject faults, hooks or counters into one
// call: a subclass overrides that call and leaves the rest to this class.
//
// Invariants:
// - Every requirement of KeyValueStore is implemented here (the borrowed reads too), so a subclass's override is
//   what the store calls, never a protocol extension's default.
// - This class holds no mutable state of its own.

import EventStore
import EventStoreKV

/// Forwards every call to ``inner``. Subclasses override the calls they change.
///
/// `@unchecked Sendable`: this class's only stored property is the immutable `inner`, itself Sendable; subclasses
/// guard their own state (with `Locked` or atomics).
open class ForwardingKeyValueStore: KeyValueStore, @unchecked Sendable {
    /// The store every call goes to.
    public let inner: any KeyValueStore

    /// Forwards to `inner`.
    public init(_ inner: any KeyValueStore) { self.inner = inner }

    open func get(_ key: Key) async throws -> KeyValueEntry? { try await inner.get(key) }

    open func get(_ keys: [Key]) async throws -> [KeyValueEntry?] { try await inner.get(keys) }

    open func get(_ keys: [Key], visiting visit: (Int, BorrowedEntry?) throws -> Void) async throws {
        try await inner.get(keys, visiting: visit)
    }

    open func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws -> [KeyValueEntry] {
        try await inner.scan(range, direction: direction, limit: limit)
    }

    open func scan(
        _ range: KeyRange, direction: ScanDirection, limit: Int, visiting visit: (BorrowedEntry) throws -> Bool
    ) async throws -> Int {
        try await inner.scan(range, direction: direction, limit: limit, visiting: visit)
    }

    open func commit(_ transaction: KeyValueTransaction) async throws -> UInt64 { try await inner.commit(transaction) }

    open func update<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value> {
        try await inner.update(body)
    }

    open func currentRevision() async throws -> UInt64 { try await inner.currentRevision() }

    open func changes(after revision: UInt64, prefix: Key) -> AsyncThrowingStream<KeyValueChange, any Error> {
        inner.changes(after: revision, prefix: prefix)
    }

    open func close() async throws { try await inner.close() }
}
