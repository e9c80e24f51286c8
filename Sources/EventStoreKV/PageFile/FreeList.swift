// FreeList: which pages of the data file are free, in memory and as a chain of free-list pages on disk.
//
// Invariants:
// - A page is in exactly one of: the live tree (branch, leaf, overflow), the on-disk free-list chain, `free`,
//   `pending`, or the writer's pages freed since the last checkpoint. verify() checks this partition.
// - `free` pages may be overwritten by the next checkpoint. A page freed by checkpoint e is `pending` with
//   freedAt = e until no reader that started before checkpoint e is still running (readers in this process register
//   their epoch; read-only stores in other processes pin theirs, ReaderPins.swift), because such a reader's snapshot
//   may still reference it. Nothing else ever delays reuse.
// - The list has no size limit: it is stored in as many chained free-list pages as it needs (the seed's single
//   allocation-map page capped the file size).
// - On disk the list records every page that is free as of that meta, pending or not. A writer that opens the
//   store no longer knows when each was freed, so all of them count as freed at its meta's epoch: reusable at the
//   first checkpoint unless a read-only store of another process still pins an older epoch (ReaderPins.swift).

import EventStore

/// Free pages of the data file. See the invariants at the top of this file.
struct FreeList {
    /// Reusable now, sorted descending so the lowest page is allocated first (keeps the file compact).
    private(set) var free: [UInt64] = []
    /// Freed by checkpoint `freedAt`, reusable once no reader from an earlier epoch remains.
    private(set) var pending: [(freedAt: UInt64, pages: [UInt64])] = []
    /// The pages holding the on-disk list of the current meta.
    var listPages: [UInt64] = []

    init(free: [UInt64], listPages: [UInt64]) {
        self.free = free.sorted(by: >)
        self.listPages = listPages
    }

    /// The free list a writer opens with: `pages` count as freed at `epoch`, the epoch of the meta they were read
    /// from (see the invariants above).
    init(freedAt epoch: UInt64, pages: [UInt64], listPages: [UInt64]) {
        self.listPages = listPages
        retire(pages, at: epoch)
    }

    /// Every free page, reusable or pending.
    var all: [UInt64] { free + pending.flatMap(\.pages) }

    /// Records `pages` as freed by checkpoint `epoch`.
    mutating func retire(_ pages: [UInt64], at epoch: UInt64) {
        guard !pages.isEmpty else { return }
        pending.append((epoch, pages))
    }

    /// Makes pending pages reusable when every reader still running started at or after their checkpoint.
    mutating func release(oldestReaderEpoch: UInt64) {
        let ready = pending.filter { $0.freedAt <= oldestReaderEpoch }
        guard !ready.isEmpty else { return }
        pending.removeAll { $0.freedAt <= oldestReaderEpoch }
        free = (free + ready.flatMap(\.pages)).sorted(by: >)
    }

    /// A reusable page, lowest first, or nil.
    mutating func allocate() -> UInt64? { free.popLast() }

    /// The first page of `count` consecutive reusable pages, or nil if there is no such run.
    mutating func allocateRun(_ count: Int) -> UInt64? {
        if count == 1 { return allocate() }
        guard free.count >= count else { return nil }
        var end = free.count - 1  // free is descending: walk from the lowest page up
        while end - count + 1 >= 0 {
            let first = free[end]
            let last = free[end - count + 1]
            if last - first == UInt64(count - 1) {
                free.removeSubrange((end - count + 1)...end)
                return first
            }
            end -= 1
        }
        return nil
    }

    // MARK: On disk

    /// Page numbers one free-list page holds.
    static func capacity(pageSize: Int) -> Int { (pageSize - Page.headerSize - 8) / 8 }

    /// The free-list pages holding `pages`, chained through their first 8 body bytes, stored in `listPages`.
    static func encode(_ pages: [UInt64], into listPages: [UInt64], lsn: UInt64, pageSize: Int) -> [[UInt8]] {
        let perPage = capacity(pageSize: pageSize)
        return listPages.enumerated().map { index, number in
            var page = Page.blank(size: pageSize, type: .freeList, number: number, lsn: lsn)
            let slice = pages.dropFirst(index * perPage).prefix(perPage)
            page.storeLE(UInt32(slice.count), at: Page.countOffset)
            page.storeLE(index + 1 < listPages.count ? listPages[index + 1] : 0, at: Page.headerSize)
            for (offset, free) in slice.enumerated() { page.storeLE(free, at: Page.headerSize + 8 + offset * 8) }
            Page.seal(&page)
            return page
        }
    }

