// Backup: a hot, consistent copy of the store while writes continue (as LMDB's and ESENT's online backups do).
//
// Invariants:
// - The copy is the state of one checkpoint: the backup checkpoints under the writer lock, then pins that
//   checkpoint's epoch as a reader, so no page of its tree or free list can be reused until the copy is done.
//   Writers continue meanwhile (they write only to other pages and to the WAL).
// - Pages that are free in that checkpoint may change while they are copied; they are free in the copy too, so
//   nothing reads them.
// - The copy is written as `data.creating`, fsynced and renamed, with a fresh WAL of the checkpoint's generation,
//   so it opens as a store; a destination that already holds a store is refused and left untouched.
// - A read-only store copies its snapshot, beside a writer in another process: its checkpoint's pages, and its WAL
//   generation's records up to the last one it has taken in, which the copy replays when it is opened. Nothing is
//   renamed into place unless the snapshot's pages are intact after every byte was read (an unpinned snapshot
//   checks the meta slots; every copy is walked, and a page a writer rewrote shows its later checkpoint's LSN) and
//   the WAL bytes read are exactly those records; otherwise the backup fails with `snapshotExpired`.
// - A backup that fails removes what it wrote into the destination (and the lock file, and the destination
//   itself, if it created them), so it can simply be run again into the same place.
// - Cancellation is checked before anything is done and between chunks of the copy (every 256 pages); a cancelled
//   backup fails like any other (`CancellationError`) and leaves the store as it was.

import EventStore
import Glibc

extension PageFileKeyValueStore {
    /// Writes a consistent copy of the store into `destination` (created with mode 0700 if needed) while writes
    /// continue. The copy opens as a store holding every commit acknowledged before `backup` was called; a
    /// read-only store's copy holds exactly its snapshot (see ``PageFileOptions/readOnly``): what it had taken in at
    /// its open or last ``refresh()``. A backup that fails leaves no file of its own in `destination` (nor the
    /// directory, if it created it), so it can be run again into the same place. It honours Task cancellation: a
    /// cancelled backup throws `CancellationError`, leaves nothing behind and does not change the store.
    /// - Throws: `invalidArgument` if `destination` already holds a store (a data file, or a wal longer than a WAL
    ///   header, which may hold another store's records and is never overwritten; a header-sized one, which a
    ///   writable store's backup that died before its rename leaves, is taken over; a read-only store's backup
    ///   writes records into its wal, so after such a crash its destination must be emptied by hand);
    ///   `storeLocked` if it is in use; for a
    ///   read-only store, `snapshotExpired` if a writer has checkpointed since the snapshot's records were taken in
    ///   (``refresh()`` and try again), or if the snapshot is unpinned and a writer checkpointed before or while it
    ///   copies.
    public func backup(to destination: String) async throws {
        try Task.checkCancellation()
        if options.readOnly { return try await backupSnapshot(to: destination) }
        let (meta, source, pin) = try await writerLock.withLockUnlessCancelled {
            () -> (MetaPage, PageReader, @Sendable () -> Void) in
            try checkWritable()
            try Task.checkCancellation()
            try await Offload.run { try self.checkpointLocked() }
            let pin = published.pinEpoch()
            return (writer.state.meta, writer.state.reader, pin.unpin)
        }
        defer { pin() }
        try await Offload.run(cancellable: { cancellation in
            try Self.copy(meta, from: source, to: destination, cancellation: cancellation, faults: self.options.faults)
        })
    }

    private func backupSnapshot(to destination: String) async throws {
        let (state, wal) = try await writerLock.withLock { () -> (WriterState, SystemFile) in
            if published.state.withLock({ $0.closed }) { throw KeyValueStoreError.closed }
            return (writer.state, self.wal)
        }
        // Every read-only store reads through a guard; without one there is no snapshot to vouch for, and returning
        // would report a copy that was never made.
        guard let snapshot = state.reader.snapshot else {
            throw EventStoreError.invalidArgument("the store in \(directory) has no snapshot to back up")
        }
        try await Offload.run(cancellable: { cancellation in
            let start = UInt64(WriteAheadLog.headerSize)
            let records = state.walScanEnd > start ? try wal.read(count: Int(state.walScanEnd - start), at: start) : []
            try Self.checkRecords(
                records, of: snapshot.meta, through: state.lsn, version: state.walVersion, path: wal.path)
            try Self.copy(
                snapshot.meta, from: state.reader, to: destination, records: records, walVersion: state.walVersion,
                cancellation: cancellation, faults: self.options.faults
            ) { copied in
                try snapshot.checkPages()
                try self.checkCopy(copied, of: snapshot, cancellation: cancellation)
            }
        })
    }

    /// Walks the tree and free list the copy `path` holds of `snapshot`'s checkpoint: a page of them that a writer
    /// rewrote before it was copied (a pin no writer honoured) shows there as a page written after the checkpoint.
    /// Throws `snapshotExpired` if such a failure may be reuse, `corrupted` naming the first problem otherwise.
    private func checkCopy(_ path: String, of snapshot: SnapshotGuard, cancellation: Offload.Cancellation) throws {
        let meta = snapshot.meta
        let copy = PageReader(
            file: try SystemFile.open(path, create: false, readOnly: true, faults: nil), pageSize: meta.pageSize,
            cache: PageCache(capacity: 16))
        let report = try check(meta, reader: copy, otherMetaSlot: false, cancellation: cancellation)
        guard let problem = report.problems.first else { return }
        try snapshot.explainFailedRead()
        // The problem names the copy's file, which is removed: the page is the same in the store's own.
        throw EventStoreError.corrupted(
            location: directory + "/data",
            detail: "the snapshot fails verification in its backup copy: " + problem.replacing(path, with: "copy"))
    }

