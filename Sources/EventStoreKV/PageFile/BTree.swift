// BTree: lookups and range scans over a snapshot root (readers), and copy-on-write puts and deletes (the writer).
//
// Invariants:
// - Readers only follow references; they never mutate, so any number run at once on any published root.
// - The writer never changes a node reachable from a published root: `own` copies a node into the current
//   transaction before the first change (path copying) and records the page it came from as freed.
//   The current transaction's id may be an open group's (GroupCommit.swift): its nodes are reachable only from
//   roots not yet published, so later commits of the group change them in place.
// - Every node fits its page: a node that grows past `capacity` splits at once. Entries are at most capacity / 4
//   (keys are limited and large values go to overflow pages), so every split yields two fitting halves.
// - Right-edge appends (the insert landed at the end of the node) split so the left node stays full and the new
//   right node starts with just the new entry: monotonic keys fill pages instead of leaving them half empty. An
//   append to the end of a run of keys that another run follows in the same leaf splits right after the new entry
//   for the same reason (see `splitAtRunEnd`). A leaf's body never grows past the room its copy reserved (a page
//   plus one entry header): a right-edge append that does not fit goes straight into the new right leaf, so full
//   leaves keep arrays the size of their page, which the checkpoint caches without copying.
// - Deletes remove empty nodes and collapse a root with one child; underfull nodes are not merged (compact()
//   rebuilds the tree densely).
// - Stored pages are not trusted to form a tree: every descent (`Descent`) stops with `corrupted` past
//   `maximumDepth` levels (a child naming an ancestor would loop forever), and a leaf reached whose first or last
//   key lies outside the separators that routed to it (a child naming another subtree) is `corrupted` too, never
//   returned as data. Overflow runs a replaced entry frees must lie in the store's pages.

import EventStore

/// One descent from the root: its depth, and the bounds of the keys the separators passed route to the node
/// reached (nil: unbounded). See the invariants at the top of this file.
struct Descent {
    private(set) var depth = 1
    private(set) var lower: Key?
    private(set) var upper: Key?

    init(depth: Int = 1, lower: Key? = nil, upper: Key? = nil) {
        self.depth = depth
        self.lower = lower
        self.upper = upper
    }

    /// The descent `path` describes (each branch passed, from the root, and the child taken): the bounds are the
    /// nearest branches' separators, found once at the leaf rather than carried down level by level, as a writer's
    /// descent, which keeps the path anyway, can do.
    init(path: [(node: Node, index: Int)]) {
        depth = path.count + 1
        lower = path.last { $0.index > 0 }.map { $0.node.keys[$0.index] }
        upper = path.last { $0.index + 1 < $0.node.keys.count }.map { $0.node.keys[$0.index + 1] }
    }

    /// Throws `corrupted` naming `branch`'s page if its children, at `depth` + 1, would lie deeper than
    /// ``BTree/maximumDepth``.
    static func checkDepth(_ depth: Int, below branch: Node, reader: PageReader) throws {
        guard depth < BTree.maximumDepth else {
            throw EventStoreError.corrupted(
                location: "\(reader.path) page \(branch.origin)",
                detail: "the tree is deeper than \(BTree.maximumDepth) levels here (a child names an ancestor)")
        }
    }

    /// The descent into child `index` of `branch`.
    /// - Throws: `corrupted` naming `branch`'s page if the child would lie deeper than ``BTree/maximumDepth``.
    func child(_ index: Int, of branch: Node, reader: PageReader) throws -> Descent {
        try Self.checkDepth(depth, below: branch, reader: reader)
        return Descent(
            depth: depth + 1, lower: index > 0 ? branch.keys[index] : lower,
            upper: index + 1 < branch.keys.count ? branch.keys[index + 1] : upper)
    }

