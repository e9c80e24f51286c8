// PageFileKeyValueStore: the key-value contract on the page-file engine, the default embedded backend.
//
// How a commit flows (see also GroupCommit.swift, Checkpoint.swift, Recovery.swift):
// 1. Under the writer lock, the transaction's conditions are checked against the writer's tree (the latest state,
//    including commits not yet durable), its writes are applied copy-on-write (in place for nodes that commits of
//    the same still-open group created: they are published together, see GroupCommit.swift), and its WAL record
//    is queued.
// 2. The writer lock is released, and the committer waits for the flusher thread to make its record durable
//    together with every other record queued meanwhile (group commit). Only then is it published to readers and
//    acknowledged.
// 3. Once the WAL passes the checkpoint threshold (and on close), a checkpoint writes the dirty nodes to free pages,
//    flips the meta page and starts a new WAL generation.
//
// Invariants:
// - One writer at a time (WriterLock); `WriterBox.state` is touched only while holding it.
// - Readers take the published snapshot (PublishedState) and never block on the writer or on fsync.
// - After any write or fsync failure (or damage found part way through an apply) the store refuses writes
//   (`storeFailed`) until reopened; reads go on serving the last published state. Each commit in flight gets its own
//   record's outcome (see GroupCommit.swift): written ones are still synced, never-written ones get `storeFailed`.

import EventStore
import Foundation
import Synchronization

/// The writer's view: the latest tree, including commits not yet durable.
struct WriterState {
    var root: ChildRef?
    /// The page file the tree lives in.
    var reader: PageReader
    var revision: UInt64
    var lsn: UInt64
    var keyCount: UInt64
    /// The id owning the nodes the writer may change in place: the last transaction's, or its open group's.
    var transaction: UInt64 = 0
    /// The open group (GroupCommit.beginApply) `transaction` was last used in; nil when no group is open.
    var group: UInt64?
    var freedSinceCheckpoint: [UInt64] = []
    var freeList: FreeList
    var meta: MetaPage
    /// A read-only store's: the WAL offset after the last record it has replayed, where refresh() reads on.
    var walScanEnd: UInt64 = 0
    /// The format version of the WAL generation this state continues (an older one only until the first checkpoint).
    var walVersion = WriteAheadLog.formatVersion

    /// The meta page this state continues, for errors about its counters.
    var metaLocation: String { "\(reader.path) page \(meta.epoch % 2)" }
}

/// Holds the writer state.
final class WriterBox: @unchecked Sendable {
    // @unchecked: `state` is read and written only by the holder of PageFileKeyValueStore.writerLock (and by open(),
    // before the store is shared).
    var state: WriterState

    init(_ state: WriterState) { self.state = state }
}

/// An ordered, durable key-value store in one directory: a B+tree page file with a write-ahead log.
///
/// Open one with ``open(directory:options:)``. One writer at a time may hold a directory; read-only stores open
/// beside it (``PageFileOptions/readOnly``).
public final class PageFileKeyValueStore: KeyValueStore {
    /// The store's directory.
    public let directory: String
    /// The options it was opened with.
    public let options: PageFileOptions

    /// The writer's lock on the directory; nil for a read-only store, which takes none.
    let lock: DirectoryLock?
    let wal: SystemFile
    /// Bytes per page of the store.
    public let pageSize: Int
    let writer: WriterBox
    let writerLock = WriterLock()
    let published: PublishedState
    let pipeline: GroupCommit
    /// Nodes changed since the last checkpoint (an upper bound of the dirty nodes held in memory).
    let dirtyNodes = Atomic<Int>(0)
    /// The counters behind ``metrics()`` and the observer hook.
    let counters: StoreMetrics
    /// Facts recovery established on open.
    public let recovery: RecoveryReport
    /// The revision this writable open began at, once recovery replayed the WAL (0 when read-only): TTL entries
    /// written at or before it read as expired (see Liveness).
    let openRevision: UInt64

