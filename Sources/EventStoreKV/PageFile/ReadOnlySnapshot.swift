// ReadOnlySnapshot: how a read-only store reads a consistent snapshot while a writer in another process goes on,
// and how refresh() brings it up to the writer's later commits and checkpoints.
//
// A read-only store takes no flock. It reads the tree of the newest meta page at its open (epoch E) plus the WAL
// records then written, and a writer may meanwhile commit, checkpoint and compact. Its reads stay sound because of
// the order a checkpoint keeps (Checkpoint.swift):
// - Checkpoint E+1 writes only pages that are free in meta E; no page of E's tree or free list is among them.
// - Checkpoint E+2 may reuse the pages E+1 freed, which E's tree reaches, but it starts only after meta E+1 has been
//   written whole (and synced), and it reuses none while a reader pins E or an older epoch (ReaderPins.swift).
// - The WAL header of generation E+1 is rewritten only after meta E+1 has been written too.
// So bytes of E's pages or E's WAL generation read before a check that still finds no valid meta newer than E were
// read before either could be overwritten: a pread that starts after meta E+1's pwrite returned sees it (and a slot
// caught mid-write fails its checksum, which is correct: its write had not returned).
//
// Invariants:
// - An open pins E before it checks, after reading E's free list and WAL bytes, that E is still the newest meta: a
//   pinned snapshot's pages then stay intact for as long as it lives, however far the writer moves on. The check
//   comes before the WAL records are decoded and replayed (and refresh() checks before it replays), so only the reads
//   race the writer's next checkpoint, not the replay, which reads pages only through the guard below.
// - A snapshot that could not be pinned checks the meta slots after every page it reads from disk, before the page
//   is decoded, cached or returned (PageReader), so no byte the snapshot did not hold ever reaches a caller. Every
//   snapshot also checks each page's LSN against its meta's checkpoint LSN: a page written by a later checkpoint
//   is never taken for one of its own, whatever went wrong with the pin. A failed check is `snapshotExpired`, never
//   `corrupted`. When a read fails its own checks, the snapshot first asks whether the page may have been reused
//   (unpinned, or pinned but not provably honoured by every writer since its checkpoint, and a writer has moved
//   on): then it is `snapshotExpired`, not damage; otherwise the damage is reported as `corrupted`, naming the page.
// - Expiry is final: epochs only grow, so once a check fails every later one fails too.
// - A data file replaced by compaction (another inode at the path) counts as a newer meta: the old file is never
//   written again, but its meta would never move.
// - refresh() applies only whole records of the snapshot's own WAL generation (their CRC is seeded with its salt),
//   in LSN order: exactly what the writer's recovery would replay from the same bytes.
// - Once the writer has checkpointed, refresh() opens a new snapshot of the newest checkpoint and swaps it in whole
//   (writer state and published state): reads already running finish on the old one, which stays pinned until its
//   last reader is done. Watchers go on with the new commits if the checkpoint holds exactly the commits the old
//   snapshot had; otherwise commits in between are unknown, so every watcher ends with `historyUnavailable` and
//   re-reads (the event store's subscriptions do that by themselves).
// - A snapshot may hold the last commits a writer has written but not yet made durable (fdatasync): after a power
//   failure those may be gone from the store although a reader saw them. A process crash loses nothing a reader
//   saw: the writer's next recovery replays those records from the page cache.

import EventStore
import Glibc
import Synchronization

/// Checks that the snapshot a read-only store reads is still intact on disk.
final class SnapshotGuard: Sendable {
    /// The meta page the snapshot reads.
    let meta: MetaPage
    /// The snapshot's pin on its epoch; nil when it reads unpinned.
    let pin: ReaderPin?
    /// Pages free in the snapshot's checkpoint, once its free list has been read (statistics report them).
    var freePages: Int {
        get { freePageCount.load(ordering: .relaxed) }
        set { freePageCount.store(newValue, ordering: .relaxed) }
    }
    private let freePageCount = Atomic<Int>(0)
    private let file: SystemFile

