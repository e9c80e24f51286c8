// Node: a B+tree node in memory, and its encoding as a branch or leaf page (layout in docs/FORMAT.md).
//
// Invariants:
// - Keys in a node are strictly ascending (unsigned lexicographic). In a branch, child i holds keys >= keys[i] and
//   < keys[i + 1]; keys[0] is ignored when searching (the lower bound comes from the parent) and stored empty.
// - `byteSize` is always the exact encoded body size, so a node fits its page iff byteSize <= capacity.
// - A node is mutable only while `owner` equals the id of the transaction being built under the writer lock; once
//   that transaction ends, no one mutates it again (copy-on-write), so readers can share it without locks.
// - `origin` is the page a clean node was decoded from (0 for a node built in memory). Replacing such a node frees
//   its page at the next checkpoint.

import EventStore
import Foundation

/// Where a leaf entry's value lives.
enum StoredValue: Sendable {
    /// In the leaf page itself.
    case inline([UInt8])
    /// Too large for the leaf; held in memory until the next checkpoint writes it to overflow pages.
    case pending([UInt8])
    /// In `pageCount(length)` contiguous overflow pages starting at `page`.
    case overflow(page: UInt64, length: Int)

    /// Bytes the value takes in the leaf page (after its 4-byte length).
    var encodedSize: Int {
        if case .inline(let bytes) = self { return bytes.count }
        return 8
    }

    /// The value's length in bytes.
    var length: Int {
        switch self {
        case .inline(let bytes), .pending(let bytes): bytes.count
        case .overflow(_, let length): length
        }
    }
}

/// One key's stored state in a leaf.
struct LeafEntry: Sendable {
    var value: StoredValue
    var version: UInt64
    var modRevision: UInt64
    /// Expiry in nanoseconds since 1970, or 0 for none.
    var expiresAt: Int64

    /// Whether the entry is visible to a read judged by `liveness`.
    func isLive(_ liveness: Liveness) -> Bool { liveness.isLive(expiresAt: expiresAt, modRevision: modRevision) }

    /// Fixed bytes of a leaf entry besides its key and value bytes: key length, flags, version, modRevision,
    /// expiry and value length.
    static let overhead = 2 + 1 + 8 + 8 + 8 + 4
}

/// A leaf entry's fixed fields, read in place from a leaf's body (no copy of the value).
struct EntryHeader {
    /// 0: the value is inline; 1: in overflow pages; 2: pending (in memory until the next checkpoint).
    var flags: UInt8
    var version: UInt64
    var modRevision: UInt64
    var expiresAt: Int64
    var valueLength: Int
    /// Offset in the body of the value bytes (inline) or of the u64 reference (overflow page, pending index).
    var valueOffset: Int
    /// The overflow page or pending index (0 for an inline value).
    var reference: UInt64

    /// Whether the entry is visible to a read judged by `liveness`.
    func isLive(_ liveness: Liveness) -> Bool { liveness.isLive(expiresAt: expiresAt, modRevision: modRevision) }
}

/// How one open of a page file judges whether an entry put with a TTL is still live.
///
/// A TTL entry lives until its expiry, and no longer than the writable open that wrote it: the directory has one
/// writer at a time (DirectoryLock), so a TTL key written before the current writable open (a session's lease, say)
/// belongs to a holder that can no longer renew or release it, whether that open closed or crashed. Every entry
/// carries the revision that wrote it, and the revisions of one store only grow, so no format change is needed: an
/// entry with `modRevision <= openRevision` predates this open. Such an entry reads exactly as an expired one does
/// (absent to reads, scans and conditions; a put over it starts again at version 1); it stays in the tree until
/// overwritten or deleted, as expired entries do.
struct Liveness: Sendable {
    /// Now, in nanoseconds since 1970.
    var now: Int64
    /// The store's revision when this writable open began (after recovery replayed the WAL): TTL entries written at
    /// or before it are dead. 0 for a read-only open, which cannot know when the writer it reads beside opened, and
    /// so judges TTL entries by their expiry alone.
    var openRevision: UInt64

    /// Whether an entry with these fields is visible (`expiresAt` 0: no TTL).
    @inline(__always)
    func isLive(expiresAt: Int64, modRevision: UInt64) -> Bool {
        expiresAt == 0 || (now < expiresAt && modRevision > openRevision)
    }

