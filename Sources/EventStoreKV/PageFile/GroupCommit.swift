// GroupCommit: where an append becomes durable. One dedicated flusher thread writes the WAL bytes of every
// transaction queued since its last round with one pwrite (a lone commit's record is written by its committer, see
// below) and makes them durable with one fdatasync, then publishes the group to readers and resumes its committers.
//
// Invariants:
// - Records reach the WAL in LSN order, contiguously from `walOffset`; a committer is resumed only after its
//   record (and every earlier one) was written and, in `.full` durability, fdatasynced. Readers see a group only
//   after that too (`publish` runs before any committer of the group is resumed), so reads observe only durable
//   commits and read-your-writes holds.
// - fdatasync happens on the flusher thread, never on the Swift cooperative pool. A committer whose record is the only
//   one queued while the flusher is idle writes the record itself (a pwrite into the page cache, which does not wait
//   for the device) before waking the flusher, which then only syncs it. Every other record is written by the
//   flusher.
// - The first write or sync error, or a failure `fail` reports (a checkpoint's, or a commit's apply failing part way
//   through its open group), puts the pipeline into its failed state for good; fdatasync is never retried (the kernel
//   may have dropped the dirty pages). Reopening the store recovers from the WAL's durable prefix. Each committer then
//   gets the outcome of its own record:
//   - written (pwritten, by the flusher or by its lone committer) before the failure: the flusher still syncs it.
//     If the sync succeeds the commit succeeds (a later commit's failure never fails it); if its write or sync fails,
//     its committer gets that I/O error (`ioFailure`), which means "outcome unknown": the record may be in the store
//     after reopening, so the caller re-sends the same events (same ids, idempotent) to find out.
//   - never written (queued, or in a group not yet written when the store failed): `storeFailed`, nothing written.
//   A group taken by the flusher (sealed) is published after its sync even in the failed state. A lone record written
//   by its committer whose open group a failing apply half changed is synced but not published: it shows after
//   reopening (`unpublishable`). In `.deferred` durability, a store failed by anything but an I/O error (damage an
//   apply found) still fdatasyncs its acknowledged commits within their delay, and at close (`syncForbidden`).
// - While a checkpoint holds the WAL (`reserveWAL`), neither the flusher nor a committer does I/O on it (`ioBusy`).
// - The flusher takes the queue only while no transaction is being applied (`beginApply` .. `enqueue`/`endApply`),
//   and every take starts a new open group (`openGroup`). So the commits queued since the last take all belong to one
//   group that no reader can see yet, and the writer may change that group's tree nodes in place from one of its
//   commits to the next: publishing the group's last root publishes them all at once, after the group's fdatasync.
// - The WAL file is extended with zeros in 1 MiB steps ahead of the records (and reused across generations), so
//   most commits overwrite already-allocated blocks and their fdatasync does not also have to commit file-size
//   metadata. Zeros never parse as a record (their CRC does not match), so recovery stops there.
// - All mutable state is guarded by `condition` (an NSCondition).

import EventStore
import Foundation
import Synchronization

/// How much an acknowledged commit can lose, and when.
public enum Durability: Sendable, Hashable {
    /// Every commit (or group of concurrent commits) is fdatasynced before it is acknowledged. Nothing
    /// acknowledged is lost on a process crash, an OS crash or a power failure. The default.
    case full
    /// Commits are acknowledged once written to the operating system, and fdatasynced at most `maximumDelay` later
    /// (ESE's lazy commit). A process crash loses nothing acknowledged; an OS crash or power failure can lose the
    /// commits acknowledged in the last `maximumDelay` (never a part of one, and never an earlier one).
    case deferred(maximumDelay: Duration)
    /// Nothing is ever fdatasynced, not even checkpoints. For tests only: a process crash loses nothing
    /// acknowledged, but an OS crash or power failure can lose anything and can leave the store unopenable.
    case none
}

/// A transaction applied by the writer and waiting for its WAL record to become durable.
struct PendingCommit: Sendable {
    var lsn: UInt64
    var revision: UInt64
    var root: ChildRef?
    var keyCount: UInt64
    var changes: [KeyValueChange]
}

/// What a flushed group leaves behind: the snapshot it replaced and its queue entries. When more commits are already
/// queued, a committer drops them on its own thread, so freeing the replaced nodes happens beside the next fdatasync
/// instead of before it; otherwise the idle flusher frees them while the committers go on.
struct GroupLeftovers: Sendable {
    var replaced: ChildRef?
    var group: [PendingCommit]
}

