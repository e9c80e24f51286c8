// Compact: reclaims the free space of the page file while the store stays open, by bulk-loading the live tree into
// a new, densely packed file and switching to it.
//
// Invariants:
// - Runs under the writer lock right after a checkpoint, so the tree on disk is the whole state and the WAL is
//   empty; writers wait, readers do not (they keep the snapshot and page file they started with: an unlinked file
//   stays readable through its open descriptor).
// - The new file is created as `data.compact` (new: a name left there is removed, never followed) and flocked by the
//   writer before anything is written (leaves filled completely, left to right, then each branch level),
//   fsynced, and renamed over `data`; its meta continues the same WAL generation (same salt and checkpoint LSN). A
//   crash before the rename leaves the old file in place (open removes the leftover); after it, the new file.
// - A failure (or cancellation) while `data.compact` is written changes nothing of the store: the file is removed and
//   the store stays open and writable. A failure from the rename on fails the store.
// - Expired TTL entries, and TTL entries of earlier writable opens (Liveness in Node.swift), are copied like any
//   other with their modRevision (they stay invisible); nothing observable changes.

import EventStore
import Glibc

/// What ``PageFileKeyValueStore/compact()`` did.
public struct PageFileCompactionReport: Sendable, Hashable {
    /// Pages in the file before compaction.
    public var pagesBefore: UInt64
    /// Pages in the file after compaction.
    public var pagesAfter: UInt64
}

/// Writes a tree bottom-up into consecutive pages of a new file.
private struct BulkLoader {
    let file: SystemFile
    let pageSize: Int
    let lsn: UInt64
    var nextPage: UInt64 = 2
    private var buffer: [UInt8] = []
    private var bufferStart: UInt64 = 2
    private var leafKeys: [Key] = []
    private var leafEntries: [LeafEntry] = []
    private var leafSize = 0
    private var leaves: [(Key, UInt64)] = []

    init(file: SystemFile, pageSize: Int, lsn: UInt64) {
        self.file = file
        self.pageSize = pageSize
        self.lsn = lsn
    }

    private var capacity: Int { pageSize - Page.headerSize }

    private mutating func append(_ page: [UInt8]) throws {
        buffer.append(contentsOf: page)
        nextPage += 1
        if buffer.count >= 1 << 20 { try drain() }
    }

    private mutating func drain() throws {
        guard !buffer.isEmpty else { return }
        try file.write(buffer, at: bufferStart * UInt64(pageSize))
        bufferStart = nextPage
        buffer.removeAll(keepingCapacity: true)
    }

    mutating func add(_ key: Key, _ entry: LeafEntry, value: [UInt8]?) throws {
        var entry = entry
        if let value { entry.value = .overflow(page: try overflow(value), length: value.count) }
        let size = Node.leafSize(key: key, value: entry.value)
        if leafSize + size > capacity { try flushLeaf() }
        leafKeys.append(key)
        leafEntries.append(entry)
        leafSize += size
    }

    private mutating func overflow(_ value: [UInt8]) throws -> UInt64 {
        let first = nextPage
        let chunk = capacity
        let count = max(1, (value.count + chunk - 1) / chunk)
        for index in 0..<count {
            var page = Page.blank(size: pageSize, type: .overflow, number: nextPage, lsn: lsn)
            let start = index * chunk
            let end = min(value.count, start + chunk)
            if start < end { page.replaceSubrange(Page.headerSize..<(Page.headerSize + end - start), with: value[start..<end]) }
            Page.seal(&page)
            try append(page)
        }
        return first
    }

    private mutating func flushLeaf() throws {
        guard let first = leafKeys.first else { return }
        let node = Node(leaf: leafKeys, entries: leafEntries, owner: 0)
        leaves.append((first, nextPage))
        try append(NodeCodec.encode(node, number: nextPage, lsn: lsn, pageSize: pageSize, path: file.path))
        leafKeys.removeAll(keepingCapacity: true)
        leafEntries.removeAll(keepingCapacity: true)
        leafSize = 0
    }

    /// Writes the remaining leaf and every branch level; returns the root page (0 for an empty tree).
    mutating func finish() throws -> UInt64 {
        try flushLeaf()
        var level = leaves
        while level.count > 1 {
            var parents: [(Key, UInt64)] = []
            var keys: [Key] = []
            var children: [ChildRef] = []
            var size = 0
            for (key, page) in level {
                let entrySize = Node.branchSize(key: keys.isEmpty ? [] : key)
                if size + entrySize > capacity {
                    parents.append((keys[0], nextPage))
                    try append(NodeCodec.encode(
                        Node(branch: keys, children: children, owner: 0), number: nextPage, lsn: lsn, pageSize: pageSize, path: file.path))
                    keys.removeAll()
                    children.removeAll()
                    size = 0
                }
                size += Node.branchSize(key: keys.isEmpty ? [] : key)
                keys.append(key)
                children.append(.page(page))
            }
            parents.append((keys[0], nextPage))
            try append(NodeCodec.encode(
                Node(branch: keys, children: children, owner: 0), number: nextPage, lsn: lsn, pageSize: pageSize, path: file.path))
            level = parents
        }
        try drain()
        return level.first?.1 ?? 0
    }
}

