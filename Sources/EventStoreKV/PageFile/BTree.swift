// BTree: lookups and range scans over a snapshot root (readers), and copy-on-write puts and deletes (the writer).
//
// Invariants:
// - Readers only follow references; they never mutate, so any number run at once on any published root.
// - The writer never changes a node reachable from a published root: `own` copies a node into the current
//   transaction before the first change (path copying) and records the page it came from as freed.
// - Every node fits its page: a node that grows past `capacity` splits at once. Entries are at most capacity / 4
//   (keys are limited and large values go to overflow pages), so every split yields two fitting halves.
// - Right-edge appends (the insert landed at the end of the node) split so the left node stays full and the new
//   right node starts with just the new entry: monotonic keys fill pages instead of leaving them half empty.
// - Deletes remove empty nodes and collapse a root with one child; underfull nodes are not merged (compact()
//   rebuilds the tree densely).

import EventStore

/// Read operations on a tree snapshot.
enum BTree {
    /// The entry stored under `key` (expired or not), or nil.
    static func find(_ key: Key, root: ChildRef?, reader: PageReader) throws -> LeafEntry? {
        guard let root else { return nil }
        var node = try reader.resolve(root)
        while !node.isLeaf { node = try reader.resolve(node.children[node.childIndex(for: key)]) }
        let index = node.lowerBound(key)
        guard index < node.keys.count, node.keys[index] == key else { return nil }
        return node.entries[index]
    }

    /// The entries stored under `keys` (expired or not), in order. Consecutive keys that fall into the same leaf
    /// (sorted keys usually do) are found without descending the tree again.
    static func findAll(_ keys: [Key], root: ChildRef?, reader: PageReader) throws -> [LeafEntry?] {
        guard let root else { return Array(repeating: nil, count: keys.count) }
        let top = try reader.resolve(root)
        var leaf: Node?
        var lower: Key?
        var upper: Key?
        var result: [LeafEntry?] = []
        result.reserveCapacity(keys.count)
        for key in keys {
            let inLeaf =
                leaf != nil && !(lower.map { key.precedes($0) } ?? false)
                && (upper.map { key.precedes($0) } ?? true)
            if !inLeaf {
                var node = top
                lower = nil
                upper = nil
                while !node.isLeaf {
                    let index = node.childIndex(for: key)
                    if index > 0 { lower = node.keys[index] }
                    if index + 1 < node.keys.count { upper = node.keys[index + 1] }
                    node = try reader.resolve(node.children[index])
                }
                leaf = node
            }
            guard let leaf else { break }
            let index = leaf.lowerBound(key)
            result.append(index < leaf.keys.count && leaf.keys[index] == key ? leaf.entries[index] : nil)
        }
        return result
    }

    /// Calls `visit` for entries in `range` in `direction` order until it returns false.
    static func scan(
        _ range: KeyRange, direction: ScanDirection, root: ChildRef?, reader: PageReader,
        visit: (Key, LeafEntry) throws -> Bool
    ) throws {
        guard let root else { return }
        _ = try scan(try reader.resolve(root), range: range, direction: direction, reader: reader, visit: visit)
    }

    private static func scan(
        _ node: Node, range: KeyRange, direction: ScanDirection, reader: PageReader,
        visit: (Key, LeafEntry) throws -> Bool
    ) throws -> Bool {
        if node.isLeaf {
            let start = node.lowerBound(range.lowerBound)
            let end = range.upperBound.map { node.lowerBound($0) } ?? node.keys.count
            guard start < end else { return true }
            if direction == .forward {
                for index in start..<end where !(try visit(node.keys[index], node.entries[index])) { return false }
            } else {
                for index in (start..<end).reversed() where !(try visit(node.keys[index], node.entries[index])) {
                    return false
                }
            }
            return true
        }
        let first = node.childIndex(for: range.lowerBound)
        let last = range.upperBound.map { node.childIndex(for: $0) } ?? node.children.count - 1
        guard first <= last else { return true }
        let order: [Int] = direction == .forward ? Array(first...last) : Array((first...last).reversed())
        for index in order {
            let child = try reader.resolve(node.children[index])
            guard try scan(child, range: range, direction: direction, reader: reader, visit: visit) else { return false }
        }
        return true
    }
}

/// The writer's copy-on-write mutations for one transaction.
struct TreeWriter {
    let reader: PageReader
    /// The transaction whose nodes may be mutated in place.
    let transaction: UInt64
    /// Largest encoded node body.
    let capacity: Int
    /// Pages no longer referenced by the tree being built (replaced nodes, overwritten overflow runs).
    var freed: [UInt64] = []
    /// Nodes this transaction added to the set of nodes not yet checkpointed (copies of clean pages, splits).
    var dirtied = 0

    init(reader: PageReader, transaction: UInt64) {
        self.reader = reader
        self.transaction = transaction
        capacity = reader.pageSize - Page.headerSize
    }

    /// Stores `entry` under `key`; returns the entry it replaced.
    @discardableResult
    mutating func put(_ key: Key, _ entry: LeafEntry, root: inout ChildRef?) throws -> LeafEntry? {
        try put(key, root: &root) { _ in entry }
    }