    /// The expiry a put with `ttl` stores (0: none; never 0 for a TTL, which may already have passed).
    @inline(__always)
    func expiry(of ttl: Duration?) -> Int64 {
        ttl.map { max(1, Duration.expiry(now: now, ttl: $0)) } ?? 0
    }
}

/// A reference from a branch to a child: a page on disk, or a node built in memory since the last checkpoint.
enum ChildRef: Sendable {
    case page(UInt64)
    case node(Node)
}

/// A B+tree node. See the invariants at the top of this file.
///
/// A leaf keeps its entries packed exactly as in its page body (`body`, with `offsets` marking where each entry
/// starts), so decoding a page is one copy and one pass, a copy-on-write copy is two array copies whatever the
/// number of entries, and scans read keys and values in place. A branch keeps its separators and children in
/// chunked arrays (ChunkedArray.swift), so a copy that changes one child copies one chunk of them.
final class Node: @unchecked Sendable {
    // @unchecked: mutable fields are written only by the single writer, under PageFileKeyValueStore's writer lock,
    // while `owner` is the transaction being built; the node is unreachable from any published snapshot until that
    // transaction is published (through the published-state lock), and is never mutated afterwards.
    let isLeaf: Bool
    let origin: UInt64
    // The mutable fields below. Swift checks every access to a class's stored property at run time for an
    // overlapping access on the same thread (a thread-local access set updated on each access); on the write path
    // that cost about 15% of append-batch's CPU. The fields are checked in debug builds, which the test suite runs,
    // and not in release builds. The check never guarded against other threads (the writer lock and copy-on-write
    // do, above); it only catches a method of this file touching a field while another access to it is open.
    #if DEBUG
    /// Branch: separator keys (entry 0 empty), chunked so a copy-on-write copy shares them (ChunkedArray.swift).
    var keys: ChunkedArray<Key>
    /// Branch: children, chunked so changing one child of a copy copies one chunk.
    var children: ChunkedArray<ChildRef>
    /// Leaf: the encoded entries, back to back, as in the page body.
    var body: [UInt8]
    /// Leaf: where each entry starts in `body`.
    var offsets: [Int32]
    /// Leaf: values too large for the page that no checkpoint has written yet, named by index from their entry.
    var pendingValues: [[UInt8]]
    var owner: UInt64
    /// Branch: the encoded body size (a leaf's is `body.count`).
    private var branchBytes: Int
    #else
    @exclusivity(unchecked) var keys: ChunkedArray<Key>
    @exclusivity(unchecked) var children: ChunkedArray<ChildRef>
    @exclusivity(unchecked) var body: [UInt8]
    @exclusivity(unchecked) var offsets: [Int32]
    @exclusivity(unchecked) var pendingValues: [[UInt8]]
    @exclusivity(unchecked) var owner: UInt64
    @exclusivity(unchecked) private var branchBytes: Int
    #endif

    init(leaf keys: [Key], entries: [LeafEntry], owner: UInt64, origin: UInt64 = 0) {
        isLeaf = true
        self.keys = ChunkedArray()
        children = ChunkedArray()
        body = []
        offsets = []
        pendingValues = []
        self.owner = owner
        self.origin = origin
        branchBytes = 0
        for (key, entry) in zip(keys, entries) { insertEntry(key, entry, at: offsets.count) }
    }

    convenience init(branch keys: [Key], children: [ChildRef], owner: UInt64, origin: UInt64 = 0) {
        self.init(branch: ChunkedArray(keys), children: ChunkedArray(children), owner: owner, origin: origin)
    }

    init(branch keys: ChunkedArray<Key>, children: ChunkedArray<ChildRef>, owner: UInt64, origin: UInt64 = 0) {
        isLeaf = false
        self.keys = keys
        self.children = children
        body = []
        offsets = []
        pendingValues = []
        self.owner = owner
        self.origin = origin
        branchBytes = keys.enumerated().reduce(0) { $0 + Node.branchSize(key: $1.offset == 0 ? [] : $1.element) }
    }