    /// Throws `corrupted` naming `leaf`'s page unless its keys lie in `lower ..< upper`: two key comparisons.
    func check(_ leaf: Node, reader: PageReader) throws {
        let count = leaf.count
        guard count > 0 else { return }
        if let lower, leaf.compareKey(at: 0, with: lower) < 0 {
            throw misplaced(leaf, reader: reader, "its first key lies below the separator that routes to it")
        }
        if let upper, leaf.compareKey(at: count - 1, with: upper) >= 0 {
            throw misplaced(leaf, reader: reader, "its last key is not below the next separator")
        }
    }

    private func misplaced(_ leaf: Node, reader: PageReader, _ detail: String) -> EventStoreError {
        EventStoreError.corrupted(
            location: "\(reader.path) page \(leaf.origin)", detail: "a leaf in the wrong place in the tree: \(detail)")
    }
}

/// Read operations on a tree snapshot.
enum BTree {
    /// The most levels a tree may have, root and leaf included (docs/FORMAT.md): a tree grows a level only when its
    /// root splits, so no file can hold one nearly as deep.
    static let maximumDepth = 64

    /// The leaf whose key range holds `key`, found from `top` through `resolve`, checked as ``Descent`` says.
    static func leaf(
        for key: Key, from top: Node, reader: PageReader, resolve: (ChildRef) throws -> Node
    ) throws -> (leaf: Node, descent: Descent) {
        var node = top
        var descent = Descent()
        while !node.isLeaf {
            let index = node.childIndex(for: key)
            descent = try descent.child(index, of: node, reader: reader)
            node = try resolve(node.children[index])
        }
        try descent.check(node, reader: reader)
        return (node, descent)
    }

    /// The entry stored under `key` (expired or not), or nil.
    static func find(_ key: Key, root: ChildRef?, reader: PageReader) throws -> LeafEntry? {
        guard let root else { return nil }
        let node = try leaf(for: key, from: try reader.resolve(root), reader: reader, resolve: reader.resolve).leaf
        let index = node.lowerBound(key)
        return node.hasKey(key, at: index) ? node.entry(at: index) : nil
    }

    /// The entries stored under `keys` (expired or not), in order.
    static func findAll(_ keys: [Key], root: ChildRef?, reader: PageReader) throws -> [LeafEntry?] {
        var result: [LeafEntry?] = []
        result.reserveCapacity(keys.count)
        try findAll(keys, root: root, reader: reader) { _, leaf, slot in result.append(leaf.map { $0.entry(at: slot) }) }
        return result
    }

    /// Calls `visit` for each of `keys` in order with the leaf and entry index holding it (expired or not), or nil.
    /// Consecutive keys that fall into the same leaf (sorted keys usually do) are found without descending the tree
    /// again.
    static func findAll(
        _ keys: [Key], root: ChildRef?, reader: PageReader, visit: (Int, Node?, Int) throws -> Void
    ) throws {
        guard let root else {
            for index in keys.indices { try visit(index, nil, 0) }
            return
        }
        let top = try reader.resolve(root)
        var leaf: Node?
        var lower: Key?
        var upper: Key?
        for (position, key) in keys.enumerated() {
            let inLeaf =
                leaf != nil && !(lower.map { key.precedes($0) } ?? false)
                && (upper.map { key.precedes($0) } ?? true)
            if !inLeaf {
                let found = try self.leaf(for: key, from: top, reader: reader, resolve: reader.resolve)
                leaf = found.leaf
                lower = found.descent.lower
                upper = found.descent.upper
            }
            guard let leaf else { break }
            let index = leaf.lowerBound(key)
            try visit(position, leaf.hasKey(key, at: index) ? leaf : nil, index)
        }
    }

    /// Calls `visit` with each leaf and entry index in `range`, in `direction` order, until it returns false.
    static func scan(
        _ range: KeyRange, direction: ScanDirection, root: ChildRef?, reader: PageReader,
        visit: (Node, Int) throws -> Bool
    ) throws {
        try scanLeaves(range, direction: direction, root: root, reader: reader) { node, indices in
            if direction == .forward {
                for index in indices where !(try visit(node, index)) { return false }
            } else {
                for index in indices.reversed() where !(try visit(node, index)) { return false }
            }
            return true
        }
    }

