// The key-value contract: the one interface every backend (page file, in-memory, etcd) implements, and the only
// thing KeyValueEventStore is built on.
//
// Invariants every implementation keeps (the conformance suite checks them):
// - Keys are byte strings ordered lexicographically by unsigned byte, shorter prefix first.
// - Every committed transaction gets a store-wide revision, strictly increasing. A key's `modRevision` is the
//   revision of its last write; its `version` counts writes since it was created and resets when it is deleted or
//   expires (etcd's semantics).
// - A transaction is all-or-nothing: its conditions are checked and its writes applied atomically against the state
//   left by every transaction ordered before it.
// - `commit` and `update` return only once the transaction is as durable as the backend promises (fsynced for the
//   page file in full durability; replicated to a quorum for etcd). Reads (`get`, `scan`) observe only such commits.
// - A key written with a TTL reads as absent once the TTL has passed, everywhere: gets, scans and conditions. A
//   backend may end it sooner, but only once no holder of it can be alive: what a TTL key outlasts differs by
//   backend (see `KeyWrite.put`).

import EventStore

/// A key in a ``KeyValueStore``: bytes, ordered lexicographically by unsigned byte value.
public typealias Key = [UInt8]

/// One stored key with its value and its version counters.
public struct KeyValueEntry: Sendable, Hashable {
    /// The key.
    public var key: Key
    /// The value bytes.
    public var value: [UInt8]
    /// Number of writes since the key was created (1 after the first put); reset by a delete or an expiry.
    public var version: UInt64
    /// The store-wide revision of the transaction that last wrote the key.
    public var modRevision: UInt64

    /// Creates an entry.
    public init(key: Key, value: [UInt8], version: UInt64, modRevision: UInt64) {
        self.key = key
        self.value = value
        self.version = version
        self.modRevision = modRevision
    }
}

/// A half-open range of keys, `lowerBound ..< upperBound`; a nil upper bound means "to the end of the keyspace".
public struct KeyRange: Sendable, Hashable {
    /// The first key included.
    public var lowerBound: Key
    /// The first key excluded, or nil for no upper bound.
    public var upperBound: Key?

    /// Creates the range `lowerBound ..< upperBound`.
    public init(from lowerBound: Key, to upperBound: Key?) {
        self.lowerBound = lowerBound
        self.upperBound = upperBound
    }

    /// Every key that starts with `prefix`.
    public static func prefix(_ prefix: Key) -> KeyRange {
        KeyRange(from: prefix, to: Key.successor(ofPrefix: prefix))
    }

    /// Whether `key` lies in the range.
    public func contains(_ key: Key) -> Bool {
        guard !key.lexicographicallyPrecedes(lowerBound) else { return false }
        if let upperBound { return key.lexicographicallyPrecedes(upperBound) }
        return true
    }
}

extension Array where Element == UInt8 {
    /// The smallest key greater than every key that starts with `prefix`, or nil if there is none (all 0xFF).
    public static func successor(ofPrefix prefix: [UInt8]) -> [UInt8]? {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return nil
    }
}

/// The order of a scan.
public enum ScanDirection: Sendable, Hashable {
    /// Ascending key order.
    case forward
    /// Descending key order.
    case backward
}

/// A condition a transaction requires of one key, checked atomically with the transaction's writes.
public enum KeyCondition: Sendable, Hashable {
    /// The key does not exist (or has expired).
    case absent(Key)
    /// The key exists.
    case present(Key)
    /// The key exists with exactly this per-key version.
    case version(Key, equals: UInt64)
    /// The key exists and was last written by exactly this revision. Unlike `version`, this cannot match a key that
    /// was deleted and written again, so it is what fencing uses.
    case modRevision(Key, equals: UInt64)

    /// The key the condition is about.
    public var key: Key {
        switch self {
        case .absent(let key), .present(let key), .version(let key, _), .modRevision(let key, _): key
        }
    }

    /// Whether the condition holds for `entry` (nil when the key is absent).
    public func isSatisfied(by entry: KeyValueEntry?) -> Bool {
        switch self {
        case .absent: entry == nil
        case .present: entry != nil
        case .version(_, let version): entry?.version == version
        case .modRevision(_, let revision): entry?.modRevision == revision
        }
    }
}

