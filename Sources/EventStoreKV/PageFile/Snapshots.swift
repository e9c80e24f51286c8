// Snapshots: the state readers see (the last durable commit), reader registration, and change watchers.
//
// Invariants:
// - `root`/`revision` only ever move to a commit whose WAL record is durable (GroupCommit publishes a group after
//   its fdatasync) or to the checkpointed tree of that same state; readers therefore never see a commit that could
//   be lost, and never half of one (a transaction is published whole, by swapping one root reference).
// - Every reader registers the checkpoint epoch of the snapshot it took until it is done; FreeList delays reuse of
//   pages freed at epoch e until no reader from before e remains. A reader never waits for I/O or fsync here.
// - `changes` (a ChangeFeed) holds the most recent changes; watchers get them, then live changes as groups are
//   published.
// - A read-only store moves to a writer's newer checkpoint by swapping root, reader, revision and epoch in one step
//   (`reload`); readers already running keep the old root and reader, whose pin holds their pages
//   (ReadOnlySnapshot.swift).
// - All of it is guarded by one lock (`Locked`); no I/O happens while it is held.

import EventStore

/// The published, durable state and everything that hangs off it.
final class PublishedState: Sendable {
    struct State {
        var root: ChildRef?
        /// The page file the root lives in (compact() moves the store to a new file).
        var reader: PageReader
        var revision: UInt64
        var keyCount: UInt64
        var epoch: UInt64
        /// A read-only store's: the WAL offset after the records its snapshot holds; nil for a writer.
        var walEnd: UInt64?
        var readers: [UInt64: Int] = [:]
        var changes: ChangeFeed
        var closed = false
    }

    let state: Locked<State>

    init(
        root: ChildRef?, reader: PageReader, revision: UInt64, keyCount: UInt64, epoch: UInt64, walEnd: UInt64?,
        historyLimit: Int
    ) {
        state = Locked(
            State(
                root: root, reader: reader, revision: revision, keyCount: keyCount, epoch: epoch, walEnd: walEnd,
                changes: ChangeFeed(floor: revision, historyLimit: historyLimit)))
    }

    /// What statistics and metrics report of the published state, all of one snapshot.
    func facts() -> (reader: PageReader, revision: UInt64, keyCount: UInt64, walEnd: UInt64?, closed: Bool) {
        state.withLock { ($0.reader, $0.revision, $0.keyCount, $0.walEnd, $0.closed) }
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
    /// A read-only store passes `walEnd`, the WAL offset after the group's records.
    func publish(_ group: [PendingCommit], walEnd: UInt64? = nil) -> ChildRef? {
        guard let last = group.last else { return nil }
        let (replaced, dropped) = state.withLock { state in
            if let walEnd { state.walEnd = walEnd }
            let replaced = state.root
            state.root = last.root
            state.revision = last.revision
            state.keyCount = last.keyCount
            var dropped: [ChangeFeed.Continuation] = []
            for commit in group { dropped += state.changes.record(commit.changes) }
            return (replaced, dropped)
        }
        // Outside the lock, which stays short (see ChangeFeed.swift).
        for continuation in dropped { continuation.finish(throwing: KeyValueStoreError.watcherOverflow) }
        return replaced
    }

    /// Moves a read-only store to a new snapshot (ReadOnlySnapshot.swift), in one step for readers, and records
    /// `changes` (one element per commit after the new snapshot's checkpoint). With `restartAfter`, the revision of
    /// that checkpoint, the commits between the old snapshot and the checkpoint are unknown: every watcher ends with
    /// `historyUnavailable` and the history starts again after that revision.
    func reload(
        root: ChildRef?, reader: PageReader, revision: UInt64, keyCount: UInt64, epoch: UInt64, walEnd: UInt64,
        restartAfter floor: UInt64?, changes: [[KeyValueChange]]
    ) {
        let (previous, dropped, ended) = state.withLock { state in
            let previous = state.revision
            state.walEnd = walEnd
            state.root = root
            state.reader = reader
            state.revision = revision
            state.keyCount = keyCount
            state.epoch = epoch
            let ended = floor.map { state.changes.restart(floor: $0) } ?? []
            var dropped: [ChangeFeed.Continuation] = []
            for commit in changes { dropped += state.changes.record(commit) }
            return (previous, dropped, ended)
        }
        // Outside the lock, which stays short (see ChangeFeed.swift).
        for continuation in dropped { continuation.finish(throwing: KeyValueStoreError.watcherOverflow) }
        for continuation in ended {
            continuation.finish(
                throwing: KeyValueStoreError.historyUnavailable(requested: previous, oldest: floor ?? previous))
        }
    }

    /// Installs the checkpointed form of the current tree.
    func installCheckpoint(root: ChildRef?, epoch: UInt64, reader: PageReader) {
        state.withLock { state in
            state.root = root
            state.reader = reader
            state.epoch = epoch
        }
    }

    /// A stream of changes after `revision` under `prefix`; see ``KeyValueStore/changes(after:prefix:)``.
    func changes(after revision: UInt64, prefix: Key, bufferLimit: Int) -> AsyncThrowingStream<KeyValueChange, any Error> {
        ChangeFeed.stream(
            bufferLimit: bufferLimit,
            register: { continuation in
                state.withLock { state in
                    state.closed ? .failure(.closed) : state.changes.register(after: revision, prefix: prefix, continuation)
                }
            })
    }

    /// Marks the state closed and ends every watcher.
    func close() {
        let watchers = state.withLock { state in
            state.closed = true
            return state.changes.removeAll()
        }
        for watcher in watchers { watcher.finish() }
    }
}