    init(file: SystemFile, meta: MetaPage, pin: ReaderPin?) {
        self.file = file
        self.meta = meta
        self.pin = pin
    }

    /// Throws `snapshotExpired` if the writer has written a newer meta page, or replaced the data file, since the
    /// snapshot's meta was read.
    func checkCurrent() throws {
        let size = meta.pageSize
        let pages = try file.read(count: 2 * size, at: 0)
        for slot in 0..<2 where pages.count >= (slot + 1) * size {
            let page = Array(pages[(slot * size)..<((slot + 1) * size)])
            if let found = MetaPage.decode(page, slot: UInt64(slot), pageSize: size, path: file.path),
                found.epoch > meta.epoch
            {
                throw EventStoreError.snapshotExpired(path: file.path)
            }
        }
        if try file.isReplaced() { throw EventStoreError.snapshotExpired(path: file.path) }
    }

    /// Throws `snapshotExpired` if pages the snapshot read may have been reused since: never while it is pinned.
    func checkPages() throws {
        if pin == nil { try checkCurrent() }
    }

    /// Throws `snapshotExpired` if `page`, read from disk, was written by a checkpoint after the snapshot's.
    func checkWritten(_ page: [UInt8]) throws {
        if page.loadLE(UInt64.self, at: Page.lsnOffset) > meta.checkpointLSN {
            throw EventStoreError.snapshotExpired(path: file.path)
        }
    }

    /// After a read of the snapshot's pages failed its checks: throws `snapshotExpired` if the failure may come from
    /// a writer reusing them, so that it is not reported as damage. It cannot while the store is held by a writer
    /// that honours the pin and has held it since before the snapshot's checkpoint (ReaderPins.swift), or while no
    /// writer has moved past the snapshot.
    func explainFailedRead() throws {
        if pin?.isHonoured == true { return }
        try checkCurrent()
    }

    /// Runs `read`, a read of the snapshot's pages, then `checkPages()`. When `read` throws (a page that fails its
    /// checks, a short read), `explainFailedRead()` decides: `snapshotExpired`, or `read`'s own error.
    func validatedPages<T>(_ read: () throws -> T) throws -> T {
        try validated(read, onFailure: explainFailedRead, then: checkPages)
    }

    /// Runs `read`, a read of the snapshot's WAL or of the meta's free list, then `checkCurrent()`: only bytes read
    /// while the snapshot was still the newest belong to it. When `read` throws, the newest meta decides:
    /// `snapshotExpired` if the writer has moved on (the WAL may be of its next generation), otherwise `read`'s own
    /// error.
    func validatedCurrent<T>(_ read: () throws -> T) throws -> T {
        try validated(read, onFailure: checkCurrent, then: checkCurrent)
    }

    /// Like `validatedCurrent`, but `read` calls the check it is handed itself, once it holds the bytes that must be
    /// the snapshot's and before the long part of its work (decoding and replaying them, which reads its pages only
    /// through the guarded PageReader); `read` must call it exactly there.
    func validatedCurrent<T>(checking read: (_ check: () throws -> Void) throws -> T) throws -> T {
        try validated({ try read(checkCurrent) }, onFailure: checkCurrent, then: {})
    }

    /// Runs `read`; if it throws, `onFailure` may throw instead (a newer meta explains it), else `read`'s error
    /// stands; if it returns, `check` must pass.
    private func validated<T>(
        _ read: () throws -> T, onFailure: () throws -> Void, then check: () throws -> Void
    ) throws -> T {
        let result: T
        do {
            result = try read()
        } catch {
            try onFailure()
            throw error
        }
        try check()
        return result
    }
}

