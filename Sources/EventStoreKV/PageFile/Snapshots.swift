// Snapshots: the state readers see (the last durable commit), reader registration, and change watchers.
//
// Invariants:
// - `root`/`revision` only ever move to a commit whose WAL record is durable (GroupCommit publishes a group after
//   its fdatasync) or to the checkpointed tree of that same state; readers therefore never see a commit that could
//   be lost, and never half of one (a transaction is published whole, by swapping one root reference).
// - Every reader registers the checkpoint epoch of the snapshot it took until it is done; FreeList delays reuse of
//   pages freed at epoch e until no reader from before e remains. A reader never waits for I/O or fsync here.
// - `history` holds the changes of the most recent revisions (whole revisions, at least `historyLimit` changes once
//   that many were made, at most 1.25 times as many) after `historyFloor`; watchers get them, then live changes as groups are published.
// - All of it is guarded by one Mutex; no I/O happens while it is held.

import Synchronization

/// The published, durable state and everything that hangs off it.
final class PublishedState: Sendable {
    struct Watcher {
        var prefix: Key
        var continuation: AsyncThrowingStream<KeyValueChange, any Error>.Continuation
    }

    struct State {
        var root: ChildRef?
        /// The page file the root lives in (compact() moves the store to a new file).
        var reader: PageReader
        var revision: UInt64
        var keyCount: UInt64
        var epoch: UInt64
        var readers: [UInt64: Int] = [:]
        var history: [KeyValueChange] = []
        var historyFloor: UInt64
        var watchers: [UInt64: Watcher] = [:]
        var nextWatcherID: UInt64 = 0
        var closed = false
    }

    let state: Mutex<State>
    let historyLimit: Int

    init(root: ChildRef?, reader: PageReader, revision: UInt64, keyCount: UInt64, epoch: UInt64, historyLimit: Int) {
        state = Mutex(
            State(
                root: root, reader: reader, revision: revision, keyCount: keyCount, epoch: epoch,
                historyFloor: revision))
        self.historyLimit = historyLimit
    }

    /// Runs `body` on the current snapshot's root, registered as a reader of its epoch.
    func read<T>(_ body: (ChildRef?, PageReader) throws -> T) throws -> T {
        let (root, reader, epoch) = try state.withLock { state -> (ChildRef?, PageReader, UInt64) in
            guard !state.closed else { throw KeyValueStoreError.closed }
            state.readers[state.epoch, default: 0] += 1
            return (state.root, state.reader, state.epoch)
        }
        defer {
            state.withLock { state in
                let left = (state.readers[epoch] ?? 1) - 1
                state.readers[epoch] = left > 0 ? left : nil
            }
        }
        return try body(root, reader)
    }

    /// Registers a long reader (a backup) of the current epoch; call the returned closure when done.
    func pinEpoch() -> (epoch: UInt64, unpin: @Sendable () -> Void) {
        let epoch = state.withLock { state in
            state.readers[state.epoch, default: 0] += 1
            return state.epoch
        }
        return (epoch, { [self] in
            state.withLock { state in
                let left = (state.readers[epoch] ?? 1) - 1
                state.readers[epoch] = left > 0 ? left : nil
            }
        })
    }

    /// The oldest epoch a running reader uses (the current epoch if none).
    var oldestReaderEpoch: UInt64 { state.withLock { $0.readers.keys.min() ?? $0.epoch } }

    /// Makes a durable group visible and tells the watchers. Returns the replaced root, so the caller can release
    /// it (freeing the nodes only it held can take a while) after acknowledging the group's committers.
    func publish(_ group: [PendingCommit]) -> ChildRef? {
        guard let last = group.last else { return nil }
        let (replaced, dropped) = state.withLock { state in
            let replaced = state.root
            state.root = last.root
            state.revision = last.revision
            state.keyCount = last.keyCount
            var dropped: [AsyncThrowingStream<KeyValueChange, any Error>.Continuation] = []
            for commit in group { dropped += record(commit.changes, in: &state) }
            return (replaced, dropped)
        }
        // Outside the lock: finishing runs the watcher's onTermination, which takes the same lock.
        for continuation in dropped { continuation.finish(throwing: KeyValueStoreError.watcherOverflow) }
        return replaced
    }

    /// Installs the checkpointed form of the current tree.
    func installCheckpoint(root: ChildRef?, epoch: UInt64, reader: PageReader) {
        state.withLock { state in
            state.root = root
            state.reader = reader
            state.epoch = epoch
        }
    }

    /// Records `changes` and delivers them to watchers; returns the watchers that overflowed, already removed, for
    /// the caller to finish once it has released the lock.
    private func record(_ changes: [KeyValueChange], in state: inout State)
        -> [AsyncThrowingStream<KeyValueChange, any Error>.Continuation]
    {
        state.history.append(contentsOf: changes)
        // Trim in steps of a quarter of the limit: removing from the front is O(n), so doing it on every commit
        // would cost O(historyLimit) per commit once the history is full.
        if state.history.count > historyLimit + max(1, historyLimit / 4) {
            var cut = state.history.count - historyLimit
            while cut < state.history.count, state.history[cut].revision == state.history[cut - 1].revision { cut += 1 }
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
        return overflowed.compactMap { state.watchers.removeValue(forKey: $0)?.continuation }
    }

    /// A stream of changes after `revision` under `prefix`; see ``KeyValueStore/changes(after:prefix:)``.
    func changes(after revision: UInt64, prefix: Key, bufferLimit: Int) -> AsyncThrowingStream<KeyValueChange, any Error> {
        let (stream, continuation) = AsyncThrowingStream<KeyValueChange, any Error>.makeStream(
            bufferingPolicy: .bufferingOldest(bufferLimit))
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

    /// Marks the state closed and ends every watcher.
    func close() {
        let watchers = state.withLock { state in
            state.closed = true
            defer { state.watchers.removeAll() }
            return Array(state.watchers.values)
        }
        for watcher in watchers { watcher.continuation.finish() }
    }
}