/// One write of a transaction.
public enum KeyWrite: Sendable, Hashable {
    /// Stores `value` under `key`. With a TTL the key reads as absent once the TTL has passed (a lease), or once
    /// nothing that could have written it is still running, whichever comes first:
    /// - In memory (``InMemoryKeyValueStore``): nothing outlives the store anyway.
    /// - Page file (``PageFileKeyValueStore``): until its TTL or the end of the writable open that wrote it. A
    ///   directory has one writer at a time, so a TTL key written before the current writable open (closed or
    ///   crashed since) belongs to no live holder; it reads as expired from the next writable open on. A read-only
    ///   open cannot know when the writer it reads beside opened, so it judges TTL keys by their expiry alone.
    /// - etcd (``EtcdKeyValueStore``): until its TTL (a lease of the cluster, which outlives any one client).
    case put(Key, [UInt8], ttl: Duration? = nil)
    /// Removes `key`; removing an absent key is not an error.
    case delete(Key)

    /// The key written.
    public var key: Key {
        switch self {
        case .put(let key, _, _), .delete(let key): key
        }
    }

    /// The key's length in bytes and, for a put, the value's (read in place, without copying either array).
    var byteCounts: (key: Int, value: Int?) {
        switch self {
        case .put(let key, let value, _): (key.count, value.count)
        case .delete(let key): (key.count, nil)
        }
    }
}

/// An atomic transaction: every condition must hold, then every write is applied, all or nothing.
public struct KeyValueTransaction: Sendable, Hashable {
    /// Conditions checked before any write; if one fails, nothing is written.
    public var conditions: [KeyCondition]
    /// Writes applied in order; a later write to the same key wins.
    public var writes: [KeyWrite]

    /// Creates a transaction.
    public init(conditions: [KeyCondition] = [], writes: [KeyWrite] = []) {
        self.conditions = conditions
        self.writes = writes
    }
}

/// A change to one key, as delivered by ``KeyValueStore/changes(after:prefix:)``.
public struct KeyValueChange: Sendable, Hashable {
    /// What happened to the key.
    public enum Kind: Sendable, Hashable {
        /// The key was written.
        case put
        /// The key was deleted (or its TTL ran out, where the backend reports expiries).
        case delete
    }

    /// The revision of the transaction that made the change.
    public var revision: UInt64
    /// Whether the key was written or deleted.
    public var kind: Kind
    /// The key changed.
    public var key: Key

    /// Creates a change record.
    public init(revision: UInt64, kind: Kind, key: Key) {
        self.revision = revision
        self.kind = kind
        self.key = key
    }
}

/// The reads available inside ``KeyValueStore/update(_:)``. Reads see every transaction ordered before the update,
/// and each one read becomes part of the update's read set.
public protocol KeyValueReadContext: Sendable {
    /// The entry for `key`, or nil if absent or expired.
    func get(_ key: Key) async throws -> KeyValueEntry?
    /// The entries for `keys`, in order (nil where absent).
    func get(_ keys: [Key]) async throws -> [KeyValueEntry?]
}

extension KeyValueReadContext {
    /// Default batch get: one `get` per key.
    public func get(_ keys: [Key]) async throws -> [KeyValueEntry?] {
        var result: [KeyValueEntry?] = []
        result.reserveCapacity(keys.count)
        for key in keys { result.append(try await get(key)) }
        return result
    }
}

/// The result of a committed ``KeyValueStore/update(_:)``.
public struct KeyValueUpdateResult<Value: Sendable>: Sendable {
    /// What the update's body returned.
    public var value: Value
    /// The revision of the committed transaction, or nil if the body wrote nothing (nothing was committed).
    public var revision: UInt64?
}

/// The contract every key-value backend implements. See the invariants at the top of this file.
public protocol KeyValueStore: AnyObject, Sendable {
    /// The entry stored under `key`, or nil if absent or expired.
    func get(_ key: Key) async throws -> KeyValueEntry?

    /// The entries stored under each of `keys`, in the same order (nil where absent), read from one consistent
    /// state. Sorted keys let a backend walk its index once.
    func get(_ keys: [Key]) async throws -> [KeyValueEntry?]

