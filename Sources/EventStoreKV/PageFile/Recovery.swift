// Recovery: opening a store directory. Creates a new store, or finds the newest valid meta page, replays the WAL
// records after its checkpoint LSN and checkpoints the result.
//
// Invariants:
// - A new store's data file is written under a temporary name, fsynced and renamed into place, so `data` is either
//   absent or a whole, valid initial file. An existing file is never overwritten unless it is a valid store of
//   this format and page size: garbage, a newer version or another page size get `incompatibleStore`. So does a WAL
//   whose whole header declares a newer version: its records are never dropped as a stale generation.
// - Replay applies exactly the WAL's valid prefix: records with the meta's salt and consecutive LSNs from
//   checkpointLSN + 1. A torn or damaged tail is cut at the last whole record; a WAL of another generation (salt)
//   is ignored as a whole (its records are all in the tree already). A damaged header does not hide records that
//   carry the meta's salt and those LSNs: only the current generation's can, so they are replayed.
// - A record whose checksum holds but that the writer could not have logged (a revision out of sequence, a key or
//   value over the commit limits, an impossible version) is not cut like a torn tail: the commits after it may have
//   been acknowledged, so the open fails with `corrupted` naming the WAL and the record, before anything is changed.
//   So does a damaged record that a later record's synced LSN proves was durable (WriteAheadLog.swift).
// - If anything was replayed or cut, or the WAL is of an older format, recovery checkpoints at once: the recovered
//   state goes into the page file and the WAL starts a new generation (of the current format), so stale bytes past
//   the cut can never be mistaken for records later.

import EventStore
import Foundation
import Glibc

/// What recovery found when the store was opened.
public struct RecoveryReport: Sendable, Hashable {
    /// Whether the directory held no store and a new one was created.
    public var created: Bool
    /// WAL records replayed on top of the last checkpoint.
    public var replayedTransactions: Int
    /// Bytes after the last valid WAL record that were not zeros, and were cut: a torn record, damage, or (most often,
    /// and harmless) records of an earlier WAL generation that a checkpoint left in place when it reused the file.
    /// Not a sign of loss: a damaged record that a later one shows was acknowledged fails the open as `corrupted`.
    public var discardedWALBytes: Int
    /// Whether the WAL belonged to another generation and was ignored.
    public var ignoredStaleWAL: Bool
}

extension PageFileKeyValueStore {
    /// Opens the store in `directory`, creating the directory (mode 0700) and an empty store if needed, and
    /// recovering from the WAL after a crash. With ``PageFileOptions/readOnly`` it opens a snapshot instead, beside
    /// any writer (see ``PageFileOptions/readOnly``).
    /// - Throws: `storeLocked` if another writer (in this process or another) holds the directory;
    ///   `incompatibleStore` if the directory holds something this version cannot open, or a wal without its data
    ///   file (nothing is changed then);
    ///   `corrupted` if both meta pages are damaged or the WAL has lost acknowledged commits to damage (a damaged
    ///   record that a later one shows was durable); `ioFailure` for system call failures; for a read-only open,
    ///   `snapshotExpired` if a writer checkpointed during each of ``snapshotOpenAttempts`` attempts to read it.
    public static func open(directory: String, options: PageFileOptions = PageFileOptions()) throws
        -> PageFileKeyValueStore
    {
        try options.validate()
        if options.readOnly { return try openSnapshot(directory: directory, options: options) }
        try Directory.create(directory, faults: options.faults)
        let lock = try DirectoryLock.acquire(directory: directory)
        do {
            return try open(directory: directory, options: options, lock: lock)
        } catch {
            lock.release()
            throw error
        }
    }

    /// How often a read-only open starts again when a writer's checkpoint overtakes it before it has read its
    /// snapshot (each retry needs another checkpoint during one open).
    public static let snapshotOpenAttempts = 8

    /// Opens a read-only snapshot: no lock, nothing written; starts again if the snapshot expires while it is read.
    private static func openSnapshot(directory: String, options: PageFileOptions) throws -> PageFileKeyValueStore {
        guard SystemFile.exists(directory + "/data") else {
            throw EventStoreError.incompatibleStore(path: directory, reason: "no store here (no data file)")
        }
        var attempt = 1
        while true {
            do {
                return try open(directory: directory, options: options, lock: nil)
            } catch EventStoreError.snapshotExpired where attempt < snapshotOpenAttempts {
                attempt += 1
            }
        }
    }

