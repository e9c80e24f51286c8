// Verify: a full consistency check of the page file (bbolt's tx.Check is the model), and the store's statistics.
//
// Invariants checked (each violation is one line of the report, naming the page):
// - every reachable page reads back with a valid checksum, its own page number and the expected type;
// - keys are strictly ascending within each node and lie inside the bounds their parents give them, and every leaf
//   is at the same depth, at most BTree.maximumDepth (the walk never goes deeper, as reads do not);
// - overflow runs are whole and checksummed;
// - every page below pageCount is in exactly one place: the tree, an overflow run, the free-list chain, or the free
//   list (none leaked, none used twice, none out of range);
// - the other meta slot holds an older meta page or zeros, never damage.
// verify() first checkpoints (unless the store has failed) so the whole state is in the page file; it holds the
// writer lock, so writers wait while it runs, and readers do not. Cancellation is checked before the checkpoint and
// every 256 pages of the walk; a cancelled verify throws `CancellationError` and has written nothing more.

import EventStore

/// The findings of ``PageFileKeyValueStore/verify()``.
public struct PageFileVerifyReport: Sendable, Hashable {
    /// Pages in the file (including the two meta pages).
    public var pageCount: UInt64 = 0
    /// Branch and leaf pages reachable from the root.
    public var treePages = 0
    /// Overflow pages holding large values.
    public var overflowPages = 0
    /// Pages on the free list.
    public var freePages = 0
    /// Pages holding the free list itself.
    public var freeListPages = 0
    /// Keys in the tree (expired TTL keys included).
    public var keys = 0
    /// Levels of the tree (0 for an empty tree).
    public var depth = 0
    /// Every problem found, each naming its location. Empty when the store is consistent.
    public var problems: [String] = []

    /// Whether no problem was found.
    public var isClean: Bool { problems.isEmpty }
}

/// Counters for monitoring and the admin tool.
public struct PageFileStatistics: Sendable, Hashable {
    /// Page size in bytes.
    public var pageSize: Int
    /// Pages in the data file as of the last checkpoint.
    public var pageCount: UInt64
    /// Pages free for reuse (as of the last checkpoint, including pages waiting for old readers).
    public var freePages: Int
    /// Bytes in the write-ahead log, including records queued for it.
    public var walBytes: UInt64
    /// The store-wide revision visible to reads.
    public var revision: UInt64
    /// Keys stored (expired TTL keys included until overwritten).
    public var keys: UInt64
    /// Meta pages written since the store was created: one per checkpoint and one per compaction (its rewritten
    /// file starts at the next epoch), the meta page's epoch.
    public var checkpoints: UInt64
    /// Pages in the page cache.
    public var cachedPages: Int
    /// Page lookups the cache answered since open.
    public var cacheHits: UInt64
    /// Page lookups that had to read the disk since open.
    public var cacheMisses: UInt64
    /// The oldest checkpoint a read-only store (of another process, or another store of this one) still pins, or nil
    /// if none does. The writer reuses none of the pages that checkpoint reaches, so while it stays behind
    /// ``checkpoints`` the data file grows: ``PageFileKeyValueStore/refresh()`` or close the reader that holds it.
    public var oldestPinnedCheckpoint: UInt64?
}

extension PageFileKeyValueStore {
    /// Checks every page and structure of the store and reports what is wrong; see ``PageFileVerifyReport``.
    ///
    /// It honours Task cancellation: cancelled before it starts, it throws `CancellationError` having done nothing
    /// (not even the checkpoint it begins with); cancelled during its walk, it stops within a few hundred pages and
    /// throws `CancellationError`.
    public func verify() async throws -> PageFileVerifyReport {
        return try await writerLock.withLockUnlessCancelled {
            if published.state.withLock({ $0.closed }) { throw KeyValueStoreError.closed }
            try Task.checkCancellation()
            // A read-only store verifies the last checkpoint as it is on disk (WAL records are not written into it).
            let skipCheckpoint = pipeline.failed != nil || options.readOnly
            return try await Offload.run(cancellable: { cancellation in
                if !skipCheckpoint { try self.checkpointLocked() }
                let reader = self.writer.state.reader
                let meta = self.writer.state.meta
                guard let snapshot = reader.snapshot else {
                    return try self.check(meta, reader: reader, cancellation: cancellation)
                }
                var report = try self.check(meta, reader: reader, otherMetaSlot: false, cancellation: cancellation)
                // A snapshot a writer has overtaken meanwhile may show its reuse as problems (unpinned, or pinned where
                // no writer honours the pin): then none of them count.
                try snapshot.checkPages()
                if !report.problems.isEmpty { try snapshot.explainFailedRead() }
                // The other meta slot is the snapshot's to judge only while no writer has moved past it.
                let slot = self.otherMetaSlotProblems(meta, reader: reader)
                if (try? snapshot.checkCurrent()) != nil { report.problems += slot }
                return report
            })
        }
    }