    /// Reads the chain starting at `head`: the free pages and the pages of the chain itself.
    static func read(head: UInt64, reader: PageReader, pageCount: UInt64) throws -> (free: [UInt64], list: [UInt64]) {
        var free: [UInt64] = []
        var list: [UInt64] = []
        var chain: Set<UInt64> = []
        // The index in `free` of each list page's first entry, to name the page that holds a duplicate.
        var firstEntries: [Int] = []
        var next = head
        let perPage = capacity(pageSize: reader.pageSize)
        while next != 0 {
            let location = "\(reader.path) page \(next)"
            guard next >= 2, next < pageCount else {
                throw EventStoreError.corrupted(location: location, detail: "free-list chain points outside the file")
            }
            guard chain.insert(next).inserted else {
                throw EventStoreError.corrupted(location: location, detail: "the free-list chain comes back to this page")
            }
            let page = try reader.rawPage(next, type: .freeList)
            list.append(next)
            firstEntries.append(free.count)
            let count = Int(page.loadLE(UInt32.self, at: Page.countOffset))
            guard count <= perPage else {
                throw EventStoreError.corrupted(location: location, detail: "free-list page count \(count) too large")
            }
            for index in 0..<count {
                let page = page.loadLE(UInt64.self, at: Page.headerSize + 8 + index * 8)
                // A checkpoint would write into a page listed here: one outside the file (or a meta page) is damage.
                guard page >= 2, page < pageCount else {
                    throw EventStoreError.corrupted(location: location, detail: "lists page \(page), outside the file")
                }
                free.append(page)
            }
            next = page.loadLE(UInt64.self, at: Page.headerSize)
        }
        // Two checkpoints' nodes in one page, or a node over the list itself, would be damage too.
        var seen = chain
        for (index, page) in free.enumerated() where !seen.insert(page).inserted {
            let holder = list[(firstEntries.lastIndex { $0 <= index }) ?? 0]
            throw EventStoreError.corrupted(
                location: "\(reader.path) page \(holder)",
                detail: "the free list names page \(page) more than once, or one of its own pages")
        }
        return (free, list)
    }

    /// Throws `corrupted` naming the page if the free list `free` or its chain `list` names a branch or leaf page of
    /// the tree rooted at `root`: the next checkpoint would write over it, and acknowledged data would be lost.
    ///
    /// A writable open calls this before anything is written. It reads only the branch pages, which name every
    /// branch and leaf page (the children of the last branch level are known to be leaves, as every leaf lies at the
    /// depth of the first, and are not read), so its cost is a small fraction of the tree's. Overflow pages the free
    /// list names are found only by verify(), which reads every leaf. A page that cannot be read, and anything deeper
    /// than ``BTree/maximumDepth``, are left to the reads and verify() that report them.
    static func checkAgainstTree(free: [UInt64], list: [UInt64], root: UInt64, reader: PageReader) throws {
        guard root != 0, !(free.isEmpty && list.isEmpty) else { return }
        let chain = Set(list)
        let listed = chain.union(free)
        func check(_ page: UInt64) throws {
            guard listed.contains(page) else { return }
            throw EventStoreError.corrupted(
                location: "\(reader.path) page \(page)",
                detail: "the free list names this page as \(chain.contains(page) ? "one of its own" : "free"), "
                    + "but the tree uses it")
        }
        try check(root)
        var seen: Set<UInt64> = [root]
        var level = [root]
        var depth = 1
        while !level.isEmpty, depth < BTree.maximumDepth {
            var children: [UInt64] = []
            for page in level {
                guard let node = try? reader.node(page), !node.isLeaf else { continue }
                for case .page(let child) in node.children where seen.insert(child).inserted {
                    try check(child)
                    children.append(child)
                }
            }
            // Every leaf lies at one depth: if the first child is a leaf, this level holds the leaves.
            guard let first = children.first, let node = try? reader.node(first), !node.isLeaf else { return }
            level = children
            depth += 1
        }
    }
}