    /// Calls `visit` with each leaf that has entries in `range` and the (non-empty) indices of those entries, leaves
    /// in `direction` order, until it returns false. The visitor walks the indices in `direction` order itself, so a
    /// hot loop can borrow a leaf's bytes once for all its entries.
    static func scanLeaves(
        _ range: KeyRange, direction: ScanDirection, root: ChildRef?, reader: PageReader,
        visit: (Node, Range<Int>) throws -> Bool
    ) throws {
        guard let root else { return }
        _ = try scanLeaves(
            try reader.resolve(root), Descent(), range: range, direction: direction, reader: reader, visit: visit)
    }

    private static func scanLeaves(
        _ node: Node, _ descent: Descent, range: KeyRange, direction: ScanDirection, reader: PageReader,
        visit: (Node, Range<Int>) throws -> Bool
    ) throws -> Bool {
        if node.isLeaf {
            try descent.check(node, reader: reader)
            // Only the first and last leaves of a scan need a search; the ones between lie wholly in the range.
            let count = node.count
            guard count > 0 else { return true }
            let start = node.compareKey(at: 0, with: range.lowerBound) >= 0 ? 0 : node.lowerBound(range.lowerBound)
            let end = range.upperBound.map { node.compareKey(at: count - 1, with: $0) < 0 ? count : node.lowerBound($0) }
                ?? count
            guard start < end else { return true }
            return try visit(node, start..<end)
        }
        let first = node.childIndex(for: range.lowerBound)
        let last = range.upperBound.map { node.childIndex(for: $0) } ?? node.children.count - 1
        guard first <= last else { return true }
        if direction == .forward {
            for index in first...last {
                let below = try descent.child(index, of: node, reader: reader)
                let child = try reader.resolve(node.children[index])
                guard try scanLeaves(child, below, range: range, direction: direction, reader: reader, visit: visit)
                else { return false }
            }
        } else {
            for index in (first...last).reversed() {
                let below = try descent.child(index, of: node, reader: reader)
                let child = try reader.resolve(node.children[index])
                guard try scanLeaves(child, below, range: range, direction: direction, reader: reader, visit: visit)
                else { return false }
            }
        }
        return true
    }
}

/// What `TreeWriter.put` stores under a key: the value and the entry's fields, with its version either given
/// (replaying a logged write) or chosen from the entry it replaces (a new commit).
struct PutValue {
    var bytes: [UInt8]
    var modRevision: UInt64
    /// Expiry in nanoseconds since 1970, or 0 for none.
    var expiresAt: Int64
    /// The version to store; nil: one more than the replaced entry's if that is live by `liveness`, else 1.
    var version: UInt64?
    /// How the replaced entry's liveness is judged (for a nil `version`).
    var liveness: Liveness
}

/// The writer's copy-on-write mutations for one transaction, or for a run of transactions published together (an
/// open group, see GroupCommit.swift): nodes owned by `transaction` are changed in place, all others are copied.
struct TreeWriter {
    let reader: PageReader
    /// The transaction (or group of transactions) whose nodes may be mutated in place.
    let transaction: UInt64
    /// Largest encoded node body.
    let capacity: Int
    /// The pages of the store: an overflow run an entry names must lie below this.
    let pageCount: UInt64
    /// Pages no longer referenced by the tree being built (replaced nodes, overwritten overflow runs).
    var freed: [UInt64] = []
    /// Nodes this transaction added to the set of nodes not yet checkpointed (copies of clean pages, splits).
    var dirtied = 0
    /// Clean nodes this writer has read, by page (see `readAhead`).
    private var readAheadPages: [UInt64: Node] = [:]
    /// The leaf the last put landed in (owned by this transaction) and the key range its ancestors route to it, so
    /// the next put of a key in that range, the common case for runs of ordered keys, skips the descent. Cleared by
    /// every split and delete, the only changes that move keys between leaves.
    private var lastLeaf: Node?
    /// The bounds of the keys `lastLeaf`'s ancestors route to it (nil: unbounded), kept apart from it so that the
    /// check in `putInLastLeaf` reads them in place instead of copying a tuple of three references per put.
    private var lastLower: Key?
    private var lastUpper: Key?
    /// The branches of the current descent, root first, each with the index of the child taken (kept between
    /// puts so its storage is allocated once per writer).
    private var path: [(node: Node, index: Int)] = []