    /// Counters for monitoring; cheap, and never blocks on the writer. A read-only store reports its snapshot: the
    /// pages of the checkpoint it reads, and the WAL bytes it has taken in (on open and by ``refresh()``).
    /// - Throws: ``KeyValueStoreError/closed`` after ``close()``; `corrupted`, naming the page, for a damaged page of
    ///   the free list of the last checkpoint.
    public func statistics() throws -> PageFileStatistics {
        let (reader, revision, keys, walEnd, closed) = published.facts()
        if closed { throw KeyValueStoreError.closed }
        let cache = reader.cache.statistics
        // The meta and free list belong to the writer; read the last durable ones from disk instead of waiting.
        let meta = try lastMeta(reader)
        return PageFileStatistics(
            pageSize: reader.pageSize, pageCount: meta.pageCount, freePages: meta.freeCount, walBytes: walEnd ?? pipeline.walBytes,
            revision: revision, keys: keys, checkpoints: meta.epoch, cachedPages: cache.pages, cacheHits: cache.hits,
            cacheMisses: cache.misses,
            oldestPinnedCheckpoint: lock?.oldestPinnedEpoch() ?? reader.snapshot?.pin?.oldestOtherPinnedEpoch)
    }

    private func lastMeta(_ reader: PageReader) throws -> (pageCount: UInt64, freeCount: Int, epoch: UInt64) {
        // A read-only store reports the checkpoint its snapshot reads, not a newer one a writer has made since.
        if let snapshot = reader.snapshot {
            return (snapshot.meta.pageCount, snapshot.freePages, snapshot.meta.epoch)
        }
        // Registered as a reader of the published checkpoint, which the newest meta on disk is or follows: the pages
        // of that meta's free list are freed by the checkpoint after it, so none is reused before the walk is done.
        let (_, unpin) = published.pinEpoch()
        defer { unpin() }
        guard let newest = newestMetaOnDisk(reader) else { return (0, 0, 0) }
        let free = try FreeList.read(head: newest.freeListHead, reader: reader, pageCount: newest.pageCount).free
        return (newest.pageCount, free.count, newest.epoch)
    }

    private func newestMetaOnDisk(_ reader: PageReader) -> MetaPage? {
        let meta = (try? reader.file.read(count: reader.pageSize * 2, at: 0)) ?? []
        let slots = (0..<UInt64(2)).compactMap { slot -> MetaPage? in
            let start = Int(slot) * reader.pageSize
            guard meta.count >= start + reader.pageSize else { return nil }
            return MetaPage.decode(
                Array(meta[start..<(start + reader.pageSize)]), slot: slot, pageSize: reader.pageSize, path: reader.path)
        }
        return slots.max(by: { $0.epoch < $1.epoch })
    }

    /// Walks the on-disk state named by `meta`, and with `otherMetaSlot` the meta slot it is not in.
    /// - Throws: `CancellationError` once `cancellation` is set (polled every 256 pages).
    func check(
        _ meta: MetaPage, reader: PageReader, otherMetaSlot: Bool = true, cancellation: Offload.Cancellation
    ) throws -> PageFileVerifyReport {
        var walk = VerifyWalk(
            reader: reader, pageCount: meta.pageCount, checkpointLSN: meta.checkpointLSN, cancellation: cancellation)
        walk.report.pageCount = meta.pageCount
        if meta.root != 0 { walk.tree(meta.root, lower: nil, upper: nil, depth: 1) }
        walk.freeList(head: meta.freeListHead)
        if walk.cancelled { throw CancellationError() }
        walk.findLeaks()
        if otherMetaSlot { walk.otherMetaSlot(current: meta) }
        if UInt64(walk.report.keys) != meta.keyCount {
            walk.report.problems.append("meta: key count \(meta.keyCount) but the tree holds \(walk.report.keys) keys")
        }
        return walk.report
    }
}

