// ChangeFeed: recent changes and live watchers, the machinery behind `KeyValueStore.changes(after:prefix:)` for
// backends that keep their history in memory (the in-memory store and the page file).
//
// Invariants:
// - A ChangeFeed lives inside its backend's locked state; every mutating method runs with that lock held, so
//   recording a commit and registering a watcher are ordered: a watcher gets every change after its revision once.
// - `history` holds whole revisions after `floor`: at least `historyLimit` changes once that many were made, at
//   most 1.25 times as many (trimming in steps keeps it O(1) per commit). Older starts get `historyUnavailable`.
// - Continuations handed back (overflowed or closed watchers) are finished by the caller after releasing the lock.
// - A watcher's termination handler never takes the backend's lock. It can run while Swift holds the consuming
//   task's status lock (a cancellation), and `record` yields to that task, which takes its status lock, while the
//   backend's lock is held: the two would wait for each other for ever. The handler only empties the watcher's
//   slot (releasing its stream and every change buffered in it at once) and queues its id in `terminated`, both
//   locks that nothing holds while taking another; `record` and `register` drop the queued entries.

import EventStore

struct ChangeFeed {
    typealias Continuation = AsyncThrowingStream<KeyValueChange, any Error>.Continuation

    private struct Watcher {
        var prefix: Key
        /// Only changes after this revision are delivered (a watch may start after a revision not reached yet).
        var after: UInt64
        /// The continuation, until its consumer goes away (see the invariants).
        var slot: Locked<Continuation?>
        var continuation: Continuation? { slot.withLock { $0 } }
    }

    private var history: [KeyValueChange] = []
    /// Every change after this revision is in `history`.
    private(set) var floor: UInt64
    private var watchers: [UInt64: Watcher] = [:]
    private var nextID: UInt64 = 0
    /// Ids of watchers whose consumers went away, queued by their termination handlers (see the invariants).
    private let terminated = Locked<[UInt64]>([])
    let historyLimit: Int

    init(floor: UInt64 = 0, historyLimit: Int) {
        self.floor = floor
        // A negative limit keeps no history, as 0 does.
        self.historyLimit = max(0, historyLimit)
    }

    /// Records one commit's changes and delivers them; returns the watchers that overflowed, already removed.
    mutating func record(_ changes: [KeyValueChange]) -> [Continuation] {
        dropTerminated()
        history.append(contentsOf: changes)
        // Subtracting, not adding: historyLimit + slack would overflow for a limit near Int.max.
        if history.count - historyLimit > max(1, historyLimit / 4) {
            var cut = history.count - historyLimit
            while cut < history.count, history[cut].revision == history[cut - 1].revision { cut += 1 }
            floor = history[cut - 1].revision
            history.removeFirst(cut)
        }
        var overflowed: [UInt64] = []
        for (id, watcher) in watchers {
            guard let continuation = watcher.continuation else { continue }
            for change in changes where change.revision > watcher.after && change.key.starts(with: watcher.prefix) {
                if case .dropped = continuation.yield(change) {
                    overflowed.append(id)
                    break
                }
            }
        }
        return overflowed.compactMap { watchers.removeValue(forKey: $0)?.continuation }
    }

    /// Replays the history after `revision` into `continuation` and registers it for live changes.
    /// - Returns: its id, or the error to finish it with (after releasing the lock).
    mutating func register(after revision: UInt64, prefix: Key, _ continuation: Continuation)
        -> Result<UInt64, KeyValueStoreError>
    {
        dropTerminated()
        if revision < floor { return .failure(.historyUnavailable(requested: revision, oldest: floor)) }
        for change in history where change.revision > revision && change.key.starts(with: prefix) {
            if case .dropped = continuation.yield(change) { return .failure(.watcherOverflow) }
        }
        nextID += 1
        let (id, terminated, slot) = (nextID, terminated, Locked<Continuation?>(continuation))
        watchers[id] = Watcher(prefix: prefix, after: revision, slot: slot)
        continuation.onTermination = { _ in
            slot.withLock { $0 = nil }
            terminated.withLock { $0.append(id) }
        }
        return .success(id)
    }

    /// How many watchers still have a consumer (tests).
    var liveWatcherCount: Int { watchers.values.filter { $0.continuation != nil }.count }

    /// Removes the watchers whose termination handlers have run since the last call.
    private mutating func dropTerminated() {
        let ids = terminated.withLock { ids in
            defer { ids.removeAll() }
            return ids
        }
        for id in ids { watchers.removeValue(forKey: id) }
    }

    /// Starts the history again after `floor`, for a backend that moved to a state whose changes since the last
    /// recorded one are unknown; returns every watcher, removed, for the caller to end with `historyUnavailable`.
    mutating func restart(floor: UInt64) -> [Continuation] {
        history.removeAll()
        self.floor = floor
        return removeAll()
    }

    /// Removes every watcher, for closing; the caller finishes them.
    mutating func removeAll() -> [Continuation] {
        defer { watchers.removeAll() }
        return watchers.values.compactMap(\.continuation)
    }

    /// A change stream for a backend: `register` runs under the backend's lock (returning `.closed` when the store
    /// is closed); the watcher is dropped once the consumer goes away (see the invariants).
    static func stream(
        bufferLimit: Int, register: (Continuation) -> Result<UInt64, KeyValueStoreError>
    ) -> AsyncThrowingStream<KeyValueChange, any Error> {
        let (stream, continuation) = AsyncThrowingStream<KeyValueChange, any Error>.makeStream(
            bufferingPolicy: .bufferingOldest(bufferLimit))
        if case .failure(let error) = register(continuation) { continuation.finish(throwing: error) }
        return stream
    }
}