    /// Up to `limit` entries in `range`, in `direction` order, from one consistent state.
    func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws -> [KeyValueEntry]

    /// Applies `transaction` atomically and returns its revision once durable. Cancellation is honoured (with
    /// `CancellationError`, nothing written) only until the transaction is handed over (queued or sent); from then
    /// on the commit runs to its outcome.
    /// - Throws: ``KeyValueStoreError/conditionFailed(index:condition:)`` naming the first condition that failed;
    ///   nothing is written then.
    func commit(_ transaction: KeyValueTransaction) async throws -> UInt64

    /// Runs `body` against the current state and commits the transaction it returns, with serializable isolation:
    /// the commit fails over to a re-run of `body` if any key it read has changed since. `body` may run more than
    /// once and must have no side effects beyond its reads. Errors thrown by `body` (including a failed condition the
    /// body added itself) end the update without committing. A backend whose reads see commits not yet durable (the
    /// page file) answers only once those are durable, and throws the failure of one that is not instead.
    ///
    /// A default implementation (optimistic: reads become `modRevision`/`absent` conditions) is provided; a backend
    /// with a single writer overrides it to run `body` under its writer lock, so that concurrent updates never
    /// conflict and can share a group commit.
    func update<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value>

    /// The revision of the last commit visible to reads (0 for an empty store). A backend whose revisions are shared
    /// with other tenants (etcd's are cluster-wide) may return a later shared revision instead: every change visible
    /// to reads has a revision at or below the value returned, and every later commit a larger one.
    func currentRevision() async throws -> UInt64

    /// Changes to keys starting with `prefix` made by transactions with a revision greater than `revision`, in
    /// revision order, then live as they commit. A backend that no longer holds that history finishes the sequence
    /// with ``KeyValueStoreError/historyUnavailable(requested:oldest:)``; a consumer that falls too far behind is
    /// finished with ``KeyValueStoreError/watcherOverflow``. Cancelling the consuming task ends the sequence.
    func changes(after revision: UInt64, prefix: Key) -> AsyncThrowingStream<KeyValueChange, any Error>

    /// Flushes and releases the store. Further calls fail with ``KeyValueStoreError/closed``.
    func close() async throws

    /// Lends up to `limit` entries in `range`, in `direction` order, from one consistent state, to `visit` in place
    /// (see ``BorrowedEntry``), until `visit` returns false. Returns how many entries were lent. A default
    /// implementation copies through ``scan(_:direction:limit:)``; the page file lends bytes straight from its pages.
    func scan(
        _ range: KeyRange, direction: ScanDirection, limit: Int, visiting visit: (BorrowedEntry) throws -> Bool
    ) async throws -> Int

    /// Lends the entries stored under each of `keys`, in the same order (nil where absent), from one consistent
    /// state, to `visit` with the key's index. A default implementation copies through the batch `get(_:)`.
    func get(_ keys: [Key], visiting visit: (Int, BorrowedEntry?) throws -> Void) async throws
}

extension KeyValueStore {
    /// Default borrowed scan: copies the entries through ``scan(_:direction:limit:)``, then lends each.
    public func scan(
        _ range: KeyRange, direction: ScanDirection, limit: Int, visiting visit: (BorrowedEntry) throws -> Bool
    ) async throws -> Int {
        let entries = try await scan(range, direction: direction, limit: limit)
        var lent = 0
        for entry in entries {
            lent += 1
            guard try BorrowedEntry.lend(entry, to: visit) else { break }
        }
        return lent
    }

    /// Default borrowed batch get: copies the entries through the batch `get(_:)`, then lends each.
    public func get(_ keys: [Key], visiting visit: (Int, BorrowedEntry?) throws -> Void) async throws {
        for (index, entry) in try await get(keys).enumerated() {
            guard let entry else {
                try visit(index, nil)
                continue
            }
            _ = try BorrowedEntry.lend(entry) { borrowed in
                try visit(index, borrowed)
                return true
            }
        }
    }