/// What the flusher hands the first committer it resumes for a group: the group's other committers, which it resumes
/// in turn (so the flusher pays one task wake-up per group, not one per commit), and possibly the group's leftovers.
struct DurableNotice: Sendable {
    var others: [CheckedContinuation<DurableNotice?, any Error>]
    var leftovers: GroupLeftovers?
}

/// The WAL flusher thread and its queue. See the invariants at the top of this file.
final class GroupCommit: @unchecked Sendable {
    // @unchecked: every var below is guarded by `condition`.
    private let condition = NSCondition()
    /// Queued record bytes the flusher still has to write, after the `prewritten` ones.
    private var buffer: [UInt8] = []
    /// Bytes of the queue, at `walOffset`, that their committer already wrote to the WAL (see `enqueue`).
    private var prewritten = 0
    private var pending: [PendingCommit] = []
    private var waiters: [(lsn: UInt64, continuation: CheckedContinuation<DurableNotice?, any Error>)] = []
    private var durableLSN: UInt64
    /// The last LSN whose record was fdatasynced (in `.full` durability, `durableLSN` once published); every record
    /// carries it as proof that the records through it were durable (WriteAheadLog.swift). Written only after the
    /// sync returned; read without the lock.
    private let synced: Atomic<UInt64>
    private var walOffset: UInt64
    private var allocatedEnd: UInt64
    private var ioBusy = false
    /// A transaction is being applied to the open group's nodes; the flusher must not take the queue meanwhile.
    private var applying = false
    /// Counts the flusher's takes of the queue: commits applied under one value share a group.
    private var openGroup: UInt64 = 0
    private var unsyncedSince: Date?
    private var stopping = false
    private var finished = false
    private var finishWaiters: [CheckedContinuation<Void, Never>] = []
    private(set) var failure: EventStoreError?
    /// The last LSN taken by the flusher (written, or being written). With `durableLSN` and `unknownThrough` it tells
    /// a committer that comes to wait after a failure whether its record was written.
    private var takenThrough: UInt64
    /// After a failed write or sync: the records up to this LSN were (possibly) written but not made durable; their
    /// committers get `ioError` (outcome unknown).
    private var unknownThrough: UInt64 = 0
    private var ioError: EventStoreError?
    /// The queued (prewritten) commit is synced but must not be published: a failing apply half changed its nodes.
    private var unpublishable = false
    /// A write or sync of the WAL failed (or an I/O error of unknown file failed the store): the WAL is never
    /// fdatasynced again. Until then, a store failed for another reason (damage found by an apply) still makes its
    /// acknowledged `.deferred` commits durable within their delay.
    private var syncForbidden = false
    /// Tests only: while set, the flusher does not take the queue.
    private var queueHeld = false

    private let wal: SystemFile
    private let metrics: StoreMetrics
    private let durability: Durability
    private let publish: @Sendable ([PendingCommit]) -> ChildRef?

    init(
        metrics: StoreMetrics, wal: SystemFile, walOffset: UInt64, allocatedEnd: UInt64, durableLSN: UInt64, durability: Durability,
        publish: @escaping @Sendable ([PendingCommit]) -> ChildRef?
    ) {
        self.wal = wal
        self.metrics = metrics
        self.walOffset = walOffset
        self.allocatedEnd = allocatedEnd
        self.durableLSN = durableLSN
        self.synced = Atomic(durableLSN)
        self.takenThrough = durableLSN
        self.durability = durability
        self.publish = publish
        let thread = Thread { [self] in run() }
        thread.name = "EventStore WAL flusher"
        thread.start()
    }

    /// The last LSN whose WAL record is known to be fdatasynced.
    var syncedLSN: UInt64 { synced.load(ordering: .relaxed) }

    /// The failure that stopped the pipeline, if any.
    var failed: EventStoreError? { locked { failure } }

    /// Tests only: the committers waiting for their records.
    var waiterCount: Int { locked { waiters.count } }

    /// Tests only: keeps the flusher from taking the queue while `held`, so a test can make a commit join the open
    /// group of a lone commit that wrote its own record.
    func holdQueue(_ held: Bool) {
        locked {
            queueHeld = held
            condition.broadcast()
        }
    }

    /// Bytes in the WAL file plus bytes queued for it.
    var walBytes: UInt64 { locked { walOffset + UInt64(prewritten + buffer.count) } }