    /// A leaf from packed entries.
    init(leafBody body: [UInt8], offsets: [Int32], pendingValues: [[UInt8]], owner: UInt64, origin: UInt64) {
        isLeaf = true
        keys = ChunkedArray()
        children = ChunkedArray()
        self.body = body
        self.offsets = offsets
        self.pendingValues = pendingValues
        self.owner = owner
        self.origin = origin
        branchBytes = 0
    }

    /// A node with every field given, for copies.
    private init(copying node: Node, owner: UInt64) {
        isLeaf = node.isLeaf
        keys = node.keys
        children = node.children
        body = node.body
        offsets = node.offsets
        pendingValues = node.pendingValues
        self.owner = owner
        origin = 0
        branchBytes = node.branchBytes
    }

    /// A mutable copy owned by transaction `owner`. The arrays are shared until the first change (copy-on-write);
    /// a leaf's are plain bytes and integers, so that first change copies them with two memcpys.
    func copy(owner: UInt64) -> Node { Node(copying: self, owner: owner) }

    /// The exact encoded body size; the node fits its page iff this is at most the page body's capacity.
    var byteSize: Int {
        get { isLeaf ? body.count : branchBytes }
        set { if !isLeaf { branchBytes = newValue } }
    }

    /// Entries in a leaf, or children in a branch.
    var count: Int { isLeaf ? offsets.count : keys.count }

    static func leafSize(key: Key, value: StoredValue) -> Int { LeafEntry.overhead + key.count + value.encodedSize }
    static func branchSize(key: Key) -> Int { 2 + key.count + 8 }

    /// Index of the first key not less than `key`.
    func lowerBound(_ key: Key) -> Int {
        guard isLeaf else {
            var low = 0
            var high = keys.count
            while low < high {
                let mid = (low + high) / 2
                if keys[mid].precedes(key) { low = mid + 1 } else { high = mid }
            }
            return low
        }
        return body.withUnsafeBytes { bytes in
            key.withUnsafeBytes { wanted in
                offsets.withUnsafeBufferPointer { starts in
                    var low = 0
                    var high = starts.count
                    while low < high {
                        let mid = (low + high) / 2
                        if LeafLayout.compare(LeafLayout.key(bytes, at: Int(starts[mid])), wanted) < 0 {
                            low = mid + 1
                        } else {
                            high = mid
                        }
                    }
                    return low
                }
            }
        }
    }

    /// In a branch: the child whose range holds `key`.
    func childIndex(for key: Key) -> Int {
        var low = 1
        var high = keys.count
        while low < high {
            let mid = (low + high) / 2
            if key.precedes(keys[mid]) { high = mid } else { low = mid + 1 }
        }
        return low - 1
    }

    // MARK: Leaf entries in place

    /// Where entry `index` ends in `body`.
    func entryEnd(_ index: Int) -> Int { index + 1 < offsets.count ? Int(offsets[index + 1]) : body.count }

    /// Whether leaf entry `index` exists and its key equals `key`.
    func hasKey(_ key: Key, at index: Int) -> Bool {
        guard index < offsets.count else { return false }
        return body.withUnsafeBytes { bytes in
            key.withUnsafeBytes { LeafLayout.compare(LeafLayout.key(bytes, at: Int(offsets[index])), $0) == 0 }
        }
    }

    /// Leaf entry `index`'s key compared with `key`: negative, zero or positive.
    func compareKey(at index: Int, with key: Key) -> Int {
        body.withUnsafeBytes { bytes in
            key.withUnsafeBytes { LeafLayout.compare(LeafLayout.key(bytes, at: Int(offsets[index])), $0) }
        }
    }

    /// A copy of leaf entry `index`'s key.
    func key(at index: Int) -> Key {
        body.withUnsafeBytes { Key(LeafLayout.key($0, at: Int(offsets[index]))) }
    }

    /// Runs `body` with a leaf's encoded entries and where each starts, borrowed once for a walk over many entries
    /// (each entry accessor borrows them anew).
    @inline(__always)
    func withLeafBytes<T>(_ body: (UnsafeRawBufferPointer, UnsafeBufferPointer<Int32>) throws -> T) rethrows -> T {
        try self.body.withUnsafeBytes { bytes in try offsets.withUnsafeBufferPointer { try body(bytes, $0) } }
    }