    /// Longest key accepted, in bytes.
    public var maximumKeyLength: Int { Self.maximumKeyLength(pageSize: pageSize) }
    /// Longest key accepted with `pageSize`-byte pages: an entry with it and an overflow reference takes a quarter
    /// of the page body.
    static func maximumKeyLength(pageSize: Int) -> Int { (pageSize - Page.headerSize) / 4 - LeafEntry.overhead - 8 }
    /// Largest value accepted, in bytes (room for a 16 MiB event plus its record).
    public static let maximumValueLength = 32 * 1024 * 1024
    /// Largest transaction accepted, in bytes of keys and values.
    public static let maximumTransactionBytes = 256 * 1024 * 1024

    init(
        directory: String, options: PageFileOptions, lock: DirectoryLock?, wal: SystemFile, writer: WriterState,
        walOffset: UInt64, walSize: UInt64, recovery: RecoveryReport
    ) {
        self.directory = directory
        self.options = options
        self.lock = lock
        self.wal = wal
        pageSize = writer.reader.pageSize
        self.writer = WriterBox(writer)
        self.recovery = recovery
        openRevision = options.readOnly ? 0 : writer.revision
        let published = PublishedState(
            root: writer.root, reader: writer.reader, revision: writer.revision, keyCount: writer.keyCount,
            epoch: writer.meta.epoch, walEnd: options.readOnly ? walOffset : nil, historyLimit: options.historyLimit)
        self.published = published
        let counters = StoreMetrics(observer: options.observer)
        self.counters = counters
        pipeline = GroupCommit(metrics: counters,
            wal: wal, walOffset: walOffset, allocatedEnd: walSize, durableLSN: writer.lsn, durability: options.durability,
            publish: { published.publish($0) })
    }