extension PageFileKeyValueStore {
    /// Rewrites the store into a densely packed file, returning free pages to the file system, while the store stays
    /// open. Writers wait while it runs; readers go on.
    ///
    /// The new file is written beside the store and then switched to. If writing it fails (a full disk, an I/O error,
    /// damage found in the tree), the error is thrown, the partial file is removed, and the store is unchanged, open
    /// and writable. An error once the switch to the new file has begun fails the store: it refuses writes until it is
    /// opened again, which finds the old file or the new one, whole.
    ///
    /// It honours Task cancellation until the switch begins: checked before it starts (nothing is done, not even the
    /// checkpoint it begins with) and every 256 entries while the new file is written; a cancelled compaction throws
    /// `CancellationError`, removes the partial file and leaves the store unchanged.
    @discardableResult
    public func compact() async throws -> PageFileCompactionReport {
        return try await writerLock.withLockUnlessCancelled {
            try checkWritable()
            try Task.checkCancellation()
            return try await Offload.run(cancellable: { cancellation in
                try self.checkpointLocked()
                let (meta, file) = try self.writeCompacted(
                    to: self.directory + "/data.compact", cancellation: cancellation)
                do {
                    return try self.switchToCompacted(meta, file: file)
                } catch {
                    let failure = error as? EventStoreError ?? .storeFailed(reason: "\(error)")
                    self.counters.notify(.failed(reason: failure.description))
                    self.pipeline.fail(failure)
                    throw failure
                }
            })
        }
    }

    /// Writes the live tree densely into `temporary` with its meta page, and syncs it; returns that meta and the
    /// file, named by the path it is to take (`data`), which this writer holds locked (DirectoryLock.lockFile). The
    /// file is created new (a name left at `temporary`, a symlink into another store say, is removed, never
    /// followed) and locked before anything is written. Nothing of the store changes: on any error, or on
    /// cancellation (polled every 256 entries), the file is unlocked and removed and the error thrown. A failed sync
    /// is not retried.
    func writeCompacted(to temporary: String, cancellation: Offload.Cancellation) throws -> (MetaPage, SystemFile) {
        let state = writer.state
        let old = state.reader
        var created: SystemFile?
        do {
            let file = try SystemFile.create(temporary, faults: options.faults)
            created = file
            try lock?.lockFile(file)
            var loader = BulkLoader(file: file, pageSize: pageSize, lsn: state.lsn)
            var entries = 0
            try BTree.scan(KeyRange(from: [], to: nil), direction: .forward, root: state.root, reader: old) { node, index in
                entries += 1
                if entries % 256 == 0 { try cancellation.check() }
                let key = node.key(at: index)
                let entry = node.entry(at: index)
                if case .overflow = entry.value {
                    try loader.add(key, entry, value: try old.value(entry.value))
                } else {
                    try loader.add(key, entry, value: nil)
                }
                return true
            }
            let root = try loader.finish()
            try cancellation.check()
            let meta = MetaPage(
                epoch: state.meta.epoch + 1, pageSize: pageSize, root: root, freeListHead: 0, pageCount: loader.nextPage,
                checkpointLSN: state.lsn, revision: state.revision, walSalt: state.meta.walSalt, keyCount: state.keyCount)
            var metas = [UInt8](repeating: 0, count: 2 * pageSize)
            let slot = Int(meta.epoch % 2) * pageSize
            metas.replaceSubrange(slot..<(slot + pageSize), with: meta.encoded())
            try file.write(metas, at: 0)
            if options.durability != .none {
                try file.sync()
                counters.recordSync()
            }
            // The descriptor the reader will keep, under the name the file is about to take; the lock moves to it,
            // so that the next compaction's unlockFile releases it. Made here, so that a failure (no descriptor
            // left) still leaves the store unchanged.
            let kept = try file.renamed(to: directory + "/data")
            lock?.transferFile(file, to: kept)
            created = kept
            return (meta, kept)
        } catch {
            if let created { lock?.unlockFile(created) }
            Directory.remove(temporary, faults: options.faults)
            throw error
        }
    }

    /// Renames the file `writeCompacted` wrote over `data` and reads from it from now on. An error here may leave
    /// either file in place: the caller fails the store.
    private func switchToCompacted(_ meta: MetaPage, file: SystemFile) throws -> PageFileCompactionReport {
        var state = writer.state
        let old = state.reader
        let dataPath = directory + "/data"
        // Locked since it was created, so no other writer reaching `data` through a symlink can take it.
        try Directory.rename(directory + "/data.compact", to: dataPath, faults: options.faults)
        if options.durability != .none { try Directory.sync(directory, faults: options.faults) }
        lock?.unlockFile(old.file)

        let reader = PageReader(
            file: file, pageSize: pageSize,
            cache: PageCache(capacity: old.cache.capacity, counts: old.cache.counts))
        let report = PageFileCompactionReport(pagesBefore: state.meta.pageCount, pagesAfter: meta.pageCount)
        state.meta = meta
        state.reader = reader
        state.root = meta.root == 0 ? nil : .page(meta.root)
        state.freeList = FreeList(free: [], listPages: [])
        state.freedSinceCheckpoint = []
        writer.state = state
        published.installCheckpoint(root: state.root, epoch: meta.epoch, reader: reader)
        return report
    }
}