    /// Stores `make(old)` under `key`, where `old` is the entry it replaces (nil if none), in one descent; returns
    /// the entry it replaced.
    @discardableResult
    mutating func put(_ key: Key, root: inout ChildRef?, make: (LeafEntry?) -> LeafEntry) throws -> LeafEntry? {
        guard let current = root else {
            let leaf = Node(leaf: [key], entries: [make(nil)], owner: transaction)
            root = .node(leaf)
            return nil
        }
        let node = try own(current)
        let (old, split) = try insert(key, make, into: node)
        if let (separator, right) = split {
            root = .node(Node(branch: [[], separator], children: [.node(node), .node(right)], owner: transaction))
        } else {
            root = .node(node)
        }
        return old
    }

    /// Removes `key`; returns the entry removed, or nil if it was absent (then nothing changes).
    @discardableResult
    mutating func delete(_ key: Key, root: inout ChildRef?) throws -> LeafEntry? {
        guard let current = root, try BTree.find(key, root: current, reader: reader) != nil else { return nil }
        let node = try own(current)
        let (old, empty) = try remove(key, from: node)
        if empty {
            root = nil
            return old
        }
        var top = node
        while !top.isLeaf, top.children.count == 1 { top = try own(top.children[0]) }
        root = .node(top)
        return old
    }

    /// The node `reference` names, owned by this transaction (copied on first change).
    private mutating func own(_ reference: ChildRef) throws -> Node {
        if case .node(let node) = reference, node.owner == transaction { return node }
        let node = try reader.resolve(reference)
        if node.origin != 0 {
            freed.append(node.origin)
            dirtied += 1
        }
        return node.copy(owner: transaction)
    }

    private mutating func release(_ value: StoredValue) {
        guard case .overflow(let first, let length) = value else { return }
        for offset in 0..<reader.overflowPages(length) { freed.append(first + UInt64(offset)) }
    }

    private mutating func insert(_ key: Key, _ make: (LeafEntry?) -> LeafEntry, into node: Node) throws
        -> (old: LeafEntry?, split: (Key, Node)?)
    {
        if node.isLeaf {
            let index = node.lowerBound(key)
            if index < node.keys.count, node.keys[index] == key {
                let old = node.entries[index]
                let entry = make(old)
                release(old.value)
                node.byteSize += Node.leafSize(key: key, value: entry.value) - Node.leafSize(key: key, value: old.value)
                node.entries[index] = entry
                return (old, node.byteSize > capacity ? split(node, rightEdge: false) : nil)
            }
            let entry = make(nil)
            node.keys.insert(key, at: index)
            node.entries.insert(entry, at: index)
            node.byteSize += Node.leafSize(key: key, value: entry.value)
            let appended = index == node.keys.count - 1
            return (nil, node.byteSize > capacity ? split(node, rightEdge: appended) : nil)
        }
        let index = node.childIndex(for: key)
        let child = try own(node.children[index])
        node.children[index] = .node(child)
        let (old, childSplit) = try insert(key, make, into: child)
        guard let (separator, right) = childSplit else { return (old, nil) }
        node.keys.insert(separator, at: index + 1)
        node.children.insert(.node(right), at: index + 1)
        node.byteSize += Node.branchSize(key: separator)
        let appended = index + 1 == node.keys.count - 1
        return (old, node.byteSize > capacity ? split(node, rightEdge: appended) : nil)
    }

    /// Splits an overfull node in two; returns the separator and the new right node.
    private mutating func split(_ node: Node, rightEdge: Bool) -> (Key, Node) {
        dirtied += 1
        let count = node.keys.count
        var at = count - 1
        if !rightEdge {
            var size = 0
            at = 0
            while at < count - 1, size < node.byteSize / 2 {
                size += node.isLeaf
                    ? Node.leafSize(key: node.keys[at], value: node.entries[at].value)
                    : Node.branchSize(key: at == 0 ? [] : node.keys[at])
                at += 1
            }
            at = max(1, min(count - 1, at))
        }
        let separator = node.keys[at]
        let right: Node
        if node.isLeaf {
            right = Node(leaf: Array(node.keys[at...]), entries: Array(node.entries[at...]), owner: transaction)
            node.keys.removeSubrange(at...)
            node.entries.removeSubrange(at...)
        } else {
            right = Node(branch: Array(node.keys[at...]), children: Array(node.children[at...]), owner: transaction)
            node.keys.removeSubrange(at...)
            node.children.removeSubrange(at...)
        }
        node.byteSize = node.isLeaf
            ? zip(node.keys, node.entries).reduce(0) { $0 + Node.leafSize(key: $1.0, value: $1.1.value) }
            : node.keys.enumerated().reduce(0) { $0 + Node.branchSize(key: $1.offset == 0 ? [] : $1.element) }
        return (separator, right)
    }

    private mutating func remove(_ key: Key, from node: Node) throws -> (old: LeafEntry?, empty: Bool) {
        if node.isLeaf {
            let index = node.lowerBound(key)
            guard index < node.keys.count, node.keys[index] == key else { return (nil, node.keys.isEmpty) }
            let old = node.entries[index]
            release(old.value)
            node.byteSize -= Node.leafSize(key: key, value: old.value)
            node.keys.remove(at: index)
            node.entries.remove(at: index)
            return (old, node.keys.isEmpty)
        }
        let index = node.childIndex(for: key)
        let child = try own(node.children[index])
        node.children[index] = .node(child)
        let (old, childEmpty) = try remove(key, from: child)
        if childEmpty {
            node.keys.remove(at: index)
            node.children.remove(at: index)
            node.byteSize = node.keys.enumerated().reduce(0) {
                $0 + Node.branchSize(key: $1.offset == 0 ? [] : $1.element)
            }
        }
        return (old, node.children.isEmpty)
    }
}