    /// Leaf entry `index`'s fixed fields.
    func header(at index: Int) -> EntryHeader {
        body.withUnsafeBytes { LeafLayout.header($0, at: Int(offsets[index])) }
    }

    /// A copy of leaf entry `index` (its value bytes copied if inline).
    func entry(at index: Int) -> LeafEntry {
        let header = header(at: index)
        return LeafEntry(
            value: storedValue(header), version: header.version, modRevision: header.modRevision,
            expiresAt: header.expiresAt)
    }

    /// Where the value of the leaf entry with `header` lives (inline bytes copied).
    func storedValue(_ header: EntryHeader) -> StoredValue {
        switch header.flags {
        case LeafLayout.overflowFlag: .overflow(page: header.reference, length: header.valueLength)
        case LeafLayout.pendingFlag: .pending(pendingValues[Int(header.reference)])
        default: .inline(Array(body[header.valueOffset..<(header.valueOffset + header.valueLength)]))
        }
    }

    /// Every key (a leaf's are copied out), for checks off the hot path.
    var allKeys: [Key] { isLeaf ? (0..<count).map { key(at: $0) } : Array(keys) }

    /// Every leaf entry, copied, for checks off the hot path.
    var allEntries: [LeafEntry] { isLeaf ? (0..<count).map { entry(at: $0) } : [] }

    /// Inserts an entry at `index` of a leaf (the caller keeps keys ascending).
    func insertEntry(_ key: Key, _ entry: LeafEntry, at index: Int) {
        let start = index < offsets.count ? Int(offsets[index]) : body.count
        let size = Node.leafSize(key: key, value: entry.value)
        resize(start..<start, to: size)
        write(key, entry, at: start)
        offsets.insert(Int32(start), at: index)
        shiftOffsets(after: index, by: size)
    }

    /// Replaces leaf entry `index` (same key) with `entry`.
    func replaceEntry(at index: Int, key: Key, with entry: LeafEntry) {
        let start = Int(offsets[index])
        let oldSize = entryEnd(index) - start
        let size = Node.leafSize(key: key, value: entry.value)
        if size != oldSize { resize(start..<(start + oldSize), to: size) }
        write(key, entry, at: start)
        shiftOffsets(after: index, by: size - oldSize)
    }

    /// Removes leaf entry `index`.
    func removeEntry(at index: Int) {
        let start = Int(offsets[index])
        let size = entryEnd(index) - start
        resize(start..<(start + size), to: 0)
        offsets.remove(at: index)
        shiftOffsets(after: index - 1, by: -size)
    }

    /// Moves leaf entries `index...` into a new leaf owned by `owner` and returns it. The new leaf's body has room
    /// for `reserve` bytes, so filling it does not reallocate (and a full leaf's body fits its page's size exactly).
    func splitLeaf(at index: Int, owner: UInt64, reserve: Int) -> Node {
        let start = Int(offsets[index])
        var rightBody: [UInt8] = []
        rightBody.reserveCapacity(Swift.max(reserve, body.count - start))
        rightBody.append(contentsOf: body[start...])
        let right = Node(
            leafBody: rightBody, offsets: offsets[index...].map { $0 - Int32(start) },
            pendingValues: pendingValues, owner: owner, origin: 0)
        body.removeLast(body.count - start)
        offsets.removeLast(offsets.count - index)
        return right
    }

    /// A copy of this leaf's body with every pending value replaced by the overflow run `store` wrote it to.
    func cleanBody(storing store: ([UInt8]) throws -> UInt64) rethrows -> [UInt8] {
        // Entries refer to pending values by index, so a leaf without any has no pending entry to scan for.
        if pendingValues.isEmpty { return body }
        var clean = body
        for start in offsets {
            let header = body.withUnsafeBytes { LeafLayout.header($0, at: Int(start)) }
            guard header.flags == LeafLayout.pendingFlag else { continue }
            let page = try store(pendingValues[Int(header.reference)])
            clean[header.valueOffset - LeafLayout.valueFromFlags] = LeafLayout.overflowFlag
            clean.storeLE(page, at: header.valueOffset)
        }
        return clean
    }

