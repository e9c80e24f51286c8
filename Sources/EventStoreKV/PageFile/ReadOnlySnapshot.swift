// ReadOnlySnapshot: how a read-only store reads a consistent snapshot while a writer in another process goes on,
// and how refresh() brings it up to the writer's later commits.
//
// A read-only store takes no lock. It reads the tree of the newest meta page at its open (epoch E) plus the WAL
// records then written, and a writer may meanwhile commit, checkpoint and compact. Its reads stay sound because of
// the order a checkpoint keeps (Checkpoint.swift):
// - Checkpoint E+1 writes only pages that are free in meta E; no page of E's tree or free list is among them.
// - Checkpoint E+2 may reuse the pages E+1 freed, which E's tree reaches, but it starts only after meta E+1 has been
//   written whole (and synced).
// - The WAL header of generation E+1 is rewritten only after meta E+1 has been written too.
// So bytes of E's pages or E's WAL generation read before a check that still finds no valid meta newer than E were
// read before either could be overwritten: a pread that starts after meta E+1's pwrite returned sees it (and a slot
// caught mid-write fails its checksum, which is correct: its write had not returned).
//
// Invariants:
// - Every page a read-only store reads from disk is checked after the read and before it is decoded, cached or
//   returned (PageReader); opening checks after reading the meta's WAL; so no byte the snapshot did not hold ever
//   reaches a caller. A failed check is `snapshotExpired`, never `corrupted`: when a read also failed its own
//   checks, the guard is asked first, so a page overwritten under the reader is not reported as damage.
// - Expiry is final: epochs only grow, so once a check fails every later one fails too.
// - A data file replaced by compaction (another inode at the path) also expires the snapshot: the old file is never
//   written again, but its meta would never move, so a refresh could never see past it.
// - refresh() applies only whole records of the snapshot's own WAL generation, in LSN order, read before a check
//   that still finds the snapshot current: exactly what the writer's recovery would replay from the same bytes.
//   A checkpoint since the open starts a new generation, whose records it cannot see: that is `snapshotExpired`.
// - A snapshot may hold the last commits a writer has written but not yet made durable (fdatasync): after a power
//   failure those may be gone from the store although a reader saw them. A process crash loses nothing a reader
//   saw: the writer's next recovery replays those records from the page cache.

import EventStore
import Glibc

/// Checks that the snapshot a read-only store reads is still intact on disk.
final class SnapshotGuard: Sendable {
    /// The meta page the snapshot reads.
    let meta: MetaPage
    private let file: SystemFile

    init(file: SystemFile, meta: MetaPage) {
        self.file = file
        self.meta = meta
    }

    /// Throws `snapshotExpired` if the writer has written a newer meta page, or replaced the data file, since the
    /// snapshot's meta was read.
    func check() throws {
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

    /// Runs `read`, a read of the snapshot's bytes, then checks the snapshot. When `read` throws (a page that fails
    /// its checks, a short read), the check decides: `snapshotExpired` if the writer overwrote the snapshot,
    /// otherwise `read`'s own error.
    func validated<T>(_ read: () throws -> T) throws -> T {
        let result: T
        do {
            result = try read()
        } catch {
            try check()
            throw error
        }
        try check()
        return result
    }
}

extension PageFileKeyValueStore {
    /// Brings a read-only store up to the commits a writer has made since it was opened or last refreshed: the
    /// writer's WAL records after the snapshot are replayed in memory and published, so later reads see them and
    /// ``changes(after:prefix:)`` watchers are told. Cheap when nothing is new: an fstat, one read of at most 64 KiB
    /// of the WAL, and a meta check.
    /// - Returns: how many committed transactions were applied; 0 when nothing is new.
    /// - Throws: `snapshotExpired` once a writer has checkpointed since the store was opened (its later commits are
    ///   in a WAL generation this snapshot cannot continue): close the store and open it again. `invalidArgument`
    ///   on a writable store, which is always current; ``KeyValueStoreError/closed`` after ``close()``.
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

    /// refresh() with the writer lock held.
    private func refreshLocked() throws -> Int {
        var state = writer.state
        guard let snapshot = state.reader.snapshot else { return 0 }
        let transactions = try snapshot.validated { () throws -> [LoggedTransaction] in
            let (found, end) = try readRecords(after: state.walScanEnd, salt: snapshot.meta.walSalt, firstLSN: state.lsn + 1)
            state.walScanEnd = end
            try Self.replay(found, into: &state, reader: state.reader)
            return found
        }
        guard !transactions.isEmpty else { return 0 }
        // Only a checkpoint uses the freed pages, and a read-only store never runs one.
        state.freedSinceCheckpoint.removeAll()
        writer.state = state
        pipeline.noteReplayed(upTo: state.walScanEnd)
        let commits = transactions.map { transaction in
            PendingCommit(
                lsn: transaction.lsn, revision: transaction.revision, root: state.root, keyCount: state.keyCount,
                changes: transaction.writes.map { write in
                    switch write {
                    case .put(let key, _, _, _): KeyValueChange(revision: transaction.revision, kind: .put, key: key)
                    case .delete(let key): KeyValueChange(revision: transaction.revision, kind: .delete, key: key)
                    }
                })
        }
        _ = published.publish(commits)
        return transactions.count
    }

    /// The whole records of the snapshot's WAL generation from `offset` on, and the offset after the last one. Reads
    /// in chunks and stops at the first byte that is not a record: a checkpoint reuses the WAL file without
    /// truncating it, so what follows the last record can be megabytes of an older generation.
    private func readRecords(after offset: UInt64, salt: UInt64, firstLSN: UInt64) throws
        -> (records: [LoggedTransaction], end: UInt64)
    {
        let size = try wal.size()
        var records: [LoggedTransaction] = []
        var offset = offset
        var chunk = Self.walChunk
        while offset < size {
            let bytes = try wal.read(count: Int(min(UInt64(chunk), size - offset)), at: offset)
            let scan = WriteAheadLog.scan(bytes, from: 0, salt: salt, firstLSN: firstLSN + UInt64(records.count))
            records += scan.transactions
            offset += UInt64(scan.validEnd)
            // Read on only when the chunk ended inside what may be the next record: one whose frame carries the next
            // LSN (older bytes after the last record must not make it read the rest of the file).
            let rest = bytes.count - scan.validEnd
            guard bytes.count == chunk, offset < size else { break }
            if rest >= WriteAheadLog.frameSize {
                let length = Int(bytes.loadLE(UInt32.self, at: scan.validEnd))
                let lsn = bytes.loadLE(UInt64.self, at: scan.validEnd + 8)
                guard lsn == firstLSN + UInt64(records.count), length <= WriteAheadLog.maximumPayload,
                    WriteAheadLog.frameSize + length > rest
                else { break }
                chunk = max(Self.walChunk, WriteAheadLog.frameSize + length)
            } else {
                chunk = Self.walChunk
            }
        }
        return (records, offset)
    }

    /// The bytes refresh() reads of the WAL at a time.
    static let walChunk = 64 * 1024
}