extension PageFileKeyValueStore {
    /// Brings a read-only store up to the commits a writer has made since it was opened or last refreshed, and
    /// publishes them, so later reads see them and ``changes(after:prefix:)`` watchers are told. Cheap when nothing
    /// is new: an fstat, one read of at most 64 KiB of the WAL, and a meta check.
    ///
    /// The writer's commits since the snapshot's checkpoint are replayed from its WAL. Once the writer has
    /// checkpointed (or compacted), the store moves to its newest checkpoint instead: reads already running finish
    /// on the snapshot they started on. Watchers go on across the move when that checkpoint holds exactly the
    /// commits the store had taken in; otherwise they end with
    /// ``KeyValueStoreError/historyUnavailable(requested:oldest:)`` (the event store's subscriptions then re-read by
    /// themselves). Call it more often than the writer checkpoints to keep watchers going, or let
    /// ``followWriter(checkingEvery:)`` call it.
    /// - Returns: how many committed transactions the store moved forward by; 0 when nothing is new.
    /// - Throws: `snapshotExpired` when a writer's checkpoints overtook each of ``snapshotOpenAttempts`` attempts to
    ///   read its newest checkpoint; `invalidArgument` on a writable store, which is always current;
    ///   ``KeyValueStoreError/closed`` after ``close()``.
    @discardableResult
    public func refresh() async throws -> Int {
        guard options.readOnly else {
            throw EventStoreError.invalidArgument("refresh() is for read-only stores; a writable store is always current")
        }
        return try await writerLock.withLock {
            if published.state.withLock({ $0.closed }) { throw KeyValueStoreError.closed }
            return try await Offload.run { try self.refreshLocked() }
        }
    }

    /// Keeps a read-only store following the writer: calls ``refresh()`` every `interval` until the calling task is
    /// cancelled or the store is closed, so that reads and live subscriptions see the writer's commits without the
    /// caller refreshing. Run it in a task of its own, beside the subscriptions it feeds.
    /// - Throws: what ``refresh()`` throws, except ``KeyValueStoreError/closed`` and cancellation, which end it
    ///   normally; `invalidArgument` on a writable store.
    public func followWriter(checkingEvery interval: Duration = .milliseconds(200)) async throws {
        guard options.readOnly else {
            throw EventStoreError.invalidArgument(
                "followWriter is for read-only stores; a writable store is always current")
        }
        while !Task.isCancelled {
            do {
                try await refresh()
                try await Task.sleep(for: interval)
            } catch KeyValueStoreError.closed {
                return
            } catch is CancellationError {
                return
            }
        }
    }

    /// refresh() with the writer lock held.
    private func refreshLocked() throws -> Int {
        var state = writer.state
        guard let snapshot = state.reader.snapshot else { return 0 }
        let transactions: [LoggedTransaction]
        do {
            transactions = try snapshot.validatedCurrent { () throws -> [LoggedTransaction] in
                let (found, end) = try readRecords(
                    after: state.walScanEnd, salt: snapshot.meta.walSalt, firstLSN: state.lsn + 1,
                    version: state.walVersion, revisionLead: state.revision &- state.lsn)
                state.walScanEnd = end
                return found
            }
            // After the check: the records are the snapshot's, and the pages the replay reads are guarded one by one.
            try Self.replay(transactions, into: &state, reader: state.reader, walPath: wal.path)
        } catch EventStoreError.snapshotExpired {
            return try reloadLocked()
        }
        guard !transactions.isEmpty else { return 0 }
        // Only a checkpoint uses the freed pages, and a read-only store never runs one.
        state.freedSinceCheckpoint.removeAll()
        writer.state = state
        _ = published.publish(Self.commits(transactions, state: state), walEnd: state.walScanEnd)
        return transactions.count
    }