    /// Makes `range` of the body `size` bytes long, moving the bytes after it; the new bytes are to be overwritten.
    private func resize(_ range: Range<Int>, to size: Int) {
        let delta = size - range.count
        let tail = body.count - range.upperBound
        // Zeros to grow by, from a temporary buffer: a shared zero array's slices are retained and released per
        // insert, and appending `repeatElement` copies byte by byte.
        if delta > 0 {
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: delta) { zeros in
                zeros.initialize(repeating: 0)
                body.append(contentsOf: UnsafeBufferPointer(zeros))
            }
        }
        if tail > 0 {
            body.withUnsafeMutableBytes { raw in
                let base = raw.baseAddress!
                memmove(base + range.upperBound + delta, base + range.upperBound, tail)
            }
        }
        if delta < 0 { body.removeLast(-delta) }
    }

    private func shiftOffsets(after index: Int, by delta: Int) {
        guard delta != 0, index + 1 < offsets.count else { return }
        let shift = Int32(delta)
        offsets.withUnsafeMutableBufferPointer { starts in
            for position in (index + 1)..<starts.count { starts[position] += shift }
        }
    }

    /// Encodes `entry` into the already sized bytes at `start`.
    private func write(_ key: Key, _ entry: LeafEntry, at start: Int) {
        var flags: UInt8 = 0
        var reference: UInt64 = 0
        switch entry.value {
        case .inline: break
        case .overflow(let page, _):
            flags = LeafLayout.overflowFlag
            reference = page
        case .pending(let bytes):
            flags = LeafLayout.pendingFlag
            reference = UInt64(pendingValues.count)
            pendingValues.append(bytes)
        }
        body.withUnsafeMutableBytes { raw in
            var at = start
            func put<T: FixedWidthInteger>(_ value: T) {
                raw.storeBytes(of: value.littleEndian, toByteOffset: at, as: T.self)
                at += MemoryLayout<T>.size
            }
            put(UInt16(key.count))
            if !key.isEmpty {
                key.withUnsafeBytes {
                    raw.baseAddress!.advanced(by: at).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
                }
            }
            at += key.count
            put(flags)
            put(entry.version)
            put(entry.modRevision)
            put(entry.expiresAt)
            put(UInt32(entry.value.length))
            if case .inline(let bytes) = entry.value {
                if !bytes.isEmpty {
                    bytes.withUnsafeBytes {
                        raw.baseAddress!.advanced(by: at).copyMemory(from: $0.baseAddress!, byteCount: $0.count)
                    }
                }
            } else {
                put(reference)
            }
        }
    }
}

/// The byte layout of one leaf entry (docs/FORMAT.md, "Leaf pages"), read from a buffer whose bounds were checked
/// when the leaf was decoded or built.
enum LeafLayout {
    static let overflowFlag: UInt8 = 1
    /// Memory only: the value waits in the node's `pendingValues` for the next checkpoint.
    static let pendingFlag: UInt8 = 2
    /// Bytes from the flags byte to the value (flags, version, modRevision, expiry, value length).
    static let valueFromFlags = 1 + 8 + 8 + 8 + 4

    @inline(__always)
    static func key(_ bytes: UnsafeRawBufferPointer, at start: Int) -> UnsafeRawBufferPointer {
        let length = Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: start, as: UInt16.self)))
        return UnsafeRawBufferPointer(rebasing: bytes[(start + 2)..<(start + 2 + length)])
    }

    @inline(__always)
    static func header(_ bytes: UnsafeRawBufferPointer, at start: Int) -> EntryHeader {
        let keyLength = Int(UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: start, as: UInt16.self)))
        let fields = start + 2 + keyLength
        func load<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
            T(littleEndian: bytes.loadUnaligned(fromByteOffset: fields + offset, as: T.self))
        }
        let flags = bytes[fields]
        let valueOffset = fields + valueFromFlags
        return EntryHeader(
            flags: flags, version: load(1, UInt64.self), modRevision: load(9, UInt64.self),
            expiresAt: load(17, Int64.self), valueLength: Int(load(25, UInt32.self)), valueOffset: valueOffset,
            reference: flags == 0 ? 0 : UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: valueOffset, as: UInt64.self)))
    }

    /// How many leading bytes two keys share.
    static func commonPrefix(_ left: UnsafeRawBufferPointer, _ right: UnsafeRawBufferPointer) -> Int {
        let common = min(left.count, right.count)
        var index = 0
        while index < common, left[index] == right[index] { index += 1 }
        return index
    }

    /// Unsigned lexicographic comparison: negative, zero or positive.
    @inline(__always)
    static func compare(_ left: UnsafeRawBufferPointer, _ right: UnsafeRawBufferPointer) -> Int {
        let common = min(left.count, right.count)
        if common > 0 {
            let order = memcmp(left.baseAddress!, right.baseAddress!, common)
            if order != 0 { return Int(order) }
        }
        return left.count - right.count
    }
}

