// Checkpoint: where the WAL's commits move into the page file, and the WAL starts a new generation.
//
// Order of a checkpoint (the writer lock is held and the flusher is idle, so the writer's tree is exactly the
// durable state):
// 1. Write every dirty node (post-order, so parents know their children's pages) and every pending overflow value
//    to free pages: never to a page the current meta's tree, free list or a running reader may use. Pages are
//    allocated in one walk; a large checkpoint then encodes and writes its nodes on two threads, and starts the
//    device's write-out of each run of consecutive pages as it is written (a hint: step 3's fdatasync is what
//    makes them durable). The second thread ends before the checkpoint goes on or fails.
// 2. Write the new free list: everything free as of the new tree, including the pages this checkpoint replaced.
// 3. fdatasync the data file; then write the meta page into the other slot and fdatasync again. The meta flip is
//    the commit point: a crash before it leaves the previous meta and its intact tree, plus the whole WAL.
// 4. Start a new WAL generation: write a header with the new meta's salt and fdatasync. The file is reused, not
//    truncated (as SQLite reuses its WAL), unless it grew past twice the checkpoint threshold: records of the old
//    generation fail the new salt's CRC, so leftovers are never replayed and a crash inside this step loses nothing
//    (they are all in the tree already).
// Pages replaced by this checkpoint become reusable only when no reader from an older epoch remains (FreeList):
// neither one of this process nor a read-only store of another process that has pinned it (ReaderPins.swift).
// Any I/O error puts the store into its failed state; nothing is retried.

import EventStore
import Foundation

/// A node a checkpoint has placed: its clean copy and the page it goes to.
private struct PlacedNode: Sendable {
    let node: Node
    let page: UInt64
}

/// Allocates pages for one checkpoint's dirty nodes and writes them: `place` walks the tree (post-order, so parents
/// know their children's pages) and writes overflow values, `writePlaced` then encodes and writes the nodes.
private struct CheckpointWriter {
    let reader: PageReader
    let lsn: UInt64
    var freeList: FreeList
    var pageCount: UInt64
    /// Nodes placed and not written yet, in post-order.
    var placed: [PlacedNode] = []
    /// Overflow pages written by `place`, while their write-out is not started yet.
    var overflowRun = WriteOutRun()

    mutating func allocate(_ count: Int) -> UInt64 {
        let first: UInt64
        if let reused = freeList.allocateRun(count) {
            first = reused
        } else {
            first = pageCount
            pageCount += UInt64(count)
        }
        for offset in 0..<UInt64(count) { reader.cache.remove(first + offset) }
        return first
    }

    /// Allocates a page for every dirty node of the subtree `reference` (and writes its overflow values); returns
    /// the subtree's page.
    mutating func place(_ reference: ChildRef) throws -> UInt64 {
        guard case .node(let node) = reference else {
            if case .page(let page) = reference { return page }
            return 0
        }
        if node.origin != 0 { return node.origin }
        if node.isLeaf {
            let body = try node.cleanBody { try writeOverflow($0) }
            let page = allocate(1)
            // The cached copy gets arrays of exactly its size: a leaf filled by appends grew its arrays by doubling,
            // and a cache of such leaves held about 1.7 times the memory its budget assumes.
            let clean = Node(
                leafBody: body.compacted(), offsets: node.offsets.compacted(), pendingValues: [], owner: 0, origin: page)
            placed.append(PlacedNode(node: clean, page: page))
            return page
        }
        let children = ChunkedArray(try node.children.map { ChildRef.page(try place($0)) })
        let page = allocate(1)
        placed.append(PlacedNode(node: Node(branch: node.keys, children: children, owner: 0, origin: page), page: page))
        return page
    }

    private mutating func writeOverflow(_ value: [UInt8]) throws -> UInt64 {
        let count = reader.overflowPages(value.count)
        let first = allocate(count)
        var run: [UInt8] = []
        run.reserveCapacity(count * reader.pageSize)
        for index in 0..<count {
            var page = Page.blank(size: reader.pageSize, type: .overflow, number: first + UInt64(index), lsn: lsn)
            let start = index * reader.overflowChunk
            let end = min(value.count, start + reader.overflowChunk)
            if start < end { page.replaceSubrange(Page.headerSize..<(Page.headerSize + end - start), with: value[start..<end]) }
            Page.seal(&page)
            run.append(contentsOf: page)
        }
        try reader.file.write(run, at: first * UInt64(reader.pageSize))
        overflowRun.note(first..<(first + UInt64(count)), file: reader.file, pageSize: reader.pageSize)
        return first
    }