    /// Default batch get: one `get` per key.
    public func get(_ keys: [Key]) async throws -> [KeyValueEntry?] {
        var result: [KeyValueEntry?] = []
        result.reserveCapacity(keys.count)
        for key in keys { result.append(try await get(key)) }
        return result
    }

    /// Default optimistic update: see ``KeyValueStore/update(_:)``.
    public func update<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value> {
        try await optimisticUpdate(body)
    }

    /// Runs `body` with its reads recorded, then commits with each read turned into a condition, retrying while
    /// another writer changed what it read. Backends that override ``update(_:)`` can still call this.
    ///
    /// The reads are separate, not one snapshot, so a corruption `body` reports may come from a view no single moment
    /// had (an index entry read before a concurrent deletion, the record it names after it). `corrupted` is believed
    /// only if everything read is still as it was read (or after a few re-runs that each saw it change); otherwise
    /// `body` runs again against the new state. Other errors are decided by the reads as they were.
    public func optimisticUpdate<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value> {
        var attempt = 0
        var rereads = 0
        while true {
            try Task.checkCancellation()
            let context = RecordingReadContext(store: self)
            let transaction: KeyValueTransaction
            let value: Value
            do {
                (transaction, value) = try await body(context)
            } catch let error as EventStoreError {
                guard case .corrupted = error, rereads < 8, try await context.readSetChanged() else { throw error }
                rereads += 1
                continue
            }
            if transaction.writes.isEmpty { return KeyValueUpdateResult(value: value, revision: nil) }
            let readConditions = context.readSet.map { key, entry -> KeyCondition in
                if let entry { return .modRevision(key, equals: entry.modRevision) }
                return .absent(key)
            }
            var guarded = transaction
            guarded.conditions = readConditions + transaction.conditions
            do {
                let revision = try await commit(guarded)
                return KeyValueUpdateResult(value: value, revision: revision)
            } catch KeyValueStoreError.conditionFailed(let index, _) where index < readConditions.count {
                // Something we read changed underneath us: re-run against the new state, with a short backoff so
                // that many contenders spread out.
                attempt += 1
                if attempt > 3 {
                    try await Task.sleep(for: .microseconds(Int.random(in: 50...(200 * min(attempt, 50)))))
                }
            } catch KeyValueStoreError.conditionFailed(let index, let condition) {
                throw KeyValueStoreError.conditionFailed(index: index - readConditions.count, condition: condition)
            }
        }
    }
}

/// Reads through to the store and remembers what each key looked like, for ``KeyValueStore/optimisticUpdate(_:)``.
final class RecordingReadContext: KeyValueReadContext {
    private struct Reads {
        var seen: [Key: KeyValueEntry?] = [:]
        var order: [Key] = []
    }

    private let reads = Locked(Reads())
    private let store: any KeyValueStore

    init(store: any KeyValueStore) { self.store = store }

    func get(_ key: Key) async throws -> KeyValueEntry? {
        if let cached = reads.withLock({ $0.seen[key] }) { return cached }
        let entry = try await store.get(key)
        reads.withLock { state in
            if state.seen[key] == nil {
                state.seen[key] = .some(entry)
                state.order.append(key)
            }
        }
        return entry
    }

    func get(_ keys: [Key]) async throws -> [KeyValueEntry?] {
        let missing = reads.withLock { state in keys.filter { state.seen[$0] == nil } }
        if !missing.isEmpty {
            let fetched = try await store.get(missing)
            reads.withLock { state in
                for (key, entry) in zip(missing, fetched) where state.seen[key] == nil {
                    state.seen[key] = .some(entry)
                    state.order.append(key)
                }
            }
        }
        return reads.withLock { state in keys.map { state.seen[$0] ?? nil } }
    }

    /// Whether any key read has changed since (reads them all again, in one batch).
    func readSetChanged() async throws -> Bool {
        let read = readSet
        guard !read.isEmpty else { return false }
        let now = try await store.get(read.map(\.0))
        return zip(read, now).contains { old, new in old.1?.modRevision != new?.modRevision }
    }

    /// The keys read, in first-read order, with what was seen.
    var readSet: [(Key, KeyValueEntry?)] {
        reads.withLock { state in state.order.map { ($0, state.seen[$0] ?? nil) } }
    }
}
