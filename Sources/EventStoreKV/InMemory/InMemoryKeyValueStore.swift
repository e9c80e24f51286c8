// InMemoryKeyValueStore: the key-value contract held in memory, for tests and ephemeral use.
//
// Invariants:
// - `State.entries` is ordered by key (unsigned lexicographic) with no duplicates (see SortedEntries): a lookup is
//   O(log n), a scan of k keys O(log n + k), an insert anywhere moves at most one chunk.
// - Everything is guarded by one lock (`Locked`); a transaction checks its conditions and applies its writes inside one
//   critical section, so it is atomic and isolated. Watch streams are finished outside that critical section, which
//   keeps the lock short (their termination handlers never take it: see ChangeFeed.swift).
// - `State.changes` (a ChangeFeed) holds the changes of the most recent revisions, so a watcher can start from a
//   recent revision; older starts get `historyUnavailable`.
// - Expired TTL keys stay in `entries` until written again but are invisible to every read and condition. Expiry is
//   judged by the store's `clock`, the system clock unless the creator replaced it.
// - The borrowed scan and get lend the stored arrays in place, under the lock, so the lent bytes cannot change
//   during a visit; visitors are synchronous and cannot call back into the store, so the lock is never re-entered.
// - Every operation yields its thread first. Nothing here blocks, so without a suspension point a caller's loop of
//   operations would never let other tasks run on the few cooperative threads (two on a 2-core machine).

import EventStore
import Foundation

/// An ordered, thread-safe key-value store held in memory. Nothing survives the process.
public final class InMemoryKeyValueStore: KeyValueStore {
    private struct Stored: Sendable {
        var value: [UInt8]
        var version: UInt64
        var modRevision: UInt64
        /// Wall-clock expiry in nanoseconds since 1970, for TTL puts.
        var expiresAt: Int64?

        func isLive(at now: Int64) -> Bool { expiresAt.map { now < $0 } ?? true }
        func entry(_ key: Key) -> KeyValueEntry {
            KeyValueEntry(key: key, value: value, version: version, modRevision: modRevision)
        }
        /// Lends `key` and the stored value in place to `visit`.
        func lend(_ key: Key, to visit: (BorrowedEntry) throws -> Bool) rethrows -> Bool {
            try key.withUnsafeBytes { key in
                try value.withUnsafeBytes { value in
                    try visit(BorrowedEntry(key: key, value: value, version: version, modRevision: modRevision))
                }
            }
        }
    }

    private struct State {
        var entries = SortedEntries<Stored>()
        var revision: UInt64 = 0
        var changes: ChangeFeed
        var closed = false

        func live(_ key: Key, now: Int64) -> KeyValueEntry? {
            guard let stored = entries.value(for: key), stored.isLive(at: now) else { return nil }
            return stored.entry(key)
        }
    }

    private let state: Locked<State>
    private let watchBufferLimit: Int
    private let clock: @Sendable () -> Date

    /// Creates an empty store.
    /// - Parameters:
    ///   - historyLimit: how many recent changes are kept for watchers that start in the past.
    ///   - watchBufferLimit: how many undelivered changes a watcher may hold before it is dropped; at least 1 (a
    ///     smaller value counts as 1, as a negative `historyLimit` counts as 0).
    ///   - clock: the wall clock TTL keys expire by; the system clock unless replaced, as a test does to hold
    ///     leases still (or move them on) whatever the real time.
    public init(
        historyLimit: Int = 100_000, watchBufferLimit: Int = 100_000,
        clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.state = Locked(State(changes: ChangeFeed(historyLimit: historyLimit)))
        self.watchBufferLimit = max(1, watchBufferLimit)
        self.clock = clock
    }

    /// The clock's reading in nanoseconds since 1970, saturating: a replaced clock may read far outside what an
    /// Int64 of nanoseconds holds (292 years either side of 1970), and a NaN reads as 1970.
    private func now() -> Int64 {
        let nanoseconds = clock().timeIntervalSince1970 * 1_000_000_000
        guard nanoseconds.isFinite else { return nanoseconds.isNaN ? 0 : (nanoseconds > 0 ? .max : .min) }
        // Double(Int64.max) rounds up to 2^63, the first value that does not fit; Int64.min is exact.
        if nanoseconds >= Double(Int64.max) { return .max }
        if nanoseconds <= Double(Int64.min) { return .min }
        return Int64(nanoseconds)
    }

    public func get(_ key: Key) async throws -> KeyValueEntry? {
        await Task.yield()
        let now = self.now()
        return try state.withLock { state in
            guard !state.closed else { throw KeyValueStoreError.closed }
            return state.live(key, now: now)
        }
    }

    public func get(_ keys: [Key]) async throws -> [KeyValueEntry?] {
        await Task.yield()
        let now = self.now()
        return try state.withLock { state in
            guard !state.closed else { throw KeyValueStoreError.closed }
            return keys.map { state.live($0, now: now) }
        }
    }

    public func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws -> [KeyValueEntry] {
        await Task.yield()
        let now = self.now()
        return try state.withLock { state in
            guard !state.closed else { throw KeyValueStoreError.closed }
            guard limit > 0 else { return [] }
            var result: [KeyValueEntry] = []
            state.entries.forEach(from: range.lowerBound, to: range.upperBound, backward: direction == .backward) {
                key, stored in
                if stored.isLive(at: now) { result.append(stored.entry(key)) }
                return result.count < limit
            }
            return result
        }
    }

