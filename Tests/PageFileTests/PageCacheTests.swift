// Page cache: what it holds after checkpoints (only the current tree's pages, in arrays of their own size) and how
// it fills the places of removed pages before evicting anything.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Page cache")
struct PageCacheTests {
    /// A leaf node holding one small entry, to cache.
    func leaf(_ label: UInt8) -> Node {
        Node(leaf: [[label]], entries: [LeafEntry(value: .inline([label]), version: 1, modRevision: 1, expiresAt: 0)], owner: 0)
    }

    @Test("removed pages leave holes that new pages fill before any live page is evicted")
    func holesBeforeEviction() {
        let cache = PageCache(capacity: 16)
        for page in 0..<16 { cache.insert(leaf(UInt8(page)), page: UInt64(page)) }
        // Remove pages far from the eviction hand (which starts at the first page).
        cache.remove([12, 13, 14, 15])
        for page in 100..<104 { cache.insert(leaf(UInt8(page)), page: UInt64(page)) }
        let cached = Set(cache.cachedNodes.map(\.page))
        #expect(cached == Set((0..<12).map(UInt64.init) + (100..<104).map(UInt64.init)))
        // Once the holes are used up, inserting evicts one page again, and the cache stays at its capacity.
        cache.insert(leaf(200), page: 200)
        #expect(cache.statistics.pages == 16)
        #expect(cache.cachedNodes.contains { $0.page == 200 })
    }

    /// Writes `count` keys with 100-byte values tagged `tag` in commits of 50, then checkpoints.
    func writeAll(_ store: PageFileKeyValueStore, count: Int, tag: UInt8) async throws {
        for start in stride(from: 0, to: count, by: 50) {
            let writes = (start..<min(count, start + 50)).map { index -> KeyWrite in
                .put([0x04] + withUnsafeBytes(of: UInt64(index).bigEndian, Array.init), [UInt8](repeating: tag, count: 100))
            }
            _ = try await store.commit(KeyValueTransaction(writes: writes))
        }
        try await store.checkpoint()
    }

    @Test("after a checkpoint the cache holds only the current tree's pages")
    func replacedPagesLeaveTheCache() async throws {
        var options = smallOptions()
        options.cacheSizeMB = 16
        try await withStore(options: options) { store, _ in
            try await writeAll(store, count: 2_000, tag: 1)
            // Rewriting every value replaces every page of the tree.
            try await writeAll(store, count: 2_000, tag: 2)
            let report = try await store.verify()
            #expect(report.isClean, "\(report.problems)")
            let cached = try store.statistics().cachedPages
            #expect(cached > 0)
            #expect(cached <= report.treePages, "\(cached) pages cached for a tree of \(report.treePages)")
        }
    }

    @Test("leaves cached by a checkpoint hold arrays no larger than their page")
    func cachedLeavesAreCompact() async throws {
        var options = smallOptions()
        options.cacheSizeMB = 16
        try await withStore(options: options) { store, _ in
            // Appends of one key per commit grow each leaf's arrays one entry at a time.
            for index in 0..<600 {
                let key: Key = [0x04] + withUnsafeBytes(of: UInt64(index).bigEndian, Array.init)
                _ = try await store.commit(KeyValueTransaction(writes: [.put(key, [UInt8](repeating: 3, count: 100))]))
            }
            try await store.checkpoint()
            let leaves = store.published.state.withLock { $0.reader }.cache.cachedNodes.map(\.node).filter(\.isLeaf)
            #expect(leaves.count > 10)
            for leaf in leaves {
                #expect(leaf.body.capacity <= leaf.body.count + leaf.body.count / 8 + 16, "body \(leaf.body.count) of \(leaf.body.capacity)")
                #expect(leaf.offsets.capacity <= leaf.offsets.count + leaf.offsets.count / 8 + 8)
            }
        }
    }
}