    /// Moves a read-only store to the writer's newest checkpoint and the records after it (see refresh()).
    private func reloadLocked() throws -> Int {
        let previous = writer.state
        var attempt = 1
        var loaded: Recovered
        while true {
            do {
                loaded = try Self.readSnapshot(
                    directory: directory, options: options, wal: wal, cacheCounts: previous.reader.cache.counts)
                break
            } catch EventStoreError.snapshotExpired where attempt < Self.snapshotOpenAttempts {
                attempt += 1
            }
        }
        var state = loaded.state
        state.freedSinceCheckpoint.removeAll()
        writer.state = state
        // The checkpoint holds exactly the commits this store had: watchers only miss the records after it.
        let continues = state.meta.checkpointLSN == previous.lsn
        published.reload(
            root: state.root, reader: state.reader, revision: state.revision, keyCount: state.keyCount,
            epoch: state.meta.epoch, walEnd: state.walScanEnd, restartAfter: continues ? nil : state.meta.revision,
            changes: Self.commits(loaded.transactions, state: state).map(\.changes))
        return state.lsn > previous.lsn ? Int(state.lsn - previous.lsn) : 0
    }

    /// The replayed `transactions` as commits to publish, all ending in `state`.
    private static func commits(_ transactions: [LoggedTransaction], state: WriterState) -> [PendingCommit] {
        transactions.map { transaction in
            PendingCommit(
                lsn: transaction.lsn, revision: transaction.revision, root: state.root, keyCount: state.keyCount,
                changes: transaction.writes.map { write in
                    switch write {
                    case .put(let key, _, _, _): KeyValueChange(revision: transaction.revision, kind: .put, key: key)
                    case .delete(let key): KeyValueChange(revision: transaction.revision, kind: .delete, key: key)
                    }
                })
        }
    }

    /// The whole records of the snapshot's WAL generation from `offset` on, and the offset after the last one. Reads
    /// in chunks and stops at the first byte that is not a record: a checkpoint reuses the WAL file without
    /// truncating it, so what follows the last record can be megabytes of an older generation.
    private func readRecords(
        after offset: UInt64, salt: UInt64, firstLSN: UInt64, version: UInt32, revisionLead: UInt64
    ) throws -> (records: [LoggedTransaction], end: UInt64) {
        let size = try wal.size()
        var records: [LoggedTransaction] = []
        var offset = offset
        var chunk = Self.walChunk
        let frameSize = WriteAheadLog.frameSize(version: version)
        var rereads = 0
        while offset < size {
            let bytes = try wal.read(count: Int(min(UInt64(chunk), size - offset)), at: offset)
            let scan = WriteAheadLog.scan(
                bytes, from: 0, salt: salt, firstLSN: firstLSN + UInt64(records.count), version: version,
                revisionLead: revisionLead)
            if let proof = scan.proofOfDamage {
                // A read racing the writer can copy a page before a record lands in it and a later page after the
                // next one did (pread is not atomic across pages): read again before calling it damage.
                if rereads < 3 {
                    rereads += 1
                    continue
                }
                let inFile: WriteAheadLog.ProofOfDurability =
                    switch proof {
                    case .found(let lsn, let at): .found(lsn: lsn, offset: Int(offset) + at)
                    case .undecided(let at): .undecided(offset: Int(offset) + at)
                    }
                throw Self.walDamage(
                    at: Int(offset) + scan.validEnd, lsn: firstLSN + UInt64(records.count + scan.transactions.count),
                    proof: inFile, wal.path)
            }
            rereads = 0
            records += scan.transactions
            offset += UInt64(scan.validEnd)
            // Read on only when the chunk ended inside what may be the next record: one whose frame carries the next
            // LSN (older bytes after the last record must not make it read the rest of the file).
            let rest = bytes.count - scan.validEnd
            guard bytes.count == chunk, offset < size else { break }
            if rest >= frameSize {
                let length = Int(bytes.loadLE(UInt32.self, at: scan.validEnd))
                let lsn = bytes.loadLE(UInt64.self, at: scan.validEnd + 8)
                guard lsn == firstLSN + UInt64(records.count), length <= WriteAheadLog.maximumPayload,
                    frameSize + length > rest
                else { break }
                chunk = max(Self.walChunk, frameSize + length)
            } else {
                chunk = Self.walChunk
            }
        }
        return (records, offset)
    }

    /// The bytes refresh() reads of the WAL at a time.
    static let walChunk = 64 * 1024
}