extension PageFileKeyValueStore {
    /// What is wrong with the meta slot `meta` is not in.
    fileprivate func otherMetaSlotProblems(_ meta: MetaPage, reader: PageReader) -> [String] {
        var walk = VerifyWalk(reader: reader, pageCount: meta.pageCount)
        walk.otherMetaSlot(current: meta)
        return walk.report.problems
    }
}

/// One verification pass.
private struct VerifyWalk {
    /// The meta slot the current meta is not in holds the previous checkpoint's meta, or zeros (a new store, or
    /// one just compacted). Anything else is damage: harmless while the current meta is sound (the next checkpoint
    /// rewrites that slot), but the store would have no meta to fall back on.
    mutating func otherMetaSlot(current: MetaPage) {
        let slot = 1 - current.epoch % 2
        let start = slot * UInt64(reader.pageSize)
        guard let page = try? reader.file.read(count: reader.pageSize, at: start), page.count == reader.pageSize else {
            report.problems.append("\(path) meta slot \(slot): cannot be read")
            return
        }
        if page.allSatisfy({ $0 == 0 }) { return }
        guard let other = MetaPage.decode(page, slot: slot, pageSize: reader.pageSize, path: path) else {
            report.problems.append("\(path) meta slot \(slot): damaged (the store opens from slot \(1 - slot))")
            return
        }
        if other.epoch >= current.epoch {
            report.problems.append(
                "\(path) meta slot \(slot): epoch \(other.epoch) is not older than the current meta's \(current.epoch)")
        }
    }

    let reader: PageReader
    let pageCount: UInt64
    /// Polled every 256 claimed pages; once it is set, `cancelled` is true and the walk claims nothing more.
    let cancellation: Offload.Cancellation?
    private(set) var cancelled = false
    private var claims = 0
    var report = PageFileVerifyReport()
    var owner: [UInt64: String] = [:]
    var leafDepth: Int?

    /// The checkpoint LSN of the meta walked: no page it reaches was written later.
    let checkpointLSN: UInt64

    init(
        reader: PageReader, pageCount: UInt64, checkpointLSN: UInt64 = .max, cancellation: Offload.Cancellation? = nil
    ) {
        self.reader = reader
        self.pageCount = pageCount
        self.checkpointLSN = checkpointLSN
        self.cancellation = cancellation
    }

    /// A failed read as a problem: for damage, where and what (without the advice an error's description adds).
    private static func problem(_ error: any Error) -> String {
        if case EventStoreError.corrupted(let location, let detail) = error { return "\(location): \(detail)" }
        return "\(error)"
    }

    /// Records a problem if `bytes`, page `page` as read, was written after the meta's checkpoint: a page the meta
    /// reaches that a later checkpoint overwrote.
    private mutating func checkWritten(_ bytes: [UInt8], page: UInt64) {
        let lsn = bytes.loadLE(UInt64.self, at: Page.lsnOffset)
        if lsn > checkpointLSN {
            report.problems.append(
                "\(path) page \(page): written at LSN \(lsn), after the meta's checkpoint at LSN \(checkpointLSN)")
        }
    }

    private var path: String { reader.path }

    /// Claims `page` for `use`; false (and a problem) if it is out of range or already used, and false once the walk
    /// is cancelled.
    mutating func claim(_ page: UInt64, as use: String) -> Bool {
        claims += 1
        if claims % 256 == 0, cancellation?.isCancelled == true { cancelled = true }
        guard !cancelled else { return false }
        guard page >= 2, page < pageCount else {
            report.problems.append("\(path) page \(page): \(use) page out of range (file has \(pageCount) pages)")
            return false
        }
        if let previous = owner[page] {
            report.problems.append("\(path) page \(page): used as \(use) but already used as \(previous)")
            return false
        }
        owner[page] = use
        return true
    }