/// Encodes nodes into pages and decodes pages into nodes.
enum NodeCodec {
    /// The page bytes of `node`, sealed. A branch's children must all be pages; a leaf must hold no pending values
    /// (a checkpoint writes them to overflow pages first, see ``Node/cleanBody(storing:)``).
    /// - Throws: `corrupted` naming page `number` of `path` if the node does not fit a page (the tree it came from
    ///   was built from damaged pages that decoding let through): a last line of defence, never a trap.
    static func encode(_ node: Node, number: UInt64, lsn: UInt64, pageSize: Int, path: String) throws -> [UInt8] {
        guard node.byteSize <= pageSize - Page.headerSize, node.count <= Int(UInt16.max) else {
            throw EventStoreError.corrupted(
                location: "\(path) page \(number)",
                detail: "a node of \(node.byteSize) bytes and \(node.count) entries does not fit a \(pageSize)-byte page")
        }
        var page = Page.blank(size: pageSize, type: node.isLeaf ? .leaf : .branch, number: number, lsn: lsn)
        page.storeLE(UInt16(node.count), at: Page.countOffset)
        if node.isLeaf {
            page.replaceSubrange(Page.headerSize..<(Page.headerSize + node.body.count), with: node.body)
        } else {
            var body = PageBytesWriter(capacity: node.byteSize)
            for (index, key) in node.keys.enumerated() {
                let storedKey = index > 0 ? key : []
                body.u16(UInt16(storedKey.count))
                body.raw(storedKey)
                if case .page(let child) = node.children[index] { body.u64(child) }
            }
            page.replaceSubrange(Page.headerSize..<(Page.headerSize + body.bytes.count), with: body.bytes)
        }
        Page.seal(&page)
        return page
    }

    /// Decodes a checked branch or leaf page.
    static func decode(_ page: [UInt8], number: UInt64, path: String) throws -> Node {
        let location = "\(path) page \(number)"
        let count = Int(page.loadLE(UInt16.self, at: Page.countOffset))
        switch PageType(rawValue: page[Page.typeOffset]) {
        case .leaf:
            return try decodeLeaf(page, count: count, number: number, location: location)
        case .branch:
            var reader = PageBytesReader(page, offset: Page.headerSize)
            var keys: [Key] = []
            var children: [ChildRef] = []
            keys.reserveCapacity(count)
            children.reserveCapacity(count)
            do {
                for _ in 0..<count {
                    keys.append(try reader.raw(Int(try reader.u16())))
                    children.append(.page(try reader.u64()))
                }
            } catch is PageBytesReader.Overrun {
                throw EventStoreError.corrupted(location: location, detail: "an entry runs past the end of the page")
            }
            guard count > 0 else { throw EventStoreError.corrupted(location: location, detail: "empty branch page") }
            try checkZeroTail(page, from: reader.offset, location)
            return Node(branch: keys, children: children, owner: 0, origin: number)
        default:
            throw EventStoreError.corrupted(location: location, detail: "not a B+tree page (type \(page[4]))")
        }
    }