    init(reader: PageReader, transaction: UInt64, pageCount: UInt64) {
        self.reader = reader
        self.transaction = transaction
        self.pageCount = pageCount
        capacity = reader.pageSize - Page.headerSize
    }

    /// Stores `value` under `key` in one descent; returns the fields of the entry it replaced (nil if none) and the
    /// version stored.
    @discardableResult
    mutating func put(_ key: Key, _ value: PutValue, root: inout ChildRef?) throws -> (
        old: EntryHeader?, version: UInt64
    ) {
        if let stored = try putInLastLeaf(key, value) { return stored }
        guard let current = root else {
            dirtied += 1
            let entry = try entry(key, value, replacing: nil)
            root = .node(Node(leaf: [key], entries: [entry], owner: transaction))
            return (nil, entry.version)
        }
        // Descend, owning each node on the way, then insert into the leaf and carry splits back up the path. An
        // iterative descent, and a value instead of a closure that makes the entry: the recursive descent passed
        // the closure's captures down and back up every level, retaining and releasing them each time.
        let top = try own(current)
        path.removeAll(keepingCapacity: true)
        var node = top
        while !node.isLeaf {
            try Descent.checkDepth(path.count + 1, below: node, reader: reader)
            let index = node.childIndex(for: key)
            path.append((node, index))
            node = try ownChild(of: node, at: index)
        }
        try Descent(path: path).check(node, reader: reader)
        let (old, version, leafSplit) = try insert(key, value, intoLeaf: node)
        if leafSplit == nil { rememberLastLeaf(node) } else { lastLeaf = nil }
        var split = leafSplit
        var level = path.count
        while let (separator, right) = split, level > 0 {
            level -= 1
            let (parent, index) = path[level]
            parent.keys.insert(separator, at: index + 1)
            parent.children.insert(.node(right), at: index + 1)
            parent.byteSize += Node.branchSize(key: separator)
            let appended = index + 1 == parent.keys.count - 1
            split = parent.byteSize > capacity ? self.split(parent, rightEdge: appended) : nil
        }
        path.removeAll(keepingCapacity: true)
        if let (separator, right) = split {
            dirtied += 1
            root = .node(Node(branch: [[], separator], children: [.node(top), .node(right)], owner: transaction))
        } else if case .node(let kept) = current, kept === top {
            // The root was already this transaction's: nothing to replace.
        } else {
            root = .node(top)
        }
        return (old, version)
    }

    /// The leaf entry for `value` under `key`, replacing an entry with the fields `old` (nil if none). A value over a
    /// quarter of the page body goes to overflow pages at the next checkpoint (pending until then).
    /// - Throws: `corrupted` if the live entry replaced is at the last version below 2^62 (FORMAT.md: a counter that
    ///   would step past it is damage), before anything is logged.
    private func entry(_ key: Key, _ value: PutValue, replacing old: EntryHeader?) throws -> LeafEntry {
        var version: UInt64 = 1
        if let given = value.version {
            version = given
        } else if let old, old.isLive(value.liveness) {
            version = try MetaPage.counterStep(old.version, by: 1, "version", location: self.location(of: key))
        }
        let inline = LeafEntry.overhead + key.count + value.bytes.count <= capacity / 4
        return LeafEntry(
            value: inline ? .inline(value.bytes) : .pending(value.bytes), version: version,
            modRevision: value.modRevision, expiresAt: value.expiresAt)
    }

    /// Where the entry of `key` is, for an error: the file and the key's first bytes as text.
    private func location(of key: Key) -> String {
        "\(reader.path), the entry of key \(String(decoding: key.prefix(64), as: UTF8.self).debugDescription)"
    }