    /// Opens the store in `directory` like the synchronous ``open(directory:options:)``, but does the file I/O of
    /// creation and recovery (several fdatasyncs) on its own thread, so the Swift cooperative pool is never blocked.
    /// Prefer this from async code.
    public static func open(directory: String, options: PageFileOptions = PageFileOptions()) async throws
        -> PageFileKeyValueStore
    {
        try await Offload.run { try open(directory: directory, options: options) as PageFileKeyValueStore }
    }

    private static func open(directory: String, options: PageFileOptions, lock: DirectoryLock?) throws
        -> PageFileKeyValueStore
    {
        let dataPath = directory + "/data"
        let walPath = directory + "/wal"
        var created = false
        // A compaction that crashed before its rename left a partial file behind; the old file is still current.
        if !options.readOnly { Directory.remove(directory + "/data.compact", faults: options.faults) }
        if !SystemFile.exists(dataPath) {
            if options.readOnly {
                throw EventStoreError.incompatibleStore(path: directory, reason: "no store here (no data file)")
            }
            if let size = orphanWALSize(walPath) {
                throw EventStoreError.incompatibleStore(
                    path: directory,
                    reason: "it holds a wal of \(size) bytes but no data file; the wal may hold the only copy of "
                        + "recent commits, so no new store is created over it (restore the data file, or move the wal "
                        + "away to create a new store here)")
            }
            try createDataFile(dataPath, directory: directory, options: options)
            created = true
        }
        let wal: SystemFile
        let recovered: Recovered
        if options.readOnly {
            wal = try SystemFile.open(walPath, create: false, readOnly: true, faults: options.faults)
            recovered = try readSnapshot(directory: directory, options: options, wal: wal)
        } else {
            let data = try SystemFile.open(dataPath, create: false, faults: options.faults)
            try lock?.lockFile(data)
            let meta = try readMeta(data, options: options, walPath: walPath)
            // Every checkpoint from here on is this writer's, and honours readers' pins.
            lock?.announcePinsHonoured(since: meta.epoch)
            let cache = PageCache(capacity: PageCache.capacity(megabytes: options.cacheSizeMB, pageSize: meta.pageSize))
            let reader = PageReader(file: data, pageSize: meta.pageSize, cache: cache)
            wal = try SystemFile.open(walPath, create: true, faults: options.faults)
            try lock?.lockFile(wal)
            // The WAL's entry in the store's directory, and the directory's own entry in its parent, must be durable
            // before a commit is acknowledged, or a power cut takes the file (and every commit since this open) or the
            // whole store. Either may be new and not yet on disk: the wal created just now (one moved away, as
            // walDamage's message advises, or a copy without one), the directory made by the user or copied there, or
            // either left by an open that was killed, or did not sync (durability none), before they reached the
            // disk. So every writable open that syncs at all syncs both, once.
            if options.durability != .none {
                try Directory.sync(directory, faults: options.faults)
                try Directory.syncParent(of: directory, faults: options.faults)
            }
            recovered = try recover(meta, reader: reader, wal: wal, checkFreeList: true)
        }
        var report = recovered.report
        report.created = created
        let store = PageFileKeyValueStore(
            directory: directory, options: options, lock: lock, wal: wal, writer: recovered.state,
            walOffset: recovered.walOffset, walSize: recovered.walSize, recovery: report)
        // An older format's WAL is replaced before anything is logged: records of this format must not follow it.
        let needsCheckpoint = recovered.replayed > 0 || report.discardedWALBytes > 0 || report.ignoredStaleWAL
            || recovered.state.walVersion < WriteAheadLog.formatVersion
        options.observer?(.recovered(report))
        if needsCheckpoint && !options.readOnly {
            Failpoint.hit(Failpoint.duringRecovery)
            do {
                try store.checkpointLocked()
            } catch {
                store.pipeline.requestStop()
                throw error
            }
        }
        return store
    }

    /// What reading the free list and the WAL of a meta page found.
    struct Recovered {
        var state: WriterState
        var report: RecoveryReport
        /// The WAL records replayed into `state`.
        var transactions: [LoggedTransaction]
        var replayed: Int { transactions.count }
        var walOffset: UInt64
        var walSize: UInt64
    }

