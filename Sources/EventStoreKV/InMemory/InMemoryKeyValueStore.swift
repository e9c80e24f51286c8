// InMemoryKeyValueStore: the key-value contract held in memory, for tests and ephemeral use.
//
// Invariants:
// - `State.entries` is ordered by key (unsigned lexicographic) with no duplicates (see SortedEntries): a lookup is
//   O(log n), a scan of k keys O(log n + k), an insert anywhere moves at most one chunk.
// - Everything is guarded by one Mutex; a transaction checks its conditions and applies its writes inside one
//   critical section, so it is atomic and isolated.
// - `State.history` holds the changes of the most recent revisions (at most `historyLimit` changes), so a watcher
//   can start from a recent revision; older starts get `historyUnavailable`.
// - Expired TTL keys stay in `entries` until written again but are invisible to every read and condition.

import Foundation
import Synchronization

/// An ordered, thread-safe key-value store held in memory. Nothing survives the process.
public final class InMemoryKeyValueStore: KeyValueStore {
    private struct Stored {
        var value: [UInt8]
        var version: UInt64
        var modRevision: UInt64
        /// Wall-clock expiry in nanoseconds since 1970, for TTL puts.
        var expiresAt: Int64?

        func isLive(at now: Int64) -> Bool { expiresAt.map { now < $0 } ?? true }
        func entry(_ key: Key) -> KeyValueEntry {
            KeyValueEntry(key: key, value: value, version: version, modRevision: modRevision)
        }
    }

    private struct Watcher {
        var prefix: Key
        var continuation: AsyncThrowingStream<KeyValueChange, any Error>.Continuation
    }

    private struct State {
        var entries = SortedEntries<Stored>()
        var revision: UInt64 = 0
        var history: [KeyValueChange] = []
        /// Changes after this revision are all in `history`.
        var historyFloor: UInt64 = 0
        var watchers: [UInt64: Watcher] = [:]
        var nextWatcherID: UInt64 = 0
        var closed = false

        func live(_ key: Key, now: Int64) -> KeyValueEntry? {
            guard let stored = entries.value(for: key), stored.isLive(at: now) else { return nil }
            return stored.entry(key)
        }
    }

    private let state = Mutex(State())
    private let historyLimit: Int
    private let watchBufferLimit: Int

    /// Creates an empty store.
    /// - Parameters:
    ///   - historyLimit: how many recent changes are kept for watchers that start in the past.
    ///   - watchBufferLimit: how many undelivered changes a watcher may hold before it is dropped.
    public init(historyLimit: Int = 100_000, watchBufferLimit: Int = 100_000) {
        self.historyLimit = historyLimit
        self.watchBufferLimit = watchBufferLimit
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000_000) }

    public func get(_ key: Key) async throws -> KeyValueEntry? {
        let now = Self.now()
        return try state.withLock { state in
            guard !state.closed else { throw KeyValueStoreError.closed }
            return state.live(key, now: now)
        }
    }

    public func get(_ keys: [Key]) async throws -> [KeyValueEntry?] {
        let now = Self.now()
        return try state.withLock { state in
            guard !state.closed else { throw KeyValueStoreError.closed }
            return keys.map { state.live($0, now: now) }
        }
    }

    public func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws -> [KeyValueEntry] {
        let now = Self.now()
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

    public func commit(_ transaction: KeyValueTransaction) async throws -> UInt64 {
        let now = Self.now()
        return try state.withLock { state in
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
            record(changes, in: &state)
            return revision
        }
    }

    private func apply(_ write: KeyWrite, revision: UInt64, now: Int64, to state: inout State) -> KeyValueChange {
        switch write {
        case .put(let key, let value, let ttl):
            let old = state.entries.value(for: key)
            let version = old.map { $0.isLive(at: now) ? $0.version + 1 : 1 } ?? 1
            let expiresAt = ttl.map { now + $0.nanoseconds }
            state.entries.set(
                Stored(value: value, version: version, modRevision: revision, expiresAt: expiresAt), for: key)
            return KeyValueChange(revision: revision, kind: .put, key: key)
        case .delete(let key):
            state.entries.remove(key)
            return KeyValueChange(revision: revision, kind: .delete, key: key)
        }
    }

    private func record(_ changes: [KeyValueChange], in state: inout State) {
        state.history.append(contentsOf: changes)
        if state.history.count > historyLimit {
            let drop = state.history.count - historyLimit
            // Drop whole revisions only, so that the floor stays exact.
            var cut = drop
            while cut < state.history.count, state.history[cut].revision == state.history[cut - 1].revision {
                cut += 1
            }
            state.historyFloor = state.history[cut - 1].revision
            state.history.removeFirst(cut)
        }
        var overflowed: [UInt64] = []
        for (id, watcher) in state.watchers {
            for change in changes where change.key.starts(with: watcher.prefix) {
                if case .dropped = watcher.continuation.yield(change) {
                    overflowed.append(id)
                    break
                }
            }
        }
        for id in overflowed {
            state.watchers.removeValue(forKey: id)?.continuation.finish(throwing: KeyValueStoreError.watcherOverflow)
        }
    }

    public func currentRevision() async throws -> UInt64 {
        try state.withLock { state in
            guard !state.closed else { throw KeyValueStoreError.closed }
            return state.revision
        }
    }

    public func changes(after revision: UInt64, prefix: Key) -> AsyncThrowingStream<KeyValueChange, any Error> {
        let (stream, continuation) = AsyncThrowingStream<KeyValueChange, any Error>.makeStream(
            bufferingPolicy: .bufferingOldest(watchBufferLimit))
        let id: UInt64? = state.withLock { state in
            if state.closed {
                continuation.finish(throwing: KeyValueStoreError.closed)
                return nil
            }
            if revision < state.historyFloor {
                continuation.finish(
                    throwing: KeyValueStoreError.historyUnavailable(requested: revision, oldest: state.historyFloor))
                return nil
            }
            for change in state.history where change.revision > revision && change.key.starts(with: prefix) {
                if case .dropped = continuation.yield(change) {
                    continuation.finish(throwing: KeyValueStoreError.watcherOverflow)
                    return nil
                }
            }
            state.nextWatcherID += 1
            state.watchers[state.nextWatcherID] = Watcher(prefix: prefix, continuation: continuation)
            return state.nextWatcherID
        }
        if let id {
            continuation.onTermination = { [weak self] _ in
                _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
            }
        }
        return stream
    }

    public func close() async throws {
        let watchers = state.withLock { state in
            state.closed = true
            defer { state.watchers.removeAll() }
            return Array(state.watchers.values)
        }
        for watcher in watchers { watcher.continuation.finish() }
    }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at Int64's range.
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return seconds < 0 ? .min : .max }
        return scaled.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }
}