    /// Remembers `leaf`, which the last descent (`path`, root first) reached and put a key into without splitting,
    /// with the bounds of the keys its ancestors route to it: the nearest separators on either side.
    private mutating func rememberLastLeaf(_ leaf: Node) {
        lastLeaf = leaf
        lastLower = nil
        lastUpper = nil
        var level = path.count
        while level > 0, lastLower == nil || lastUpper == nil {
            level -= 1
            let (parent, index) = path[level]
            if lastLower == nil, index > 0 { lastLower = parent.keys[index] }
            if lastUpper == nil, index + 1 < parent.keys.count { lastUpper = parent.keys[index + 1] }
        }
    }

    /// Removes `key`; returns the fields of the entry removed, or nil if it was absent (then nothing changes).
    /// `contains` has walked the path first, so the removal's descent is as bounded as its.
    @discardableResult
    mutating func delete(_ key: Key, root: inout ChildRef?) throws -> EntryHeader? {
        lastLeaf = nil
        guard let current = root, try contains(key, root: current) else { return nil }
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

    /// Reads every clean page on the way to `key` ahead of any change (keeping them for this writer, whatever the
    /// cache evicts meanwhile), so that a read error is met before the tree is changed. A writer that changes nodes in
    /// place (a later commit of an open group) calls it for each key it will write, then cannot fail half way.
    /// - Returns: the version of `key`'s live entry (nil if none), for the version ceiling, also checked ahead.
    mutating func readAhead(_ key: Key, root: ChildRef?, liveness: Liveness) throws -> UInt64? {
        guard var reference = root else { return nil }
        var descent = Descent()
        while true {
            let node: Node
            switch reference {
            case .node(let inMemory): node = inMemory
            case .page(let page):
                if let read = readAheadPages[page] {
                    node = read
                } else {
                    node = try reader.node(page)
                    readAheadPages[page] = node
                }
            }
            if node.isLeaf {
                try descent.check(node, reader: reader)
                // A key past the leaf's last (a new log position, most of an append's keys) is found absent with one
                // comparison, as putInLastLeaf finds where it goes.
                let count = node.count
                guard count > 0, node.compareKey(at: count - 1, with: key) >= 0 else { return nil }
                let index = node.lowerBound(key)
                guard node.hasKey(key, at: index) else { return nil }
                let header = node.header(at: index)
                return header.isLive(liveness) ? header.version : nil
            }
            let index = node.childIndex(for: key)
            descent = try descent.child(index, of: node, reader: reader)
            reference = node.children[index]
        }
    }

    /// Throws what `entry(_:_:replacing:)` would throw when `writes` put `key`, whose live entry is at `version`,
    /// past the last version below 2^62: the steps its puts take, each over the entry the one before left live (a
    /// delete among them, or a put whose TTL has passed already, leaves none, and the next put starts at 1).
    func checkVersionRoom(_ key: Key, from version: UInt64, in writes: [KeyWrite], liveness: Liveness) throws {
        var current: UInt64? = version
        for write in writes where write.key == key {
            switch write {
            case .put(_, _, let ttl):
                current = try current.map {
                    try MetaPage.counterStep($0, by: 1, "version", location: self.location(of: key))
                } ?? 1
                // The entry is this commit's (its modRevision above the open's): only its expiry can end it.
                if ttl != nil, liveness.now >= liveness.expiry(of: ttl) { current = nil }
            case .delete:
                current = nil
            }
        }
    }

    /// The node `reference` names: in memory, read ahead, or from the cache or disk.
    private func resolve(_ reference: ChildRef) throws -> Node {
        guard case .page(let page) = reference, !readAheadPages.isEmpty, let node = readAheadPages[page] else {
            return try reader.resolve(reference)
        }
        return node
    }

    /// Whether `key` is stored under `root` (expired or not).
    private func contains(_ key: Key, root: ChildRef) throws -> Bool {
        let node = try BTree.leaf(for: key, from: try resolve(root), reader: reader, resolve: resolve).leaf
        return node.hasKey(key, at: node.lowerBound(key))
    }

    /// The node `reference` names, owned by this transaction (copied on first change).
    private mutating func own(_ reference: ChildRef) throws -> Node {
        if case .node(let node) = reference, node.owner == transaction { return node }
        let node = try resolve(reference)
        if node.origin != 0 {
            freed.append(node.origin)
            dirtied += 1
        }
        let copy = node.copy(owner: transaction)
        // A leaf is copied to be changed: copy its bytes once, with room to grow to a full page.
        if copy.isLeaf { copy.body.reserveCapacity(capacity + LeafEntry.overhead) }
        return copy
    }

    /// Child `index` of `node` (a branch owned by this transaction), owned by this transaction: a child already
    /// owned is returned as it is, without rewriting the reference to it (which would retain and release it and
    /// check the branch's arrays for uniqueness on every descent of an open group).
    private mutating func ownChild(of node: Node, at index: Int) throws -> Node {
        let reference = node.children[index]
        if case .node(let child) = reference, child.owner == transaction { return child }
        let child = try own(reference)
        node.children[index] = .node(child)
        return child
    }

    /// Frees the overflow run an entry being replaced or removed pointed to.
    /// - Throws: `corrupted` (having freed nothing) if the run does not lie in 2 ..< pageCount.
    private mutating func release(_ old: EntryHeader) throws {
        guard old.flags == LeafLayout.overflowFlag else { return }
        let pages = UInt64(reader.overflowPages(old.valueLength))
        guard old.reference >= 2, old.reference < pageCount, pages <= pageCount - old.reference else {
            throw EventStoreError.corrupted(
                location: "\(reader.path) page \(old.reference)",
                detail: "a leaf entry names an overflow run of \(pages) pages outside the store's \(pageCount)")
        }
        for offset in 0..<pages { freed.append(old.reference + offset) }
    }

    /// Puts `value` under `key` straight into the last leaf a put landed in, when `key` belongs there and the leaf
    /// has room. Returns nil (having changed nothing) otherwise; then the caller descends from the root.
    private mutating func putInLastLeaf(_ key: Key, _ value: PutValue) throws -> (old: EntryHeader?, version: UInt64)? {
        guard let leaf = lastLeaf else { return nil }
        if lastLower.map({ key.precedes($0) }) == true { return nil }
        if lastUpper.map({ !key.precedes($0) }) == true { return nil }
        let count = leaf.count
        let index = count > 0 && leaf.compareKey(at: count - 1, with: key) < 0 ? count : leaf.lowerBound(key)
        if leaf.hasKey(key, at: index) {
            let old = leaf.header(at: index)
            let entry = try entry(key, value, replacing: old)
            let oldSize = leaf.entryEnd(index) - Int(leaf.offsets[index])
            guard leaf.byteSize - oldSize + Node.leafSize(key: key, value: entry.value) <= capacity else { return nil }
            try release(old)
            leaf.replaceEntry(at: index, key: key, with: entry)
            return (old, entry.version)
        }
        let entry = try entry(key, value, replacing: nil)
        guard leaf.byteSize + Node.leafSize(key: key, value: entry.value) <= capacity else { return nil }
        leaf.insertEntry(key, entry, at: index)
        return (nil, entry.version)
    }

    private mutating func insert(_ key: Key, _ value: PutValue, intoLeaf node: Node) throws
        -> (old: EntryHeader?, version: UInt64, split: (Key, Node)?)
    {
        let index = node.lowerBound(key)
        if node.hasKey(key, at: index) {
            let old = node.header(at: index)
            let entry = try entry(key, value, replacing: old)
            try release(old)
            node.replaceEntry(at: index, key: key, with: entry)
            return (old, entry.version, node.byteSize > capacity ? split(node, rightEdge: false) : nil)
        }
        let entry = try entry(key, value, replacing: nil)
        if index == node.count, index > 0, node.byteSize + Node.leafSize(key: key, value: entry.value) > capacity {
            // A right-edge append that does not fit starts the new right leaf, as `split(_:rightEdge: true)` would
            // after inserting it, but the full left leaf's body never grows past the page its copy reserved room for
            // (growing it would double its array, and the checkpoint would then copy it to cache it).
            dirtied += 1
            let right = Node(leafBody: [], offsets: [], pendingValues: [], owner: transaction, origin: 0)
            right.body.reserveCapacity(capacity + LeafEntry.overhead)
            right.insertEntry(key, entry, at: 0)
            return (nil, entry.version, (key, right))
        }
        node.insertEntry(key, entry, at: index)
        guard node.byteSize > capacity else { return (nil, entry.version, nil) }
        if index == node.count - 1 { return (nil, entry.version, split(node, rightEdge: true)) }
        if let split = splitAtRunEnd(node, inserted: index) { return (nil, entry.version, split) }
        return (nil, entry.version, split(node, rightEdge: false))
    }

    /// An append to the end of one run of keys that another run follows in the same leaf (the log's newest
    /// position followed by the first event-id keys, one stream's newest version followed by the next stream): the
    /// inserted key shares a longer prefix with its left neighbour than with its right one. Splitting right after it
    /// leaves the run's page full and the next run in a page of its own, so later appends to the run are right-edge
    /// appends; a middle split would leave every page of the run half empty. Nil when the keys do not look like
    /// that or a half would not fit.
    private mutating func splitAtRunEnd(_ node: Node, inserted index: Int) -> (Key, Node)? {
        guard index >= 1, index + 1 < node.count else { return nil }
        let (left, right) = node.body.withUnsafeBytes { bytes in
            let previous = LeafLayout.key(bytes, at: Int(node.offsets[index - 1]))
            let current = LeafLayout.key(bytes, at: Int(node.offsets[index]))
            let next = LeafLayout.key(bytes, at: Int(node.offsets[index + 1]))
            return (LeafLayout.commonPrefix(previous, current), LeafLayout.commonPrefix(current, next))
        }
        let at = index + 1
        guard right < left, Int(node.offsets[at]) <= capacity, node.byteSize - Int(node.offsets[at]) <= capacity
        else { return nil }
        dirtied += 1
        return (node.key(at: at), node.splitLeaf(at: at, owner: transaction, reserve: capacity + LeafEntry.overhead))
    }

    /// Splits an overfull node in two; returns the separator and the new right node.
    private mutating func split(_ node: Node, rightEdge: Bool) -> (Key, Node) {
        dirtied += 1
        let count = node.count
        var at = count - 1
        if !rightEdge {
            var size = 0
            at = 0
            while at < count - 1, size < node.byteSize / 2 {
                size += node.isLeaf
                    ? node.entryEnd(at) - Int(node.offsets[at])
                    : Node.branchSize(key: at == 0 ? [] : node.keys[at])
                at += 1
            }
            at = max(1, min(count - 1, at))
        }
        if node.isLeaf {
            let separator = node.key(at: at)
            return (separator, node.splitLeaf(at: at, owner: transaction, reserve: capacity + LeafEntry.overhead))
        }
        let separator = node.keys[at]
        let right = Node(
            branch: ChunkedArray(node.keys[at...]), children: ChunkedArray(node.children[at...]), owner: transaction)
        node.keys.removeSuffix(from: at)
        node.children.removeSuffix(from: at)
        node.byteSize = node.keys.enumerated().reduce(0) {
            $0 + Node.branchSize(key: $1.offset == 0 ? [] : $1.element)
        }
        return (separator, right)
    }

    private mutating func remove(_ key: Key, from node: Node) throws -> (old: EntryHeader?, empty: Bool) {
        if node.isLeaf {
            let index = node.lowerBound(key)
            guard node.hasKey(key, at: index) else { return (nil, node.count == 0) }
            let old = node.header(at: index)
            try release(old)
            node.removeEntry(at: index)
            return (old, node.count == 0)
        }
        let index = node.childIndex(for: key)
        let child = try ownChild(of: node, at: index)
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