    /// Lends the stored keys and values in place, under the lock: nothing is copied.
    public func scan(
        _ range: KeyRange, direction: ScanDirection, limit: Int, visiting visit: (BorrowedEntry) throws -> Bool
    ) async throws -> Int {
        await Task.yield()
        let now = self.now()
        return try state.withLock { state in
            guard !state.closed else { throw KeyValueStoreError.closed }
            guard limit > 0 else { return 0 }
            var lent = 0
            // A copy (shares storage; dies before the lock is released, so no write ever copies the entries) keeps
            // the visitor, which belongs to the calling task, from being handed to the guarded state itself.
            let entries = state.entries
            try entries.forEach(from: range.lowerBound, to: range.upperBound, backward: direction == .backward) {
                key, stored in
                guard stored.isLive(at: now) else { return true }
                lent += 1
                return try stored.lend(key, to: visit) && lent < limit
            }
            return lent
        }
    }

    /// Lends the stored values in place, under the lock: nothing is copied.
    public func get(_ keys: [Key], visiting visit: (Int, BorrowedEntry?) throws -> Void) async throws {
        await Task.yield()
        let now = self.now()
        try state.withLock { state in
            guard !state.closed else { throw KeyValueStoreError.closed }
            var hint: (chunk: Int, index: Int)?
            for (index, key) in keys.enumerated() {
                guard let found = state.entries.find(key, near: hint) else {
                    try visit(index, nil)
                    continue
                }
                hint = found
                let stored = state.entries.value(at: found)
                guard stored.isLive(at: now) else {
                    try visit(index, nil)
                    continue
                }
                _ = try stored.lend(key) { entry in
                    try visit(index, entry)
                    return true
                }
            }
        }
    }

    public func commit(_ transaction: KeyValueTransaction) async throws -> UInt64 {
        await Task.yield()
        // As on every backend: a cancelled task's commit that has not been handed over writes nothing.
        try Task.checkCancellation()
        let now = self.now()
        let (revision, dropped) = try state.withLock { state in
            guard !state.closed else { throw KeyValueStoreError.closed }
            for (index, condition) in transaction.conditions.enumerated()
            where !condition.isSatisfied(by: state.live(condition.key, now: now)) {
                throw KeyValueStoreError.conditionFailed(index: index, condition: condition)
            }
            state.revision += 1
            let revision = state.revision
            var changes: [KeyValueChange] = []
            changes.reserveCapacity(transaction.writes.count)
            for write in transaction.writes {
                changes.append(apply(write, revision: revision, now: now, to: &state))
            }
            return (revision, state.changes.record(changes))
        }
        // Finished outside the lock, which stays short (see ChangeFeed.swift).
        for continuation in dropped { continuation.finish(throwing: KeyValueStoreError.watcherOverflow) }
        return revision
    }

    private func apply(_ write: KeyWrite, revision: UInt64, now: Int64, to state: inout State) -> KeyValueChange {
        switch write {
        case .put(let key, let value, let ttl):
            let old = state.entries.value(for: key)
            let version = old.map { $0.isLive(at: now) ? $0.version + 1 : 1 } ?? 1
            let expiresAt = ttl.map { Duration.expiry(now: now, ttl: $0) }
            state.entries.set(
                Stored(value: value, version: version, modRevision: revision, expiresAt: expiresAt), for: key)
            return KeyValueChange(revision: revision, kind: .put, key: key)
        case .delete(let key):
            state.entries.remove(key)
            return KeyValueChange(revision: revision, kind: .delete, key: key)
        }
    }

    public func currentRevision() async throws -> UInt64 {
        try state.withLock { state in
            guard !state.closed else { throw KeyValueStoreError.closed }
            return state.revision
        }
    }

    public func changes(after revision: UInt64, prefix: Key) -> AsyncThrowingStream<KeyValueChange, any Error> {
        ChangeFeed.stream(
            bufferLimit: watchBufferLimit,
            register: { continuation in
                state.withLock { state in
                    state.closed ? .failure(.closed) : state.changes.register(after: revision, prefix: prefix, continuation)
                }
            })
    }

    public func close() async throws {
        let watchers = state.withLock { state in
            state.closed = true
            return state.changes.removeAll()
        }
        for watcher in watchers { watcher.finish() }
    }
}

extension Duration {
    /// When a key written at `now` (nanoseconds since 1970) with `ttl` expires: saturating, so an enormous TTL
    /// means "in 2262", never a wrapped-around time in the past.
    static func expiry(now: Int64, ttl: Duration) -> Int64 {
        let (sum, overflow) = now.addingReportingOverflow(ttl.nanoseconds)
        return overflow ? (ttl > .zero ? .max : .min) : sum
    }

    /// The duration in whole nanoseconds, saturating at Int64's range.
    var nanoseconds: Int64 {
        // Saturate before `components`, which traps for durations past Int64 seconds either way.
        if self >= .nanoseconds(Int64.max) { return .max }
        if self <= .nanoseconds(Int64.min) { return .min }
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return seconds < 0 ? .min : .max }
        return scaled.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }
}