    /// Starts applying a transaction (the caller holds the writer lock): until `enqueue` or `endApply`, the flusher
    /// does not take the queue. Returns the open group: a transaction applied under the same value as the previous
    /// one joins its group (it will be written, synced and published together with it), so it may change the
    /// nodes that group created in place.
    func beginApply() -> UInt64 {
        locked {
            applying = true
            return openGroup
        }
    }

    /// Ends an apply that queued nothing (it failed, or wrote nothing).
    func endApply() {
        locked {
            applying = false
            condition.broadcast()
        }
    }

    /// Queues a transaction's framed record and ends its apply. The caller holds the writer lock, so LSNs arrive in
    /// order.
    func enqueue(_ record: [UInt8], _ commit: PendingCommit) throws {
        condition.lock()
        defer { condition.unlock() }
        applying = false
        defer { condition.broadcast() }
        if let failure { throw EventStoreError.storeFailed(reason: failure.description) }
        let offset = walOffset
        // A lone commit with the flusher idle: write it here, then wake the flusher, which only has to sync it.
        // (Waking the flusher first and writing meanwhile measured slower: the woken flusher tends to take the
        // committer's core. Starting the record's write-out here too, with posix_fadvise, measured 6-11% slower for
        // single appends in the tenth session; see docs/PERFORMANCE.md.)
        if durability == .full, !ioBusy, pending.isEmpty, offset + UInt64(record.count) <= allocatedEnd {
            ioBusy = true
            condition.unlock()
            let error = writeAlone(record, at: offset)
            condition.lock()
            if let error {
                failIO(error, group: [])
                throw error
            }
            ioBusy = false
            prewritten = record.count
        } else {
            buffer.append(contentsOf: record)
        }
        pending.append(commit)
    }

    /// Writes a lone record on its committer's thread; nil, or the write's error.
    private func writeAlone(_ record: [UInt8], at offset: UInt64) -> EventStoreError? {
        do {
            try wal.write(record, at: offset)
        } catch {
            return error as? EventStoreError ?? .storeFailed(reason: "\(error)")
        }
        return nil
    }

    /// Returns once the record with `lsn` is durable (or, in `.deferred`/`.none`, written); throws if its group
    /// failed. A commit cannot be withdrawn once queued, so this wait does not end early on cancellation.
    func waitUntilDurable(_ lsn: UInt64) async throws {
        let notice = try await withCheckedThrowingContinuation {
            (continuation: CheckedContinuation<DurableNotice?, any Error>) in
            condition.lock()
            defer { condition.unlock() }
            if durableLSN >= lsn {
                continuation.resume(returning: nil)
            } else if let error = failedOutcome(lsn) {
                continuation.resume(throwing: error)
            } else {
                waiters.append((lsn, continuation))
            }
        }
        // The group's other committers go on first; then its leftovers (if handed here) are freed on this thread.
        for other in notice?.others ?? [] { other.resume(returning: nil) }
    }

    /// Waits until the flusher is idle with nothing queued, then hands the WAL to the caller (a checkpoint) until
    /// `releaseWAL` is called. Blocks: call it off the cooperative pool.
    func reserveWAL() throws {
        try locked {
            while ioBusy || !pending.isEmpty, failure == nil { condition.wait() }
            if let failure { throw EventStoreError.storeFailed(reason: failure.description) }
            ioBusy = true
        }
    }

    /// Gives the WAL back after a checkpoint; the next record goes at `offset`, and the file is `size` bytes long.
    /// `synced` says the WAL needs no pending deferred fdatasync any more.
    func releaseWAL(offset: UInt64, size: UInt64, synced: Bool) {
        locked {
            walOffset = offset
            allocatedEnd = size
            ioBusy = false
            if synced { unsyncedSince = nil }
            condition.broadcast()
        }
    }

    /// Marks the pipeline failed (a checkpoint's error, or an apply that failed part way through the open group): no
    /// more writes are accepted. Queued records not written yet are dropped and their committers get `storeFailed`.
    /// A group the flusher took, and a lone record its committer wrote, are still synced: their committers get the
    /// outcome of that sync (the lone record, whose nodes the failing apply may have half changed, is not published).
    func fail(_ error: EventStoreError) {
        condition.lock()
        if failure == nil { failure = error }
        // A checkpoint's I/O error may be the WAL's own: never sync it again then.
        if case .ioFailure = error { syncForbidden = true }
        if prewritten > 0, let first = pending.first {
            // Written by its committer already: only its sync is left to do.
            pending = [first]
            unpublishable = true
        } else {
            pending.removeAll()
            prewritten = 0
        }
        buffer.removeAll()
        condition.broadcast()
        failWaiters()
        condition.unlock()
    }

