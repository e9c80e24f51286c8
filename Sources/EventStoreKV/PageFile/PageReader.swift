// PageReader: the one way the engine reads pages of the data file: through the cache, checksum-verified.
//
// Invariants:
// - Every page read from disk passes `Page.check` (checksum, page number, type) before it is decoded or cached;
//   a failure is `EventStoreError.corrupted` naming the data file and the page.
// - Overflow values are read as one contiguous run and every page of the run is checked.
// - Safe to use from many threads at once: pread is positional and the cache has its own lock.
// - No file read outlives the store: once `closeFileReads` returns, every later read fails with `closed` and none is
//   still running. Otherwise a scan or backup still running after close could read pages that the next opener of the
//   directory (this process or another) has reused, which pass their checks and would be returned as data. Pages
//   already cached belong to the reader's snapshot and stay valid.
// - A read-only store's reader has a SnapshotGuard: every page it reads from disk is checked against the writer's
//   progress (unless the snapshot is pinned) and against the snapshot's checkpoint LSN before it is decoded, cached
//   or returned, so a page a writer in another process has reused comes back as `snapshotExpired`, never as data
//   or as `corrupted` (ReadOnlySnapshot.swift).

import EventStore
import Foundation

/// Reads B+tree nodes and overflow values from the data file.
final class PageReader: Sendable {
    let file: SystemFile
    let pageSize: Int
    let cache: PageCache
    /// A read-only store's check that its snapshot is still on disk; nil for a writer's reader.
    let snapshot: SnapshotGuard?
    private let gate = FileReadGate()

    init(file: SystemFile, pageSize: Int, cache: PageCache, snapshot: SnapshotGuard? = nil) {
        self.file = file
        self.pageSize = pageSize
        self.cache = cache
        self.snapshot = snapshot
    }

    /// Runs `body`, which reads the data file, and for a read-only store checks its snapshot afterwards.
    private func checked<T>(_ body: () throws -> T) throws -> T {
        guard let snapshot else { return try body() }
        return try snapshot.validatedPages(body)
    }

    var path: String { file.path }

    /// Bytes of value data an overflow page holds.
    var overflowChunk: Int { pageSize - Page.headerSize }

    /// Pages an overflow value of `length` bytes takes.
    func overflowPages(_ length: Int) -> Int { max(1, (length + overflowChunk - 1) / overflowChunk) }

    /// Reads `count` bytes of the data file at `offset`, unless the store has closed.
    /// - Throws: ``KeyValueStoreError/closed`` after `closeFileReads`.
    func read(count: Int, at offset: UInt64) throws -> [UInt8] {
        try gate.enter()
        defer { gate.leave() }
        return try file.read(count: count, at: offset)
    }

    /// Refuses every later file read and waits for those in progress (a store's close). Blocks: call it off the
    /// cooperative pool.
    func closeFileReads() { gate.close() }

    /// The file offset of `page`; a page number no file can reach (from a damaged or crafted page whose checksum
    /// holds) is `corrupted`, never an arithmetic trap.
    private func offset(of page: UInt64, pages: Int = 1) throws -> UInt64 {
        let (offset, overflow) = page.multipliedReportingOverflow(by: UInt64(pageSize))
        guard !overflow, offset <= UInt64(Int64.max) - UInt64(pages * pageSize) else {
            throw EventStoreError.corrupted(location: "\(path) page \(page)", detail: "a page number beyond any file")
        }
        return offset
    }

    /// The checked raw bytes of `page`.
    func rawPage(_ page: UInt64, type: PageType?) throws -> [UInt8] {
        let offset = try offset(of: page)
        return try checked {
            let bytes = try read(count: pageSize, at: offset)
            try Page.check(bytes, number: page, type: type, size: pageSize, path: path)
            try snapshot?.checkWritten(bytes)
            return bytes
        }
    }

    /// The node stored in `page`, from the cache or disk.
    func node(_ page: UInt64) throws -> Node {
        if let cached = cache.node(page) { return cached }
        guard page >= 2 else {
            throw EventStoreError.corrupted(location: "\(path) page \(page)", detail: "a tree points at a meta page")
        }
        // rawPage has checked the snapshot: bytes that then fail to decode are damage, not a reused page.
        let node = try NodeCodec.decode(try rawPage(page, type: nil), number: page, path: path)
        cache.insert(node, page: page)
        return node
    }

    /// The node a child reference names.
    func resolve(_ child: ChildRef) throws -> Node {
        switch child {
        case .node(let node): node
        case .page(let page): try node(page)
        }
    }

    /// The bytes of a stored value.
    func value(_ stored: StoredValue) throws -> [UInt8] {
        switch stored {
        case .inline(let bytes), .pending(let bytes): return bytes
        case .overflow(let first, let length): return try overflow(first: first, length: length)
        }
    }

    private func overflow(first: UInt64, length: Int) throws -> [UInt8] {
        try checked { try uncheckedOverflow(first: first, length: length) }
    }

    private func uncheckedOverflow(first: UInt64, length: Int) throws -> [UInt8] {
        let count = overflowPages(length)
        let run = try read(count: count * pageSize, at: try offset(of: first, pages: count))
        var value: [UInt8] = []
        value.reserveCapacity(length)
        for index in 0..<count {
            let start = index * pageSize
            let number = first + UInt64(index)
            guard run.count >= start + pageSize else {
                throw EventStoreError.corrupted(
                    location: "\(path) page \(number)", detail: "the file ends inside an overflow value")
            }
            let page = Array(run[start..<(start + pageSize)])
            try Page.check(page, number: number, type: .overflow, size: pageSize, path: path)
            try snapshot?.checkWritten(page)
            let take = min(overflowChunk, length - value.count)
            value.append(contentsOf: page[Page.headerSize..<(Page.headerSize + take)])
        }
        return value
    }
}

/// Counts a reader's file reads in progress and refuses new ones once closed (see the invariants above).
private final class FileReadGate: @unchecked Sendable {
    // @unchecked: `closed` and `reading` are guarded by `condition`.
    private let condition = NSCondition()
    private var closed = false
    private var reading = 0

    func enter() throws {
        condition.lock()
        defer { condition.unlock() }
        if closed { throw KeyValueStoreError.closed }
        reading += 1
    }

    func leave() {
        condition.lock()
        reading -= 1
        if reading == 0 { condition.broadcast() }
        condition.unlock()
    }

    func close() {
        condition.lock()
        closed = true
        while reading > 0 { condition.wait() }
        condition.unlock()
    }
}