    /// Throws `snapshotExpired` unless `records` are exactly the records of `meta`'s WAL generation through `lsn`:
    /// once the writer has started a new generation, the file holds other bytes there.
    private static func checkRecords(
        _ records: [UInt8], of meta: MetaPage, through lsn: UInt64, version: UInt32, path: String
    ) throws {
        let scan = WriteAheadLog.scan(
            records, from: 0, salt: meta.walSalt, firstLSN: meta.checkpointLSN + 1, version: version)
        guard scan.validEnd == records.count, UInt64(scan.transactions.count) == lsn - meta.checkpointLSN else {
            throw EventStoreError.snapshotExpired(path: path)
        }
    }

    /// Copies the tree and free list of `meta` from `source` into a new store in `destination`, with `records` (whole
    /// WAL records of `meta`'s generation, of format `walVersion`) after its WAL header; `beforeRename`, given the
    /// copy's data file, may still refuse the copy. Throws `CancellationError`, having removed what it wrote, once
    /// `cancellation` is set. `faults` records the directory syncs (power-loss tests).
    static func copy(
        _ meta: MetaPage, from source: PageReader, to destination: String, records: [UInt8] = [],
        walVersion: UInt32 = WriteAheadLog.formatVersion, cancellation: Offload.Cancellation,
        faults: IOFaultPlan? = nil, beforeRename: (_ copied: String) throws -> Void = { _ in }
    ) throws {
        // Whether this call made the directory, from its own mkdir: another process may make it between a check and
        // the mkdir, and its directory must then neither be removed on failure nor go without its parent's sync.
        let createdDestination = try Directory.create(destination)
        let lockPath = destination + "/lock"
        let hadLock = SystemFile.exists(lockPath)
        let lock = try DirectoryLock.acquire(directory: destination)
        defer { lock.release() }
        let dataPath = destination + "/data"
        let temporary = dataPath + ".creating"
        var writing = false
        do {
            guard !SystemFile.exists(dataPath) else {
                throw EventStoreError.invalidArgument("the backup destination \(destination) already holds a store")
            }
            // A wal alone may be the only copy of another store's recent commits: never overwritten, never removed.
            // One of a header or less (what a backup or a creation that died before its rename leaves) is taken over.
            if let size = PageFileKeyValueStore.orphanWALSize(destination + "/wal") {
                throw EventStoreError.invalidArgument(
                    "the backup destination \(destination) already holds a wal of \(size) bytes; move it away or "
                        + "choose another destination")
            }
            writing = true
            try write(
                meta, from: source, to: temporary, wal: destination + "/wal", records: records, walVersion: walVersion,
                cancellation: cancellation)
            try beforeRename(temporary)
            try Directory.rename(temporary, to: dataPath)
        } catch {
            // Leave the destination as it was found, so the same backup can be run into it again. What it wrote goes
            // (any wal there before was a header at most); a refused backup wrote nothing, and removes only the lock
            // file and the directory if it made them, and the lock file only where no store is: a store's own
            // openers may have opened it (DirectoryLock drops a flock on an unlinked lock file, but keep it anyway).
            if writing { for path in [temporary, destination + "/wal"] { unlink(path) } }
            if !hadLock, !SystemFile.exists(dataPath) { unlink(lockPath) }
            if createdDestination { rmdir(destination) }
            throw error
        }
        try Directory.sync(destination, faults: faults)
        // A destination that already existed may have an entry its parent never synced (Directory.create syncs the
        // parent only for a directory it makes): without it a power cut could take the whole backup.
        if !createdDestination { try Directory.syncParent(of: destination, faults: faults) }
    }

    /// Writes the copy's data file as `temporary` and its WAL, and syncs both; polls `cancellation` every chunk.
    private static func write(
        _ meta: MetaPage, from source: PageReader, to temporary: String, wal walPath: String, records: [UInt8],
        walVersion: UInt32, cancellation: Offload.Cancellation
    ) throws {
        let copy = try SystemFile.create(temporary)
        let pageSize = UInt64(meta.pageSize)
        var page: UInt64 = 2
        while page < meta.pageCount {
            try cancellation.check()
            let count = min(256, meta.pageCount - page)
            var chunk = try source.read(count: Int(count * pageSize), at: page * pageSize)
            if chunk.count < Int(count * pageSize) { chunk.append(contentsOf: [UInt8](repeating: 0, count: Int(count * pageSize) - chunk.count)) }
            try copy.write(chunk, at: page * pageSize)
            page += count
        }
        var metas = [UInt8](repeating: 0, count: Int(2 * pageSize))
        metas.replaceSubrange(Int(meta.epoch % 2 * pageSize)..<Int((meta.epoch % 2 + 1) * pageSize), with: meta.encoded())
        try copy.write(metas, at: 0)
        try copy.sync()
        let wal = try SystemFile.create(walPath)
        let header = WriteAheadLog.header(salt: meta.walSalt, firstLSN: meta.checkpointLSN + 1, version: walVersion)
        try wal.write(header + records, at: 0)
        try wal.sync()
    }
}