    /// Walks a leaf's entries (at least one) once, checking that each lies inside the page, follows the one before in
    /// key order, has known flags, takes at most a quarter of the page body (the rule that keeps every split
    /// fitting), has a version below the counter ceiling and names an overflow run a file can hold, and that only
    /// zeros follow the last; keeps the body as it is: later reads of the entries trust these bounds.
    private static func decodeLeaf(_ page: [UInt8], count: Int, number: UInt64, location: String) throws -> Node {
        // Deletes drop empty leaves (and an empty tree has no root), so an empty leaf page is damage that hides keys.
        guard count > 0 else { throw EventStoreError.corrupted(location: location, detail: "empty leaf page") }
        var offsets: [Int32] = []
        offsets.reserveCapacity(count)
        let end = try page.withUnsafeBytes { raw -> Int in
            let limit = raw.count
            let quarter = (limit - Page.headerSize) / 4
            var previous: UnsafeRawBufferPointer?
            var at = Page.headerSize
            for _ in 0..<count {
                offsets.append(Int32(at - Page.headerSize))
                guard at + 2 <= limit else { throw overrun(location) }
                let keyLength = Int(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: at, as: UInt16.self)))
                let fields = at + 2 + keyLength
                guard fields + LeafLayout.valueFromFlags <= limit else { throw overrun(location) }
                let key = LeafLayout.key(raw, at: at)
                if let previous, LeafLayout.compare(previous, key) >= 0 {
                    throw EventStoreError.corrupted(
                        location: location, detail: "entry \(offsets.count - 1)'s key is not above the one before")
                }
                previous = key
                let flags = raw[fields]
                guard flags <= LeafLayout.overflowFlag else {
                    throw EventStoreError.corrupted(
                        location: location, detail: "entry \(offsets.count - 1) has unknown flags \(flags)")
                }
                let valueLength = Int(
                    UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: fields + 25, as: UInt32.self)))
                // A damaged length must not turn into a read of gigabytes of overflow pages.
                guard valueLength <= PageFileKeyValueStore.maximumValueLength else {
                    throw EventStoreError.corrupted(
                        location: location,
                        detail: "entry \(offsets.count - 1) claims a \(valueLength)-byte value, over the limit")
                }
                let start = Page.headerSize + Int(offsets[offsets.count - 1])
                at = fields + LeafLayout.valueFromFlags + (flags == LeafLayout.overflowFlag ? 8 : valueLength)
                guard at <= limit else { throw overrun(location) }
                try checkEntry(raw, fields: fields, size: at - start, quarter: quarter, index: offsets.count - 1, location)
            }
            return at
        }
        try checkZeroTail(page, from: end, location)
        return Node(
            leafBody: Array(page[Page.headerSize..<end]), offsets: offsets, pendingValues: [], owner: 0,
            origin: number)
    }

    /// The checks of one leaf entry beyond its bounds (see `decodeLeaf`), given its fields' offset and its size.
    private static func checkEntry(
        _ raw: UnsafeRawBufferPointer, fields: Int, size: Int, quarter: Int, index: Int, _ location: String
    ) throws {
        func load(_ offset: Int) -> UInt64 {
            UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: fields + offset, as: UInt64.self))
        }
        guard size <= quarter else {
            throw EventStoreError.corrupted(
                location: location, detail: "entry \(index) takes \(size) bytes, over a quarter of the page body")
        }
        guard load(1) < MetaPage.counterCeiling, load(9) < MetaPage.counterCeiling else {
            throw EventStoreError.corrupted(location: location, detail: "entry \(index) has an impossible version or revision")
        }
        guard raw[fields] == LeafLayout.overflowFlag else { return }
        let first = load(LeafLayout.valueFromFlags)
        let length = UInt64(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: fields + 25, as: UInt32.self)))
        let chunk = UInt64(raw.count - Page.headerSize)
        // Pages below the last one any file can reach (as PageReader's offsets): runs' arithmetic cannot overflow.
        let reachable = UInt64(Int64.max) / UInt64(raw.count)
        guard first >= 2, first < reachable, max(1, (length + chunk - 1) / chunk) <= reachable - first else {
            throw EventStoreError.corrupted(
                location: location, detail: "entry \(index) names overflow page \(first), outside any file")
        }
    }

    /// Throws `corrupted` unless the page's bytes from `start` (where its entries end) are zero, as every written
    /// page's are: a count lowered under a valid checksum would otherwise hide the entries after it.
    private static func checkZeroTail(_ page: [UInt8], from start: Int, _ location: String) throws {
        let clean = page.withUnsafeBytes { raw in raw[start...].allSatisfy { $0 == 0 } }
        guard clean else {
            throw EventStoreError.corrupted(location: location, detail: "bytes after the last entry are not zero")
        }
    }

    private static func overrun(_ location: String) -> EventStoreError {
        EventStoreError.corrupted(location: location, detail: "an entry runs past the end of the page")
    }
}