    /// A store dropped without ``close()`` (its owner threw or was cancelled first) is not checkpointed: the WAL keeps
    /// its records for the next open, as after a crash. Its flusher thread is told to end, so that the thread, the WAL
    /// and data file descriptors and the page cache, which the thread holds through the pipeline, are released with it.
    /// (No committer can be waiting on the pipeline: each one holds the store.)
    deinit { pipeline.requestStop() }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000_000) }

    /// How TTL entries are judged now: by their expiry, and (writable) by whether this open wrote them.
    func liveness() -> Liveness { Liveness(now: Self.now(), openRevision: openRevision) }

    // MARK: Reads

    /// The entry under `key` in the last durable state, or nil if absent or expired.
    /// - Throws: `corrupted` naming the page if a page on the way fails its checks.
    public func get(_ key: Key) async throws -> KeyValueEntry? {
        let liveness = liveness()
        return try published.read { root, reader in try liveEntry(key, root: root, reader: reader, liveness: liveness) }
    }

    /// The entries under `keys`, in order (nil where absent), all from one durable snapshot.
    public func get(_ keys: [Key]) async throws -> [KeyValueEntry?] {
        let liveness = liveness()
        return try published.read { root, reader in
            try zip(keys, try BTree.findAll(keys, root: root, reader: reader)).map { key, entry in
                guard let entry, entry.isLive(liveness) else { return nil }
                return try materialize(key, entry, reader: reader)
            }
        }
    }

    /// Up to `limit` live entries in `range`, in `direction` order, from one durable snapshot.
    public func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws -> [KeyValueEntry] {
        let liveness = liveness()
        return try published.read { root, reader in
            var result: [KeyValueEntry] = []
            guard limit > 0 else { return result }
            result.reserveCapacity(min(limit, 4_096))
            try BTree.scan(range, direction: direction, root: root, reader: reader) { node, index in
                let header = node.header(at: index)
                if header.isLive(liveness) {
                    result.append(
                        KeyValueEntry(
                            key: node.key(at: index), value: try reader.value(node.storedValue(header)),
                            version: header.version, modRevision: header.modRevision))
                }
                return result.count < limit
            }
            return result
        }
    }

    /// Lends live entries in `range` straight from the cached pages of one durable snapshot; see
    /// ``KeyValueStore/scan(_:direction:limit:visiting:)``.
    public func scan(
        _ range: KeyRange, direction: ScanDirection, limit: Int, visiting visit: (BorrowedEntry) throws -> Bool
    ) async throws -> Int {
        let liveness = liveness()
        return try published.read { root, reader in
            var lent = 0
            guard limit > 0 else { return 0 }
            try BTree.scanLeaves(range, direction: direction, root: root, reader: reader) { node, indices in
                // One borrow of the leaf's bytes for all its entries: this loop runs once per entry of a long read.
                try node.withLeafBytes { body, offsets in
                    func lendEntry(_ index: Int) throws -> Bool {
                        let start = Int(offsets[index])
                        let header = LeafLayout.header(body, at: start)
                        guard header.isLive(liveness) else { return true }
                        lent += 1
                        return try lend(node, body, start, header, reader: reader, to: visit) && lent < limit
                    }
                    if direction == .forward {
                        for index in indices where !(try lendEntry(index)) { return false }
                    } else {
                        for index in indices.reversed() where !(try lendEntry(index)) { return false }
                    }
                    return true
                }
            }
            return lent
        }
    }

    /// Lends the entries under `keys` straight from the cached pages of one durable snapshot; see
    /// ``KeyValueStore/get(_:visiting:)``.
    public func get(_ keys: [Key], visiting visit: (Int, BorrowedEntry?) throws -> Void) async throws {
        let liveness = liveness()
        try published.read { root, reader in
            try BTree.findAll(keys, root: root, reader: reader) { index, node, slot in
                guard let node, case let header = node.header(at: slot), header.isLive(liveness) else {
                    try visit(index, nil)
                    return
                }
                _ = try node.withLeafBytes { body, offsets in
                    try lend(node, body, Int(offsets[slot]), header, reader: reader) { entry in
                        try visit(index, entry)
                        return true
                    }
                }
            }
        }
    }

    /// Lends the leaf entry of `node` that starts at `start` of its borrowed `body`, with fields `header`: inline
    /// values in place, others from a copy that lives for the call.
    @inline(__always)
    private func lend(
        _ node: Node, _ body: UnsafeRawBufferPointer, _ start: Int, _ header: EntryHeader, reader: PageReader,
        to visit: (BorrowedEntry) throws -> Bool
    ) throws -> Bool {
        let key = LeafLayout.key(body, at: start)
        guard header.flags == 0 else {
            let bytes = try reader.value(node.storedValue(header))
            return try bytes.withUnsafeBytes { value in
                try visit(BorrowedEntry(key: key, value: value, version: header.version, modRevision: header.modRevision))
            }
        }
        return try visit(
            BorrowedEntry(
                key: key,
                value: UnsafeRawBufferPointer(rebasing: body[header.valueOffset..<(header.valueOffset + header.valueLength)]),
                version: header.version, modRevision: header.modRevision))
    }

    /// The revision of the last durable commit (0 for an empty store).
    public func currentRevision() async throws -> UInt64 {
        try published.read { _, _ in published.state.withLock { $0.revision } }
    }

    /// Changes under `prefix` after `revision` (from the in-memory history kept since open), then live as commits
    /// become durable; see ``KeyValueStore/changes(after:prefix:)``.
    public func changes(after revision: UInt64, prefix: Key) -> AsyncThrowingStream<KeyValueChange, any Error> {
        published.changes(after: revision, prefix: prefix, bufferLimit: options.watchBufferLimit)
    }

    func liveEntry(_ key: Key, root: ChildRef?, reader: PageReader, liveness: Liveness) throws -> KeyValueEntry? {
        guard let entry = try BTree.find(key, root: root, reader: reader), entry.isLive(liveness) else { return nil }
        return try materialize(key, entry, reader: reader)
    }

    private func materialize(_ key: Key, _ entry: LeafEntry, reader: PageReader) throws -> KeyValueEntry {
        KeyValueEntry(
            key: key, value: try reader.value(entry.value), version: entry.version, modRevision: entry.modRevision)
    }

    // MARK: Writes

    /// Checks and applies `transaction` atomically and returns its revision once it is durable (per
    /// ``PageFileOptions/durability``).
    /// - Throws: `conditionFailed` (nothing written); `tooLarge`/`transactionTooLarge` for oversized input;
    ///   `ioFailure` if its WAL write or fdatasync failed: the outcome is unknown (the record may be in the store
    ///   after reopening), and the store refuses writes from then on with `storeFailed`, which means nothing was
    ///   written.
    public func commit(_ transaction: KeyValueTransaction) async throws -> UInt64 {
        let outcome = try await writerLock.withLockUnlessCancelled { () -> WriterOutcome<Void> in
            do {
                return .committed(try apply(transaction), ())
            } catch {
                return .failed(error, observed: writer.state.lsn)
            }
        }
        return try await settle(outcome).revision ?? 0
    }

    /// Runs `body` under the writer lock against the latest state (including commits not yet durable), then
    /// commits what it returns; concurrent updates never conflict and share group commits. An update that writes
    /// nothing, or whose `body` throws, returns or throws only once the commits it saw are durable; if one of them
    /// fails instead, it throws that commit's failure (`ioFailure` or `storeFailed`), since its answer rests on state
    /// that may be lost. Errors about the request or the store itself (bad input, a closed store) are kept.
    public func update<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value> {
        let outcome = try await writerLock.withLockUnlessCancelled { () -> WriterOutcome<Value> in
            do {
                try checkWritable()
                let (transaction, value) = try await body(WriterReadContext(store: self))
                if transaction.writes.isEmpty { return .readOnly(value, observed: writer.state.lsn) }
                return .committed(try apply(transaction), value)
            } catch {
                return .failed(error, observed: writer.state.lsn)
            }
        }
        return try await settle(outcome)
    }

    /// What a writer-lock section ended with, and the latest commit it could have observed.
    private enum WriterOutcome<Value: Sendable>: Sendable {
        case committed(UInt64, Value)
        case readOnly(Value, observed: UInt64)
        case failed(any Error, observed: UInt64)
    }

    /// Finishes a writer section outside the lock. A commit waits until it is durable. A section that wrote nothing
    /// or failed (a failed condition, a wrong expected version) returns only once every commit it could have
    /// observed is durable and visible to reads: otherwise a caller told "the stream is at version 3" could reload
    /// and still read version 2 until the group fsync completes, and spin through its retries.
    ///
    /// If a commit such a section observed then fails, the section's answer rests on state that may be lost, so the
    /// caller gets that commit's failure instead (`ioFailure`: outcome unknown, or `storeFailed`); an error about the
    /// request or the store itself (bad input, a closed or failed store) keeps its answer. An idempotent
    /// re-send that found its events in a commit still queued must not be acknowledged when that commit is never
    /// written; nor may a `duplicateEventID` or `wrongExpectedVersion` describe a commit that never became durable.
    private func settle<Value: Sendable>(_ outcome: WriterOutcome<Value>) async throws -> KeyValueUpdateResult<Value> {
        switch outcome {
        case .committed(let lsn, let value):
            return KeyValueUpdateResult(value: value, revision: try await finish(lsn))
        case .readOnly(let value, let observed):
            try await pipeline.waitUntilDurable(observed)
            return KeyValueUpdateResult(value: value, revision: nil)
        case .failed(let error, let observed):
            guard Self.restsOnObservedState(error) else { throw error }
            try await pipeline.waitUntilDurable(observed)
            throw error
        }
    }

    /// Whether a failed section's error may describe the state it observed (a failed condition, a wrong expected
    /// version, a duplicate id, or any error of an update's body), rather than the request itself or the store's
    /// own condition: bad input, a closed, read-only or failed store, cancellation, damage or an I/O error the
    /// section met. Only the former is replaced by the failure of a commit it observed.
    private static func restsOnObservedState(_ error: any Error) -> Bool {
        switch error {
        case is CancellationError: false
        case let error as KeyValueStoreError:
            switch error {
            case .closed, .tooLarge, .transactionTooLarge: false
            default: true
            }
        case let error as EventStoreError:
            switch error {
            case .invalidStreamName, .invalidEventType, .eventTooLarge, .invalidArgument, .codingFailed, .corrupted,
                .ioFailure, .storeFailed, .storeClosed, .storeLocked, .snapshotExpired, .incompatibleStore, .backend:
                false
            default: true
            }
        default: true
        }
    }

    /// Waits until the commit with `lsn` is durable, then checkpoints if the WAL is over its threshold.
    private func finish(_ lsn: UInt64) async throws -> UInt64 {
        try await pipeline.waitUntilDurable(lsn)
        if checkpointDue {
            // The commit is already durable; a failing checkpoint puts the store into its failed state instead.
            try? await writerLock.withLock {
                guard checkpointDue else { return }
                try checkWritable()
                try await Offload.run { try self.checkpointLocked() }
            }
        }
        return lsn
    }

    /// Dirty nodes may take at most a quarter of the page cache's budget (at least 8 MiB) before a checkpoint writes
    /// them out, so memory stays bounded however the keys are spread; the WAL threshold bounds recovery time.
    private var dirtyNodeLimit: Int { max(8 << 20, options.cacheSizeMB << 18) / pageSize }

    private var checkpointDue: Bool {
        pipeline.walBytes >= UInt64(options.checkpointThresholdMB) << 20
            || dirtyNodes.load(ordering: .relaxed) >= dirtyNodeLimit
    }

    func checkWritable() throws {
        if published.state.withLock({ $0.closed }) { throw KeyValueStoreError.closed }
        if options.readOnly {
            throw EventStoreError.invalidArgument("the store in \(directory) is open read-only")
        }
        if let failure = pipeline.failed { throw EventStoreError.storeFailed(reason: failure.description) }
    }

    /// With the writer lock held: checks and applies `transaction` to the writer's tree and queues its WAL record.
    /// Returns its LSN (equal to its revision).
    ///
    /// A transaction that joins the open group of the previous one (neither flushed yet) changes that group's nodes
    /// in place instead of copying them: the group's commits are written, synced and published together, so no
    /// reader can see the difference, and the copies and frees per commit are saved. Every clean page it needs is
    /// read first, so a read error leaves the tree unchanged; should one still happen half way, the store fails
    /// (the nodes queued commits share are then half changed) and reopening recovers from the WAL. `GroupCommit.fail`
    /// then drops the group's records not written yet (their committers get `storeFailed`), still syncs a record
    /// already written (its committer gets that sync's outcome; its half-changed nodes are not published) and leaves
    /// a group the flusher took alone.
    private func apply(_ transaction: KeyValueTransaction) throws -> UInt64 {
        try checkWritable()
        try validate(transaction)
        let liveness = liveness()
        // Copy only scalars and the root: copying the whole WriterState would duplicate its arrays on every commit.
        let reader = writer.state.reader
        let base = writer.state.root
        for (index, condition) in transaction.conditions.enumerated()
        where !condition.isSatisfied(by: try liveEntry(condition.key, root: base, reader: reader, liveness: liveness)) {
            throw KeyValueStoreError.conditionFailed(index: index, condition: condition)
        }
        let group = pipeline.beginApply()
        let joins = writer.state.group == group
        let transactionID = joins ? writer.state.transaction : writer.state.transaction + 1
        var tree = TreeWriter(reader: reader, transaction: transactionID, pageCount: writer.state.meta.pageCount)
        if joins {
            // The errors a write can meet in the tree are met here, before the open group's nodes change: read
            // errors, and a put past the last version below 2^62 (only a damaged or crafted entry can be that high).
            let nearCeiling = MetaPage.counterCeiling - 1 - UInt64(transaction.writes.count)
            do {
                for write in transaction.writes {
                    let version = try tree.readAhead(write.key, root: base, liveness: liveness)
                    if let version, version >= nearCeiling {
                        try tree.checkVersionRoom(write.key, from: version, in: transaction.writes, liveness: liveness)
                    }
                }
            } catch {
                pipeline.endApply()
                throw error
            }
        }
        let lsn: UInt64
        do {
            lsn = try applyWrites(transaction.writes, to: &tree, liveness: liveness)
        } catch {
            // (A pipeline that failed already, which is why its enqueue threw, has told the observer.)
            if joins, pipeline.failed == nil {
                let failure = error as? EventStoreError ?? .storeFailed(reason: "\(error)")
                counters.notify(.failed(reason: failure.description))
                pipeline.fail(failure)
            }
            pipeline.endApply()
            throw error
        }
        writer.state.transaction = transactionID
        writer.state.group = group
        return lsn
    }

    /// With the writer lock held and an apply begun: applies `writes` through `tree`, queues the WAL record (which
    /// ends the apply) and advances the writer's state. Returns the commit's LSN.
    private func applyWrites(_ writes: [KeyWrite], to tree: inout TreeWriter, liveness: Liveness) throws
        -> UInt64
    {
        // Locations are built only for an error: this runs for every commit.
        let revision = try MetaPage.counterStep(
            writer.state.revision, by: 1, "revision", location: self.writer.state.metaLocation)
        let lsn = try MetaPage.counterStep(writer.state.lsn, by: 1, "LSN", location: self.writer.state.metaLocation)
        var keyCount = writer.state.keyCount
        var root = writer.state.root
        var payload = 0
        for index in writes.indices {
            let (keyBytes, valueBytes) = writes[index].byteCounts
            payload += valueBytes.map { keyBytes + $0 } ?? 8
        }
        var record = WriteAheadLog.RecordWriter(
            lsn: lsn, synced: pipeline.syncedLSN, revision: revision, writes: writes.count, bytes: payload)
        var changes: [KeyValueChange] = []
        changes.reserveCapacity(writes.count)
        for index in writes.indices {
            switch writes[index] {
            case .put(let key, let value, let ttl):
                let expiresAt = liveness.expiry(of: ttl)
                // One descent: the new entry's version follows from the entry it replaces.
                let (old, version) = try tree.put(
                    key, PutValue(bytes: value, modRevision: revision, expiresAt: expiresAt, version: nil, liveness: liveness),
                    root: &root)
                if old == nil {
                    keyCount = try MetaPage.counterStep(
                        keyCount, by: 1, "key count", location: self.writer.state.metaLocation)
                }
                record.put(key, value, version: version, expiresAt: expiresAt)
                changes.append(KeyValueChange(revision: revision, kind: .put, key: key))
            case .delete(let key):
                record.delete(key)
                if try tree.delete(key, root: &root) != nil {
                    keyCount = try MetaPage.counterStep(
                        keyCount, by: -1, "key count", location: self.writer.state.metaLocation)
                }
                changes.append(KeyValueChange(revision: revision, kind: .delete, key: key))
            }
        }
        let bytes = record.finish(salt: writer.state.meta.walSalt)
        try pipeline.enqueue(
            bytes, PendingCommit(lsn: lsn, revision: revision, root: root, keyCount: keyCount, changes: changes))
        writer.state.root = root
        writer.state.revision = revision
        writer.state.lsn = lsn
        writer.state.keyCount = keyCount
        writer.state.freedSinceCheckpoint.append(contentsOf: tree.freed)
        // Only nodes that were not dirty yet count: re-copying a node already changed since the checkpoint replaces
        // it, so memory grows with the set of distinct dirty nodes, not with the number of commits.
        dirtyNodes.add(tree.dirtied, ordering: .relaxed)
        return lsn
    }

    private func validate(_ transaction: KeyValueTransaction) throws {
        var bytes = 0
        var puts = 0
        // By index: `for write in` would copy each write out of the array, retaining and releasing its key and value.
        let writes = transaction.writes
        for index in writes.indices {
            let (keyBytes, valueBytes) = writes[index].byteCounts
            guard keyBytes <= maximumKeyLength else {
                throw KeyValueStoreError.tooLarge(what: "key", size: keyBytes, limit: maximumKeyLength)
            }
            bytes += keyBytes
            if let valueBytes {
                guard valueBytes <= Self.maximumValueLength else {
                    throw KeyValueStoreError.tooLarge(what: "value", size: valueBytes, limit: Self.maximumValueLength)
                }
                bytes += valueBytes
                puts += 1
            }
        }
        for condition in transaction.conditions where condition.key.count > maximumKeyLength {
            throw KeyValueStoreError.tooLarge(what: "key", size: condition.key.count, limit: maximumKeyLength)
        }
        guard bytes <= Self.maximumTransactionBytes, transaction.writes.count <= Int(UInt32.max) else {
            throw KeyValueStoreError.transactionTooLarge(
                operations: transaction.writes.count, bytes: bytes, limit: "\(Self.maximumTransactionBytes) bytes")
        }
        // Recovery takes a WAL record over `maximumPayload` for damage and cuts the log there, so no commit may log
        // one: many tiny writes stay under the byte limit above but not under this one (23 bytes of framing each).
        let logged = WriteAheadLog.payloadSize(writes: transaction.writes.count, keyAndValueBytes: bytes, puts: puts)
        guard logged <= WriteAheadLog.maximumPayload else {
            throw KeyValueStoreError.transactionTooLarge(
                operations: transaction.writes.count, bytes: logged,
                limit: "\(WriteAheadLog.maximumPayload) bytes of WAL record")
        }
    }

    // MARK: Lifecycle

    /// Writes every commit into the page file and starts a new WAL generation now.
    public func checkpoint() async throws {
        try await checkpoint(ifOver: 0)
    }

    func checkpoint(ifOver threshold: UInt64) async throws {
        try await writerLock.withLockUnlessCancelled {
            try checkWritable()
            guard pipeline.walBytes >= threshold else { return }
            try await Offload.run { try self.checkpointLocked() }
        }
    }

    /// Checkpoints (unless the store has failed), stops the WAL flusher and releases the directory lock. Later calls
    /// fail with ``KeyValueStoreError/closed``.
    public func close() async throws {
        if published.state.withLock({ $0.closed }) { return }
        var failure: (any Error)?
        await writerLock.lock()
        if !published.state.withLock({ $0.closed }) {
            if pipeline.failed == nil && !options.readOnly {
                do { try await Offload.run { try self.checkpointLocked() } } catch { failure = error }
            }
            await pipeline.stop()
            published.close()
            // Before the directory lock goes: no read of this store may see pages a later opener reuses.
            let reader = writer.state.reader
            _ = try? await Offload.run { reader.closeFileReads() }
            lock?.release()
            // A read-only store's pin: the writer may reuse the snapshot's pages once nothing reads them.
            reader.snapshot?.pin?.release()
        }
        writerLock.unlock()
        if let failure { throw failure }
    }
}

