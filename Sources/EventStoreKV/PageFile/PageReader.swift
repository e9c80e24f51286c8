// PageReader: the one way the engine reads pages of the data file: through the cache, checksum-verified.
//
// Invariants:
// - Every page read from disk passes `Page.check` (checksum, page number, type) before it is decoded or cached;
//   a failure is `EventStoreError.corrupted` naming the data file and the page.
// - Overflow values are read as one contiguous run and every page of the run is checked.
// - Safe to use from many threads at once: pread is positional and the cache has its own lock.

import EventStore

/// Reads B+tree nodes and overflow values from the data file.
final class PageReader: Sendable {
    let file: SystemFile
    let pageSize: Int
    let cache: PageCache

    init(file: SystemFile, pageSize: Int, cache: PageCache) {
        self.file = file
        self.pageSize = pageSize
        self.cache = cache
    }

    var path: String { file.path }

    /// Bytes of value data an overflow page holds.
    var overflowChunk: Int { pageSize - Page.headerSize }

    /// Pages an overflow value of `length` bytes takes.
    func overflowPages(_ length: Int) -> Int { max(1, (length + overflowChunk - 1) / overflowChunk) }

    /// The checked raw bytes of `page`.
    func rawPage(_ page: UInt64, type: PageType?) throws -> [UInt8] {
        let bytes = try file.read(count: pageSize, at: page * UInt64(pageSize))
        try Page.check(bytes, number: page, type: type, size: pageSize, path: path)
        return bytes
    }

    /// The node stored in `page`, from the cache or disk.
    func node(_ page: UInt64) throws -> Node {
        if let cached = cache.node(page) { return cached }
        guard page >= 2 else {
            throw EventStoreError.corrupted(location: "\(path) page \(page)", detail: "a tree points at a meta page")
        }
        let bytes = try rawPage(page, type: nil)
        let node = try NodeCodec.decode(bytes, number: page, path: path)
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
        let count = overflowPages(length)
        let run = try file.read(count: count * pageSize, at: first * UInt64(pageSize))
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
            let take = min(overflowChunk, length - value.count)
            value.append(contentsOf: page[Page.headerSize..<(Page.headerSize + take)])
        }
        return value
    }
}