    /// Encodes, writes and caches every placed node. A large checkpoint splits the work with a second thread: the
    /// writer is stopped meanwhile, so the machine's other core would otherwise idle, and encoding and checksumming
    /// a page costs about as much as writing it.
    mutating func writePlaced() throws {
        let nodes = placed
        placed = []
        overflowRun.start(file: reader.file, pageSize: reader.pageSize)
        guard nodes.count >= PageFileKeyValueStore.parallelCheckpointMinimum else {
            try Self.write(nodes[...], reader: reader, lsn: lsn)
            return
        }
        let middle = nodes.count / 2
        let (reader, lsn) = (self.reader, self.lsn)
        let helper = JoinableThread { try Self.write(nodes[middle...], reader: reader, lsn: lsn) }
        var failure: (any Error)?
        do {
            try Self.write(nodes[..<middle], reader: reader, lsn: lsn)
        } catch {
            failure = error
        }
        // Both halves end before anything is thrown, so no write of this checkpoint runs after it failed.
        if let helperFailure = helper.join() { failure = failure ?? helperFailure }
        if let failure { throw failure }
    }

    private static func write(_ nodes: ArraySlice<PlacedNode>, reader: PageReader, lsn: UInt64) throws {
        var run = WriteOutRun()
        for placed in nodes {
            try reader.file.write(
                try NodeCodec.encode(
                    placed.node, number: placed.page, lsn: lsn, pageSize: reader.pageSize, path: reader.path),
                at: placed.page * UInt64(reader.pageSize))
            run.note(placed.page..<(placed.page + 1), file: reader.file, pageSize: reader.pageSize)
            reader.cache.insert(placed.node, page: placed.page)
        }
        run.start(file: reader.file, pageSize: reader.pageSize)
    }
}

/// Consecutive pages written and not yet handed to the device. Once a run is `length` pages long its write-out is
/// started, so the device writes while later pages are encoded and the checkpoint's fdatasync finds most of them
/// written (about 40% less time in that fdatasync for 2,000 pages). A hint only: the fdatasync makes them durable.
private struct WriteOutRun {
    static let length: UInt64 = 256
    private var pages: Range<UInt64> = 0..<0

    mutating func note(_ written: Range<UInt64>, file: SystemFile, pageSize: Int) {
        if written.lowerBound == pages.upperBound, !pages.isEmpty {
            pages = pages.lowerBound..<written.upperBound
        } else {
            start(file: file, pageSize: pageSize)
            pages = written
        }
        if UInt64(pages.count) >= Self.length { start(file: file, pageSize: pageSize) }
    }

    /// Starts the write-out of the pending run.
    mutating func start(file: SystemFile, pageSize: Int) {
        guard !pages.isEmpty else { return }
        file.startWriteOut(at: pages.lowerBound * UInt64(pageSize), length: pages.count * pageSize)
        pages = 0..<0
    }
}

/// A thread running one throwing closure, joined for its error.
private final class JoinableThread: @unchecked Sendable {
    // @unchecked: `failure` and `done` are guarded by `condition`.
    private let condition = NSCondition()
    private var failure: (any Error)?
    private var done = false

    init(_ body: @escaping @Sendable () throws -> Void) {
        let thread = Thread { [self] in
            var failure: (any Error)?
            do { try body() } catch { failure = error }
            condition.lock()
            self.failure = failure
            done = true
            condition.signal()
            condition.unlock()
        }
        thread.start()
    }

    /// Waits for the closure to end; returns its error, if any.
    func join() -> (any Error)? {
        condition.lock()
        defer { condition.unlock() }
        while !done { condition.wait() }
        return failure
    }
}

extension Array {
    /// The same elements in storage of their own size, if this array's storage has much more room than it uses.
    func compacted() -> [Element] {
        guard capacity > count + count / 8 else { return self }
        return withUnsafeBufferPointer { Array($0) }
    }
}

extension PageFileKeyValueStore {
    /// Dirty nodes from which a checkpoint splits its page writes between two threads; below it, one writes them.
    /// Starting the thread costs about as much as encoding a few pages. (The crash tests' checkpoints, 80-95 nodes,
    /// take the two-thread path.)
    static let parallelCheckpointMinimum = 64