extension PageFileKeyValueStore {
    /// Stops the store the way a crash would, for tests: no checkpoint; queued commits are still written, the WAL
    /// keeps its records, and the directory lock is released.
    func closeWithoutCheckpoint() async {
        await writerLock.lock()
        await pipeline.stop()
        published.close()
        let reader = writer.state.reader
        _ = try? await Offload.run { reader.closeFileReads() }
        lock?.release()
        writerLock.unlock()
    }
}

/// Reads for an ``PageFileKeyValueStore/update(_:)`` body: the writer's latest state, under the writer lock.
struct WriterReadContext: KeyValueReadContext {
    let store: PageFileKeyValueStore

    // Each read takes the root and the reader only: copying the whole WriterState would retain and release every
    // one of its fields.
    func get(_ key: Key) async throws -> KeyValueEntry? {
        let reader = store.writer.state.reader
        return try store.liveEntry(key, root: store.writer.state.root, reader: reader, liveness: store.liveness())
    }

    func get(_ keys: [Key]) async throws -> [KeyValueEntry?] {
        let reader = store.writer.state.reader
        let liveness = store.liveness()
        // findAll reuses the current leaf for consecutive keys that fall into it instead of descending again.
        return try zip(keys, try BTree.findAll(keys, root: store.writer.state.root, reader: reader)).map { key, entry in
            guard let entry, entry.isLive(liveness) else { return nil }
            return KeyValueEntry(
                key: key, value: try reader.value(entry.value), version: entry.version, modRevision: entry.modRevision)
        }
    }
}