    /// Reads a read-only snapshot of `directory`: the newest meta page, pinned (ReaderPins.swift), its free list and
    /// its WAL generation's records in `wal`. Its cache counts into `cacheCounts`.
    /// - Throws: `snapshotExpired` if a writer's checkpoint overtook the read (the caller starts again).
    static func readSnapshot(
        directory: String, options: PageFileOptions, wal: SystemFile, cacheCounts: PageCache.Counts = PageCache.Counts()
    ) throws -> Recovered {
        let data = try SystemFile.open(directory + "/data", create: false, readOnly: true, faults: options.faults)
        let meta = try readMeta(data, options: options, walPath: directory + "/wal")
        // The pin comes before the check below that finds meta still the newest (see ReaderPins.swift).
        let snapshot = SnapshotGuard(file: data, meta: meta, pin: ReaderPin.take(directory: directory, epoch: meta.epoch))
        let cache = PageCache(
            capacity: PageCache.capacity(megabytes: options.cacheSizeMB, pageSize: meta.pageSize), counts: cacheCounts)
        let reader = PageReader(file: data, pageSize: meta.pageSize, cache: cache, snapshot: snapshot)
        // A snapshot's free list and WAL bytes belong to its meta only if no newer meta was written before they were
        // read, so the guard checks that once it holds them, before they are decoded and replayed: the long part of
        // an open is not left for a writer's checkpoint to overtake. Pages the replay reads are guarded one by one
        // (PageReader). Any failure (a header of the next generation, pages reused under it) is first put to the
        // guard.
        let recovered = try snapshot.validatedCurrent(checking: { check in
            try recover(meta, reader: reader, wal: wal, afterReading: check)
        })
        snapshot.freePages = recovered.state.freeList.all.count
        return recovered
    }

    /// Reads `meta`'s free list and the WAL records after its checkpoint, and replays them in memory. A writer's open
    /// (`checkFreeList`) first refuses a free list naming a page of the tree, which its checkpoints would overwrite.
    /// `afterReading` runs once the free list and the WAL's bytes are read, before anything is decoded.
    private static func recover(
        _ meta: MetaPage, reader: PageReader, wal: SystemFile, checkFreeList: Bool = false,
        afterReading: () throws -> Void = {}
    ) throws -> Recovered {
        let dataPath = reader.path
        let walPath = wal.path
        let (free, list) = try FreeList.read(head: meta.freeListHead, reader: reader, pageCount: meta.pageCount)
        if checkFreeList { try FreeList.checkAgainstTree(free: free, list: list, root: meta.root, reader: reader) }
        let walBytes = try readWAL(wal)
        try afterReading()
        var report = RecoveryReport(created: false, replayedTransactions: 0, discardedWALBytes: 0, ignoredStaleWAL: false)
        var transactions: [LoggedTransaction] = []
        var walOffset = UInt64(walBytes.count)
        let header: (salt: UInt64, firstLSN: UInt64, version: UInt32)?
        switch WriteAheadLog.decodeHeader(walBytes) {
        case .valid(let salt, let firstLSN, let version): header = (salt, firstLSN, version)
        case .damaged: header = nil
        case .newerVersion(let version):
            // Its records may be commits a newer build acknowledged: treating the WAL as stale would drop them.
            throw EventStoreError.incompatibleStore(
                path: walPath,
                reason: "WAL format version \(version) is newer than this build's \(WriteAheadLog.formatVersion)")
        }
        let firstLSN = meta.checkpointLSN + 1
        // A WAL generation is started only after its checkpoint's meta is durable. A whole header that starts past
        // this meta's checkpoint was started by a newer meta, which must have been committed and is now unreadable:
        // falling back to this one would silently drop every commit since.
        if let header, header.firstLSN > firstLSN {
            throw EventStoreError.corrupted(
                location: "\(dataPath) meta pages",
                detail: "the newest meta page is damaged: the WAL continues a checkpoint at LSN \(header.firstLSN - 1), "
                    + "newer than the readable meta's \(meta.checkpointLSN); restore the store from a backup")
        }
        // The current generation's records: behind its own header, or behind a damaged header when records pass the
        // CRC with this meta's salt and carry the LSNs after its checkpoint (only the current generation's can), so
        // they are not dropped with the header. Anything else is a stale generation, already in the tree.
        var scan: WriteAheadLog.Scan?
        var walVersion = WriteAheadLog.formatVersion
        // Every record of the generation carries revision = LSN + this (each record steps both by one).
        let lead = meta.revision &- meta.checkpointLSN
        if let header {
            if header.salt == meta.walSalt, header.firstLSN == firstLSN {
                scan = WriteAheadLog.scan(
                    walBytes, salt: header.salt, firstLSN: firstLSN, version: header.version, revisionLead: lead)
                walVersion = header.version
            } else if header.firstLSN == firstLSN {
                try checkNotLost(header, walBytes, meta: meta, lead: lead, dataPath: dataPath)
            }
        } else {
            // Behind a damaged header the version is unknown: the current format first, then the older one.
            for version in [WriteAheadLog.formatVersion, WriteAheadLog.oldestReadableVersion] {
                let found = WriteAheadLog.scan(
                    walBytes, salt: meta.walSalt, firstLSN: firstLSN, version: version, revisionLead: lead)
                if !found.transactions.isEmpty || found.proofOfDamage != nil {
                    scan = found
                    walVersion = version
                    break
                }
            }
        }
        if let scan {
            if let proof = scan.proofOfDamage {
                throw walDamage(at: scan.validEnd, lsn: firstLSN + UInt64(scan.transactions.count), proof: proof, walPath)
            }
            transactions = scan.transactions
            report.discardedWALBytes = scan.discarded
            walOffset = UInt64(scan.validEnd)
        } else {
            report.ignoredStaleWAL = true
            walOffset = UInt64(WriteAheadLog.headerSize)
        }
        report.replayedTransactions = transactions.count

        var state = WriterState(
            root: meta.root == 0 ? nil : .page(meta.root), reader: reader, revision: meta.revision, lsn: meta.checkpointLSN,
            keyCount: meta.keyCount, freeList: FreeList(freedAt: meta.epoch, pages: free, listPages: list), meta: meta)
        state.walScanEnd = walOffset
        state.walVersion = walVersion
        try replay(transactions, into: &state, reader: reader, walPath: walPath)
        return Recovered(
            state: state, report: report, transactions: transactions, walOffset: walOffset,
            walSize: try wal.size())
    }