    mutating func tree(_ page: UInt64, lower: Key?, upper: Key?, depth: Int) {
        guard claim(page, as: "tree") else { return }
        let node: Node
        do {
            let bytes = try reader.rawPage(page, type: nil)
            checkWritten(bytes, page: page)
            node = try NodeCodec.decode(bytes, number: page, path: path)
        } catch {
            report.problems.append(Self.problem(error))
            return
        }
        report.treePages += 1
        report.depth = max(report.depth, depth)
        checkOrder(node, page: page, lower: lower, upper: upper)
        if node.isLeaf {
            if let leafDepth, leafDepth != depth {
                report.problems.append("\(path) page \(page): leaf at depth \(depth), others at \(leafDepth)")
            }
            leafDepth = leafDepth ?? depth
            report.keys += node.count
            for entry in node.allEntries { overflow(entry.value) }
            return
        }
        // Reads refuse a child deeper than BTree.maximumDepth, so verify must too; and a chain of branches (or a child
        // naming an ancestor) must not recurse without end.
        guard depth < BTree.maximumDepth else {
            report.problems.append("\(path) page \(page): the tree is deeper than \(BTree.maximumDepth) levels here")
            return
        }
        for (index, child) in node.children.enumerated() {
            guard case .page(let childPage) = child else { continue }
            let childLower = index == 0 ? lower : node.keys[index]
            let childUpper = index + 1 < node.keys.count ? node.keys[index + 1] : upper
            tree(childPage, lower: childLower, upper: childUpper, depth: depth + 1)
        }
    }

    private mutating func checkOrder(_ node: Node, page: UInt64, lower: Key?, upper: Key?) {
        let keys = node.isLeaf ? node.allKeys : Array(node.keys.dropFirst())
        for index in keys.indices.dropFirst() where !keys[index - 1].lexicographicallyPrecedes(keys[index]) {
            report.problems.append("\(path) page \(page): keys out of order at entry \(index)")
        }
        if let lower, let first = keys.first, first.lexicographicallyPrecedes(lower) {
            report.problems.append("\(path) page \(page): key below the parent's separator")
        }
        if let upper, let last = keys.last, !last.lexicographicallyPrecedes(upper) {
            report.problems.append("\(path) page \(page): key at or above the next separator")
        }
    }

    private mutating func overflow(_ value: StoredValue) {
        guard case .overflow(let first, let length) = value else { return }
        let count = reader.overflowPages(length)
        for offset in 0..<UInt64(count) where !claim(first + offset, as: "overflow") { return }
        report.overflowPages += count
        do {
            _ = try reader.value(value)
            for offset in 0..<UInt64(count) {
                checkWritten(try reader.rawPage(first + offset, type: .overflow), page: first + offset)
            }
        } catch {
            report.problems.append(Self.problem(error))
        }
    }

    mutating func freeList(head: UInt64) {
        var next = head
        var seen = 0
        while next != 0 {
            guard claim(next, as: "free-list"), seen <= Int(pageCount) else { return }
            seen += 1
            report.freeListPages += 1
            let page: [UInt8]
            do { page = try reader.rawPage(next, type: .freeList) } catch {
                report.problems.append(Self.problem(error))
                return
            }
            checkWritten(page, page: next)
            let count = Int(page.loadLE(UInt32.self, at: Page.countOffset))
            guard count <= FreeList.capacity(pageSize: reader.pageSize) else {
                report.problems.append("\(path) page \(next): free-list count \(count) too large")
                return
            }
            for index in 0..<count {
                let free = page.loadLE(UInt64.self, at: Page.headerSize + 8 + index * 8)
                if claim(free, as: "free") { report.freePages += 1 }
            }
            next = page.loadLE(UInt64.self, at: Page.headerSize)
        }
    }

    mutating func findLeaks() {
        guard pageCount > 2 else { return }
        var leaked: [UInt64] = []
        for page in 2..<pageCount where owner[page] == nil { leaked.append(page) }
        if !leaked.isEmpty {
            report.problems.append(
                "\(path): \(leaked.count) pages are neither in the tree nor free (first: \(leaked.prefix(8)))")
        }
    }
}