    /// With the lock held, in the failed state: the error for the commit with `lsn` if its outcome is known and is a
    /// failure; nil if it is durable or still being written or synced.
    private func failedOutcome(_ lsn: UInt64) -> EventStoreError? {
        guard let failure, lsn > durableLSN else { return nil }
        if lsn <= unknownThrough, let ioError { return ioError }  // written, not made durable: outcome unknown
        if lsn <= takenThrough { return nil }  // the flusher is writing or syncing it
        if let last = pending.last, lsn <= last.lsn { return nil }  // written alone; the flusher will sync it
        return .storeFailed(reason: failure.description)  // never written
    }

    /// With the lock held, in the failed state: resumes the committers whose outcome is a known failure, outside the
    /// lock.
    private func failWaiters() {
        var failed: [(CheckedContinuation<DurableNotice?, any Error>, EventStoreError)] = []
        waiters.removeAll { waiter in
            guard let error = failedOutcome(waiter.lsn) else { return false }
            failed.append((waiter.continuation, error))
            return true
        }
        guard !failed.isEmpty else { return }
        condition.unlock()
        for (continuation, error) in failed { continuation.resume(throwing: error) }
        condition.lock()
    }

    /// Stops the flusher after it has written what is queued, and waits for the thread to end.
    func stop() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            defer { condition.unlock() }
            if finished {
                continuation.resume()
                return
            }
            stopping = true
            finishWaiters.append(continuation)
            condition.broadcast()
        }
    }

    /// Asks the flusher to end once idle, without waiting (for a store that failed to open).
    func requestStop() {
        locked {
            stopping = true
            condition.broadcast()
        }
    }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        condition.lock()
        defer { condition.unlock() }
        return try body()
    }

    // MARK: The flusher thread

    private var syncInterval: TimeInterval? {
        if case .deferred(let delay) = durability { return delay.timeInterval }
        return nil
    }

    private enum Work { case flush, sync, exit }

    private func run() {
        condition.lock()
        loop: while true {
            switch nextWork() {
            case .exit: break loop
            case .sync: syncDeferred()
            case .flush: flushQueued()
            }
        }
        finished = true
        let finishWaiters = self.finishWaiters
        self.finishWaiters.removeAll()
        condition.unlock()
        for waiter in finishWaiters { waiter.resume() }
    }

    /// With the lock held: waits for the next thing to do.
    private func nextWork() -> Work {
        while true {
            if !ioBusy {
                // In the failed state only a record already written is left queued (see `fail`): it is synced.
                if !pending.isEmpty, !applying, !queueHeld { return .flush }
                if !syncForbidden, let since = unsyncedSince, let interval = syncInterval,
                    stopping || since.addingTimeInterval(interval) <= Date()
                {
                    return .sync
                }
                if stopping, !applying { return .exit }
            }
            if !ioBusy, !syncForbidden, let since = unsyncedSince, let interval = syncInterval {
                // At most an hour at a time: Foundation traps on a deadline past 2262, and a delay of "never" is
                // allowed. The loop checks again on waking.
                _ = condition.wait(until: min(since.addingTimeInterval(interval), Date().addingTimeInterval(3_600)))
            } else {
                condition.wait()
            }
        }
    }

    /// With the lock held: writes (and syncs) everything queued, publishes it and resumes its committers.
    private func flushQueued() {
        let bytes = buffer
        let group = pending
        let offset = walOffset
        let allocated = allocatedEnd
        let written = prewritten
        let publishes = !unpublishable
        unpublishable = false
        prewritten = 0
        buffer.removeAll(keepingCapacity: true)
        pending.removeAll(keepingCapacity: true)
        takenThrough = group.last?.lsn ?? takenThrough
        // The taken group is sealed: the next transaction starts a new one and copies these nodes before changing them.
        openGroup &+= 1
        ioBusy = true
        condition.unlock()
        let (error, extended) = flush(bytes, at: offset, allocated: allocated, written: written)
        condition.lock()
        allocatedEnd = extended
        if let error {
            failIO(error, group: group)
            return
        }
        metrics.recordGroup(transactions: group.count, bytes: written + bytes.count)
        walOffset = offset + UInt64(written + bytes.count)
        if syncInterval != nil, unsyncedSince == nil { unsyncedSince = Date() }
        condition.unlock()
        let replaced = publishes ? publish(group) : nil
        condition.lock()
        // Only now, after readers can see the group, may committers of it return.
        durableLSN = group.last?.lsn ?? durableLSN
        if durability == .full { synced.store(durableLSN, ordering: .relaxed) }
        // Idle only after publishing, so a checkpoint (reserveWAL) never races an older group's publish.
        ioBusy = false
        condition.broadcast()
        resumeDurable(leaving: GroupLeftovers(replaced: replaced, group: group))
        if failure != nil { failWaiters() }
    }

    /// With the lock held: fdatasyncs deferred commits.
    private func syncDeferred() {
        ioBusy = true
        // Every record through it is written (flushQueued advances it after its write).
        let written = durableLSN
        condition.unlock()
        var syncError: EventStoreError?
        do {
            try wal.sync()
            metrics.recordSync()
            if written > synced.load(ordering: .relaxed) { synced.store(written, ordering: .relaxed) }
        } catch {
            syncError = error as? EventStoreError ?? .storeFailed(reason: "\(error)")
        }
        if let syncError { metrics.notify(.failed(reason: syncError.description)) }
        condition.lock()
        ioBusy = false
        unsyncedSince = nil
        if let syncError { failAll(syncError, group: []) }
    }

    /// Bytes the WAL is extended by at a time.
    static let preallocationStep: UInt64 = 1 << 20

    /// Writes `bytes` after the `written` bytes at `offset` that their committer wrote, extends the file if needed,
    /// and syncs in `.full` durability.
    private func flush(_ bytes: [UInt8], at offset: UInt64, allocated: UInt64, written: Int)
        -> (EventStoreError?, UInt64)
    {
        var allocated = allocated
        do {
            let start = offset + UInt64(written)
            if !bytes.isEmpty { try wal.write(bytes, at: start) }
            let end = start + UInt64(bytes.count)
            if end > allocated {
                let target = (end / Self.preallocationStep + 1) * Self.preallocationStep
                try wal.write([UInt8](repeating: 0, count: Int(target - end)), at: end)
                allocated = target
            }
            Failpoint.hit(Failpoint.beforeWALSync)
            if durability == .full {
                try wal.sync()
                metrics.recordSync()
            }
            Failpoint.hit(Failpoint.afterWALSyncBeforeAck)
            return (nil, allocated)
        } catch let error as EventStoreError {
            return (error, allocated)
        } catch {
            return (EventStoreError.storeFailed(reason: "\(error)"), allocated)
        }
    }

    /// With the lock held, after a failed WAL write or sync (`ioBusy` still set): the observer hears of the failure
    /// before any committer is told, outside the lock (`ioBusy` keeps other I/O out meanwhile); then the pipeline
    /// enters its failed state.
    private func failIO(_ error: EventStoreError, group: [PendingCommit]) {
        condition.unlock()
        metrics.notify(.failed(reason: error.description))
        condition.lock()
        ioBusy = false
        failAll(error, group: group)
    }

    /// With the lock held, after `error` writing or syncing `group` (empty for a deferred sync, whose commits were
    /// acknowledged already): enters the failed state. The group's committers get `error` (outcome unknown: their
    /// records were, or may have been, written); the queued ones, never written, get `storeFailed`.
    private func failAll(_ error: EventStoreError, group: [PendingCommit]) {
        if failure == nil { failure = error }
        syncForbidden = true
        if let last = group.last?.lsn, last > unknownThrough {
            unknownThrough = last
            ioError = error
        }
        buffer.removeAll()
        prewritten = 0
        pending.removeAll()
        unpublishable = false
        condition.broadcast()
        failWaiters()
    }

    /// With the lock held: resumes every committer whose record is durable. Only the first is resumed here; it resumes
    /// the others. It also gets `leftovers` if the next group is already queued; otherwise they are freed here,
    /// outside the lock, after the resume.
    private func resumeDurable(leaving leftovers: GroupLeftovers) {
        var ready = waiters.filter { $0.lsn <= durableLSN }.map(\.continuation)
        waiters.removeAll { $0.lsn <= durableLSN }
        let handOver = !pending.isEmpty
        condition.unlock()
        var leftovers: GroupLeftovers? = leftovers
        if !ready.isEmpty {
            let first = ready.removeFirst()
            first.resume(returning: DurableNotice(others: ready, leftovers: handOver ? leftovers.take() : nil))
        }
        withExtendedLifetime(leftovers) {}
        leftovers = nil
        condition.lock()
    }
}