    /// The WAL's bytes up to the end of its data: a sparse tail (a file extended by `truncate`, or by a copy that
    /// preallocates) reads as zeros, which the scan would take for preallocated space anyway, so it is not read.
    /// (What the writer writes is not bounded by the checkpoint threshold: commits queued behind one sync are
    /// written as one group before a checkpoint can run, so no size is refused here.)
    private static func readWAL(_ wal: SystemFile) throws -> [UInt8] {
        try wal.read(count: Int(try wal.dataEnd()), at: 0)
    }

    /// Throws `corrupted` if the whole WAL `header`, which starts where `meta`'s checkpoint ends but with another salt,
    /// begins a generation that logged records. A checkpoint that changes nothing (close, checkpoint(), backup())
    /// writes a meta with the same checkpoint LSN and a new salt, so when that newest meta is damaged, the older slot
    /// has the same LSN: the WAL then looks like a stale generation, and its acknowledged commits would be dropped.
    /// A stale header that starts there began a generation in which nothing was logged (its meta would have a later
    /// LSN otherwise), so its salt finds no record.
    private static func checkNotLost(
        _ header: (salt: UInt64, firstLSN: UInt64, version: UInt32), _ walBytes: [UInt8], meta: MetaPage,
        lead: UInt64, dataPath: String
    ) throws {
        let other = WriteAheadLog.scan(
            walBytes, salt: header.salt, firstLSN: header.firstLSN, version: header.version, revisionLead: lead)
        guard !other.transactions.isEmpty || other.proofOfDamage != nil else { return }
        throw EventStoreError.corrupted(
            location: "\(dataPath) meta pages",
            detail: "the newest meta page is damaged: the WAL holds commits from LSN \(header.firstLSN) on, logged "
                + "after a checkpoint at LSN \(meta.checkpointLSN) whose meta page is unreadable")
    }