    /// Runs a checkpoint. Blocking; the caller holds the writer lock and runs off the cooperative pool.
    func checkpointLocked() throws {
        try pipeline.reserveWAL()
        let started = ContinuousClock.now
        let walBytes = pipeline.walBytes
        do {
            let size = try writeCheckpoint()
            pipeline.releaseWAL(offset: UInt64(WriteAheadLog.headerSize), size: size, synced: true)
        } catch {
            let failure = error as? EventStoreError ?? .storeFailed(reason: "\(error)")
            // Failed before the WAL is given back: a flusher woken by the release must find the store failed, or in
            // `.deferred` durability it would fdatasync the WAL again after this sync's error.
            pipeline.fail(failure)
            pipeline.releaseWAL(offset: UInt64(WriteAheadLog.headerSize), size: 0, synced: false)
            counters.notify(.failed(reason: failure.description))
            throw failure
        }
        let duration = ContinuousClock.now - started
        counters.recordCheckpoint(duration)
        counters.notify(.checkpointed(epoch: writer.state.meta.epoch, duration: duration, walBytes: walBytes))
    }

    /// Returns the WAL's size afterwards.
    private func writeCheckpoint() throws -> UInt64 {
        var state = writer.state
        let epoch = try MetaPage.counterStep(state.meta.epoch, by: 1, "epoch", location: state.metaLocation)
        let syncs = options.durability != .none
        // Readers of this process register their epochs; read-only stores in other processes pin theirs.
        let pinned = lock?.oldestPinnedEpoch() ?? .max
        state.freeList.release(oldestReaderEpoch: min(published.oldestReaderEpoch, pinned))
        let reader = state.reader
        let data = reader.file
        var pages = CheckpointWriter(
            reader: reader, lsn: state.lsn, freeList: state.freeList, pageCount: state.meta.pageCount)
        let root = try state.root.map { try pages.place($0) } ?? 0
        try pages.writePlaced()

        let retired = state.freedSinceCheckpoint + state.freeList.listPages
        // Replaced pages leave the cache now rather than when evicted: only readers of older snapshots can still
        // want them, and those read them from the file (they stay intact until no such reader is left).
        reader.cache.remove(retired)
        let perPage = FreeList.capacity(pageSize: reader.pageSize)
        let needed = (pages.freeList.all.count + retired.count + perPage - 1) / perPage
        let listPages = (0..<needed).map { _ in pages.allocate(1) }
        let listed = pages.freeList.all + retired
        for (index, page) in FreeList.encode(listed, into: listPages, lsn: state.lsn, pageSize: reader.pageSize)
            .enumerated()
        {
            try data.write(page, at: listPages[index] * UInt64(reader.pageSize))
        }
        if syncs {
            try data.sync()
            counters.recordSync()
        }
        Failpoint.hit(Failpoint.midCheckpoint)

        let meta = MetaPage(
            epoch: epoch, pageSize: reader.pageSize, root: root, freeListHead: listPages.first ?? 0,
            pageCount: pages.pageCount, checkpointLSN: state.lsn, revision: state.revision,
            walSalt: UInt64.random(in: 1...UInt64.max), keyCount: state.keyCount)
        try data.write(meta.encoded(), at: (epoch % 2) * UInt64(reader.pageSize))
        if syncs {
            try data.sync()
            counters.recordSync()
        }

        try wal.write(WriteAheadLog.header(salt: meta.walSalt, firstLSN: state.lsn + 1), at: 0)
        Failpoint.hit(Failpoint.duringWALTruncation)
        var walSize = try wal.size()
        if walSize > 2 * (UInt64(options.checkpointThresholdMB) << 20) {
            try wal.truncate(to: UInt64(WriteAheadLog.headerSize))
            walSize = UInt64(WriteAheadLog.headerSize)
        }
        if syncs {
            try wal.sync()
            counters.recordSync()
        }

        state.meta = meta
        state.walVersion = WriteAheadLog.formatVersion
        state.root = root == 0 ? nil : .page(root)
        state.freeList = pages.freeList
        state.freeList.retire(retired, at: epoch)
        state.freeList.listPages = listPages
        state.freedSinceCheckpoint = []
        writer.state = state
        dirtyNodes.store(0, ordering: .relaxed)
        published.installCheckpoint(root: state.root, epoch: epoch, reader: reader)
        return walSize
    }
}
