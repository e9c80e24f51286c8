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

    /// Whether the entry is visible at `now` (nanoseconds since 1970).
    func isLive(at now: Int64) -> Bool { expiresAt == 0 || now < expiresAt }

    /// Fixed bytes of a leaf entry besides its key and value bytes: key length, flags, version, modRevision,
    /// expiry and value length.
    static let overhead = 2 + 1 + 8 + 8 + 8 + 4
}

/// A reference from a branch to a child: a page on disk, or a node built in memory since the last checkpoint.
enum ChildRef: Sendable {
    case page(UInt64)
    case node(Node)
}

/// A B+tree node. See the invariants at the top of this file.
final class Node: @unchecked Sendable {
    // @unchecked: mutable fields are written only by the single writer, under PageFileKeyValueStore's writer lock,
    // while `owner` is the transaction being built; the node is unreachable from any published snapshot until that
    // transaction is published (through the published-state Mutex), and is never mutated afterwards.
    let isLeaf: Bool
    var keys: [Key]
    var entries: [LeafEntry]
    var children: [ChildRef]
    var owner: UInt64
    let origin: UInt64
    var byteSize: Int

    init(leaf keys: [Key], entries: [LeafEntry], owner: UInt64, origin: UInt64 = 0) {
        isLeaf = true
        self.keys = keys
        self.entries = entries
        children = []
        self.owner = owner
        self.origin = origin
        byteSize = zip(keys, entries).reduce(0) { $0 + Node.leafSize(key: $1.0, value: $1.1.value) }
    }

    init(branch keys: [Key], children: [ChildRef], owner: UInt64, origin: UInt64 = 0) {
        isLeaf = false
        self.keys = keys
        entries = []
        self.children = children
        self.owner = owner
        self.origin = origin
        byteSize = keys.enumerated().reduce(0) { $0 + Node.branchSize(key: $1.offset == 0 ? [] : $1.element) }
    }

    /// A node with every field given, for copies that already know their encoded size.
    private init(
        isLeaf: Bool, keys: [Key], entries: [LeafEntry], children: [ChildRef], owner: UInt64, byteSize: Int
    ) {
        self.isLeaf = isLeaf
        self.keys = keys
        self.entries = entries
        self.children = children
        self.owner = owner
        origin = 0
        self.byteSize = byteSize
    }

    /// A mutable copy owned by transaction `owner`. The arrays are shared until the first change (copy-on-write)
    /// and the size is carried over, so copying costs no walk over the entries.
    func copy(owner: UInt64) -> Node {
        Node(isLeaf: isLeaf, keys: keys, entries: entries, children: children, owner: owner, byteSize: byteSize)
    }

    static func leafSize(key: Key, value: StoredValue) -> Int { LeafEntry.overhead + key.count + value.encodedSize }
    static func branchSize(key: Key) -> Int { 2 + key.count + 8 }

    /// Index of the first key not less than `key`.
    func lowerBound(_ key: Key) -> Int {
        var low = 0
        var high = keys.count
        while low < high {
            let mid = (low + high) / 2
            if keys[mid].precedes(key) { low = mid + 1 } else { high = mid }
        }
        return low
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
}

/// Encodes nodes into pages and decodes pages into nodes.
enum NodeCodec {
    private static let overflowFlag: UInt8 = 1

    /// The page bytes of `node` (all children must be pages and all values inline or overflow), sealed.
    static func encode(_ node: Node, number: UInt64, lsn: UInt64, pageSize: Int) -> [UInt8] {
        var page = Page.blank(size: pageSize, type: node.isLeaf ? .leaf : .branch, number: number, lsn: lsn)
        page.storeLE(UInt16(node.keys.count), at: Page.countOffset)
        var body = PageBytesWriter(capacity: node.byteSize)
        for (index, key) in node.keys.enumerated() {
            let storedKey = node.isLeaf || index > 0 ? key : []
            body.u16(UInt16(storedKey.count))
            body.raw(storedKey)
            if node.isLeaf {
                encode(node.entries[index], into: &body)
            } else if case .page(let child) = node.children[index] {
                body.u64(child)
            }
        }
        page.replaceSubrange(Page.headerSize..<(Page.headerSize + body.bytes.count), with: body.bytes)
        Page.seal(&page)
        return page
    }

    private static func encode(_ entry: LeafEntry, into body: inout PageBytesWriter) {
        let isOverflow: Bool
        if case .overflow = entry.value { isOverflow = true } else { isOverflow = false }
        body.u8(isOverflow ? overflowFlag : 0)
        body.u64(entry.version)
        body.u64(entry.modRevision)
        body.i64(entry.expiresAt)
        body.u32(UInt32(entry.value.length))
        switch entry.value {
        case .inline(let bytes): body.raw(bytes)
        case .overflow(let first, _): body.u64(first)
        case .pending: body.u64(0)  // Never encoded: checkpoints write pending values out first.
        }
    }

    /// Decodes a checked branch or leaf page.
    static func decode(_ page: [UInt8], number: UInt64, path: String) throws -> Node {
        let location = "\(path) page \(number)"
        let count = Int(page.loadLE(UInt16.self, at: Page.countOffset))
        var reader = PageBytesReader(page, offset: Page.headerSize)
        var keys: [Key] = []
        keys.reserveCapacity(count)
        do {
            switch PageType(rawValue: page[Page.typeOffset]) {
            case .leaf:
                var entries: [LeafEntry] = []
                entries.reserveCapacity(count)
                for _ in 0..<count {
                    keys.append(try reader.raw(Int(try reader.u16())))
                    entries.append(try decodeEntry(&reader))
                }
                return Node(leaf: keys, entries: entries, owner: 0, origin: number)
            case .branch:
                var children: [ChildRef] = []
                children.reserveCapacity(count)
                for _ in 0..<count {
                    keys.append(try reader.raw(Int(try reader.u16())))
                    children.append(.page(try reader.u64()))
                }
                guard count > 0 else { throw EventStoreError.corrupted(location: location, detail: "empty branch page") }
                return Node(branch: keys, children: children, owner: 0, origin: number)
            default:
                throw EventStoreError.corrupted(location: location, detail: "not a B+tree page (type \(page[4]))")
            }
        } catch is PageBytesReader.Overrun {
            throw EventStoreError.corrupted(location: location, detail: "an entry runs past the end of the page")
        }
    }

    private static func decodeEntry(_ reader: inout PageBytesReader) throws -> LeafEntry {
        let flags = try reader.u8()
        let version = try reader.u64()
        let modRevision = try reader.u64()
        let expiresAt = try reader.i64()
        let length = Int(try reader.u32())
        let value: StoredValue =
            flags & overflowFlag != 0
            ? .overflow(page: try reader.u64(), length: length) : .inline(try reader.raw(length))
        return LeafEntry(value: value, version: version, modRevision: modRevision, expiresAt: expiresAt)
    }
}