    /// The error for a damaged WAL record that a later record proves was durable: cutting the log there would drop
    /// acknowledged commits, so the open fails and changes nothing.
    static func walDamage(at offset: Int, lsn: UInt64, proof: WriteAheadLog.ProofOfDurability, _ walPath: String)
        -> EventStoreError
    {
        let finding =
            switch proof {
            case .found(let proofLSN, let proofOffset):
                "the record is damaged, but the record with LSN \(proofLSN) at offset \(proofOffset) was logged after "
                    + "it was durable, so the commits from LSN \(lsn) on were acknowledged"
            case .undecided:
                "the record is damaged, and the bytes after it hold too many record-like frames to tell whether it "
                    + "was durable (acknowledged commits may follow)"
            }
        return EventStoreError.corrupted(
            location: "\(walPath) offset \(offset) (record LSN \(lsn))",
            detail: finding + "; restore the store from a backup (moving the wal file away opens the store at its "
                + "last checkpoint in a writable open, without the commits after it)")
    }

    /// The size of the WAL at `walPath` if it is longer than a header: found without its data file, its records may
    /// be the only copy of the commits since a checkpoint, so nothing may be created over it. (Creating a store, or
    /// a backup of a writable store, writes the header alone before the data file appears, so one that crashed part
    /// way leaves no more than that, and is taken over.)
    static func orphanWALSize(_ walPath: String) -> Int64? {
        var status = stat()
        guard stat(walPath, &status) == 0, status.st_size > WriteAheadLog.headerSize else { return nil }
        return Int64(status.st_size)
    }

    /// Writes an empty store's WAL and data file (meta slot 0 valid, slot 1 empty) and makes them durable; the data
    /// file appears (by rename) only once both are complete, so an existing `data` is never a half-created store.
    private static func createDataFile(_ path: String, directory: String, options: PageFileOptions) throws {
        let temporary = path + ".creating"
        let file = try SystemFile.create(temporary)
        let meta = MetaPage(
            epoch: 0, pageSize: options.pageSize, root: 0, freeListHead: 0, pageCount: 2, checkpointLSN: 0,
            revision: 0, walSalt: UInt64.random(in: 1...UInt64.max), keyCount: 0)
        var initial = meta.encoded()
        initial.append(contentsOf: [UInt8](repeating: 0, count: options.pageSize))
        try file.write(initial, at: 0)
        try file.sync()
        let wal = try SystemFile.create(directory + "/wal")
        try wal.write(WriteAheadLog.header(salt: meta.walSalt, firstLSN: 1), at: 0)
        try wal.sync()
        try Directory.rename(temporary, to: path)
        try Directory.sync(directory)
    }

    /// The page size of the store in `directory`, read from its data file without opening the store or taking its
    /// lock, so that a tool can open a store created with any page size (``PageFileOptions/pageSize`` must match).
    /// - Throws: `incompatibleStore` if there is no data file or it is not a page file; `corrupted` naming pages 0
    ///   and 1 if it is a page file whose meta pages both lost their header; `ioFailure` if it cannot be read.
    public static func pageSize(ofStoreIn directory: String) throws -> Int {
        let path = directory + "/data"
        guard SystemFile.exists(path) else {
            throw EventStoreError.incompatibleStore(path: directory, reason: "no store here (no data file)")
        }
        return try declaredPageSize(
            SystemFile.open(path, create: false, readOnly: true, faults: nil), walPath: directory + "/wal")
    }

    /// The page sizes a page file may use, largest first.
    private static let pageSizes = [65536, 32768, 16384, 8192, 4096]

    /// The page size a data file's meta pages declare.
    /// - Throws: `corrupted` naming pages 0 and 1 if neither declares one but the file is still recognisably a page
    ///   file (see `pageFileEvidence`): damage there must not read as "not a store"; otherwise `incompatibleStore`.
    private static func declaredPageSize(_ data: SystemFile, walPath: String) throws -> Int {
        // A slot is believed only when its whole page is sealed at the size it declares: slot 1 sits one page
        // further, wherever the page size puts it, and at a wrong size that offset is a tree or overflow page whose
        // bytes after its header are a user's value, which may hold anything, a meta page's header included.
        let declared = MetaPage.declaredPageSize(try data.read(count: MetaPage.probeSize, at: 0))
        if let size = declared, try isSealedMeta(data, slot: 0, pageSize: size) { return size }
        for size in pageSizes where try isSealedMeta(data, slot: 1, pageSize: size) { return size }
        // Slot 0's header without its seal (a torn or damaged meta, and no valid slot 1): readMeta reports it.
        if let size = declared { return size }
        if let evidence = try pageFileEvidence(data, walPath: walPath) {
            throw EventStoreError.corrupted(
                location: "\(data.path) pages 0 and 1",
                detail: "neither meta page holds the page-file magic and a page size, yet \(evidence)")
        }
        throw EventStoreError.incompatibleStore(path: data.path, reason: "not an EventStore page file")
    }

    /// Whether page `slot` of `data`, read at `pageSize`, is a whole meta page (checksum, number, type) declaring
    /// that page size.
    private static func isSealedMeta(_ data: SystemFile, slot: UInt64, pageSize: Int) throws -> Bool {
        let page = try data.read(count: pageSize, at: slot * UInt64(pageSize))
        return MetaPage.sealedVersion(page, slot: slot, pageSize: pageSize, path: data.path) != nil
            && MetaPage.declaredPageSize(page) == pageSize
    }

    /// What shows that `data`, whose meta pages declare nothing, is an EventStore page file all the same: a page 2
    /// whose checksum and number hold at one of the page sizes, or an EventStore WAL beside it. Nil if neither does.
    private static func pageFileEvidence(_ data: SystemFile, walPath: String) throws -> String? {
        for size in pageSizes {
            let page = try data.read(count: size, at: UInt64(2 * size))
            if (try? Page.check(page, number: 2, type: nil, size: size, path: data.path)) != nil {
                return "page 2 is a whole \(size)-byte page of a page file"
            }
        }
        // A wal that cannot be opened or read is no evidence either way: the open reports the data file as foreign.
        guard let wal = try? SystemFile.open(walPath, create: false, readOnly: true, faults: nil),
            let prefix = try? wal.read(count: 7, at: 0), prefix.elementsEqual(WriteAheadLog.magic[0..<7])
        else { return nil }
        return "its directory holds an EventStore wal"
    }

    /// The newest valid meta page of `data`, after checking format, version and page size.
    private static func readMeta(_ data: SystemFile, options: PageFileOptions, walPath: String) throws -> MetaPage {
        let path = data.path
        let pageSize = try declaredPageSize(data, walPath: walPath)
        let pages = try (0..<UInt64(2)).map { try data.read(count: pageSize, at: $0 * UInt64(pageSize)) }
        // Either slot may hold the newest meta, so a newer format version in either one refuses the store: opening
        // it at the other slot's older state would rewind it, and the recovery checkpoint would overwrite the newer
        // meta. Version 0, which no build writes, is refused the same way rather than read as version 1. Only a slot
        // whose checksum holds is believed: one flipped bit must not make a store unopenable.
        for (slot, page) in pages.enumerated() {
            guard let version = MetaPage.sealedVersion(page, slot: UInt64(slot), pageSize: pageSize, path: path)
            else { continue }
            if version > MetaPage.formatVersion {
                throw EventStoreError.incompatibleStore(
                    path: path, reason: "format version \(version) is newer than this build's \(MetaPage.formatVersion)")
            }
            if version == 0 {
                throw EventStoreError.incompatibleStore(
                    path: path, reason: "meta page \(slot) declares format version 0, which no build writes")
            }
        }
        // Damage first: a page size read from slot 0 when neither slot is sealed is no claim to refuse a store on.
        let slots = pages.enumerated().compactMap { slot, page in
            MetaPage.decode(page, slot: UInt64(slot), pageSize: pageSize, path: path)
        }
        guard let newest = slots.max(by: { $0.epoch < $1.epoch }) else {
            throw EventStoreError.corrupted(location: "\(path) pages 0 and 1", detail: "both meta pages are damaged")
        }
        guard pageSize == options.pageSize else {
            throw EventStoreError.incompatibleStore(
                path: path, reason: "the store uses \(pageSize)-byte pages but \(options.pageSize) were requested")
        }
        try checkBounds(newest, file: data)
        return newest
    }

    /// Throws `corrupted` unless the pages `meta` names lie in the file (a checkpoint writes every page below its
    /// page count, and syncs them, before the meta that counts them) and its counters are possible: below the
    /// counter ceiling, and no more keys than its pages can hold. So a checksum that holds over impossible numbers
    /// is refused here, before anything walks, allocates or counts on by them.
    private static func checkBounds(_ meta: MetaPage, file: SystemFile) throws {
        let pages = try file.size() / UInt64(meta.pageSize)
        let location = "\(file.path) page \(meta.epoch % 2)"
        guard meta.pageCount >= 2, meta.pageCount <= pages else {
            throw EventStoreError.corrupted(
                location: location,
                detail: "the meta page counts \(meta.pageCount) pages, but the file holds \(pages)")
        }
        for (name, page) in [("root", meta.root), ("free-list head", meta.freeListHead)] where page != 0 {
            guard page >= 2, page < meta.pageCount else {
                throw EventStoreError.corrupted(
                    location: location, detail: "the meta page's \(name) is page \(page), outside the store")
            }
        }
        let counters = [
            ("epoch", meta.epoch), ("checkpoint LSN", meta.checkpointLSN), ("revision", meta.revision),
            ("key count", meta.keyCount),
        ]
        for (name, value) in counters where value >= MetaPage.counterCeiling {
            throw EventStoreError.corrupted(location: location, detail: "the meta page's \(name) \(value) is impossible")
        }
        // Every entry takes at least its fixed fields in a leaf page.
        let perPage = UInt64((meta.pageSize - Page.headerSize) / LeafEntry.overhead)
        guard meta.keyCount <= (meta.pageCount - 2) * perPage else {
            throw EventStoreError.corrupted(
                location: location,
                detail: "the meta page counts \(meta.keyCount) keys, more than its \(meta.pageCount) pages can hold")
        }
    }

    /// Re-applies logged transactions (records of the WAL at `walPath`) to the writer's tree.
    /// - Throws: `corrupted` for a record the writer could not have logged (see `checkLogged`), before applying it.
    static func replay(
        _ transactions: [LoggedTransaction], into state: inout WriterState, reader: PageReader, walPath: String
    ) throws {
        let location = state.metaLocation
        for transaction in transactions {
            try checkLogged(transaction, after: state, walPath: walPath)
            state.transaction += 1
            var tree = TreeWriter(reader: reader, transaction: state.transaction, pageCount: state.meta.pageCount)
            var root = state.root
            for write in transaction.writes {
                switch write {
                case .put(let key, let value, let version, let expiresAt):
                    let put = PutValue(
                        bytes: value, modRevision: transaction.revision, expiresAt: expiresAt, version: version,
                        liveness: Liveness(now: 0, openRevision: 0))
                    if try tree.put(key, put, root: &root).old == nil {
                        state.keyCount = try MetaPage.counterStep(state.keyCount, by: 1, "key count", location: location)
                    }
                case .delete(let key):
                    if try tree.delete(key, root: &root) != nil {
                        state.keyCount = try MetaPage.counterStep(state.keyCount, by: -1, "key count", location: location)
                    }
                }
            }
            state.root = root
            state.revision = transaction.revision
            state.lsn = transaction.lsn
            state.freedSinceCheckpoint.append(contentsOf: tree.freed)
        }
    }

    /// Throws `corrupted` naming the record unless `transaction` is one the writer could have logged after `state`:
    /// the next revision, keys and values within the limits a commit is held to, versions in 1 ..< the counter
    /// ceiling. Its checksum held, so the commits after it may have been acknowledged: it is refused, never cut.
    private static func checkLogged(_ transaction: LoggedTransaction, after state: WriterState, walPath: String) throws {
        func refuse(_ detail: String) -> EventStoreError {
            EventStoreError.corrupted(location: "\(walPath) record LSN \(transaction.lsn)", detail: detail)
        }
        guard state.revision < MetaPage.counterCeiling - 1, transaction.revision == state.revision + 1 else {
            throw refuse("revision \(transaction.revision) does not follow \(state.revision)")
        }
        let keyLimit = maximumKeyLength(pageSize: state.reader.pageSize)
        for (index, write) in transaction.writes.enumerated() {
            guard write.key.count <= keyLimit else {
                throw refuse("write \(index) has a \(write.key.count)-byte key, over the \(keyLimit)-byte limit")
            }
            guard case .put(_, let value, let version, _) = write else { continue }
            guard value.count <= maximumValueLength else {
                throw refuse("write \(index) has a \(value.count)-byte value, over the limit")
            }
            guard version >= 1, version < MetaPage.counterCeiling else {
                throw refuse("write \(index) has the impossible version \(version)")
            }
        }
    }
}
