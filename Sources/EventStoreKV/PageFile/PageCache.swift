// PageCache: decoded B+tree pages, bounded by the configured cache size, evicted by CLOCK (second chance).
//
// Invariants:
// - Holds at most `capacity` pages (cacheSizeMB / 1.0625 pageSize: a cached leaf's arrays are sized exactly, see
//   Checkpoint.swift), so memory for clean pages stays bounded however large the file grows. Dirty nodes are not
//   here: they live in the writer's tree until the next checkpoint.
// - A removed page's ring position is a hole, filled before anything is evicted: pages a checkpoint replaced leave
//   at once, so they never push live pages out.
// - A cached node is immutable. An entry for page n is replaced when a checkpoint writes page n again, and dropped
//   when page n is allocated for something else, so a lookup never returns another page's old contents.
// - All state is guarded by one lock (`Locked`); no I/O happens while it is held.

import EventStore
import Synchronization

/// A bounded cache of decoded pages, keyed by page number.
final class PageCache: Sendable {
    private struct Slot {
        var node: Node
        var referenced: Bool
        var ring: Int
    }

    private struct State {
        var slots: [UInt64: Slot] = [:]
        var ring: [UInt64] = []
        /// Ring positions of pages removed (tombstones), filled before anything is evicted.
        var holes: [Int] = []
        var hand = 0
    }

    /// Hits and misses, shared by the caches that follow one another in a store (a read-only store's refresh() and
    /// compact() give it a new cache), so its counters run from its open.
    final class Counts: Sendable {
        let hits = Atomic<UInt64>(0)
        let misses = Atomic<UInt64>(0)

        init() {}
    }

    private let state = Locked(State())
    let capacity: Int
    let counts: Counts

    init(capacity: Int, counts: Counts = Counts()) {
        self.capacity = max(16, capacity)
        self.counts = counts
    }

    /// Pages that fit `megabytes` of memory. A cached leaf is its page body (in an array of exactly its size) plus
    /// 4 bytes of offset per entry and a small object: about 1.06 times the page size (measured: the default 64 MiB
    /// cache adds about 60 MB to append-batch's peak over a 1 MiB one).
    static func capacity(megabytes: Int, pageSize: Int) -> Int { megabytes * 1024 * 1024 / (pageSize + pageSize / 16) }

    /// The cached node for `page`, marking it recently used.
    func node(_ page: UInt64) -> Node? {
        state.withLock { state in
            guard let slot = state.slots[page] else {
                counts.misses.add(1, ordering: .relaxed)
                return nil
            }
            counts.hits.add(1, ordering: .relaxed)
            if !slot.referenced { state.slots[page]?.referenced = true }
            return slot.node
        }
    }

    /// Caches `node` as the contents of `page`, evicting a page not recently used if full.
    func insert(_ node: Node, page: UInt64) {
        state.withLock { state in
            if let slot = state.slots[page] {
                state.slots[page] = Slot(node: node, referenced: true, ring: slot.ring)
                return
            }
            if state.ring.count < capacity {
                state.ring.append(page)
                state.slots[page] = Slot(node: node, referenced: false, ring: state.ring.count - 1)
                return
            }
            if let hole = state.holes.popLast() {
                state.ring[hole] = page
                state.slots[page] = Slot(node: node, referenced: false, ring: hole)
                return
            }
            while true {
                let hand = state.hand
                state.hand = (hand + 1) % state.ring.count
                let victim = state.ring[hand]
                if let slot = state.slots[victim], slot.referenced {
                    state.slots[victim]?.referenced = false
                    continue
                }
                state.slots.removeValue(forKey: victim)
                state.ring[hand] = page
                state.slots[page] = Slot(node: node, referenced: false, ring: hand)
                return
            }
        }
    }

    /// Forgets `page` (it is being reused for other contents, or no longer part of the current tree).
    func remove(_ page: UInt64) {
        remove(CollectionOfOne(page))
    }

    /// Forgets `pages`; their places go to the next pages cached, before anything is evicted.
    func remove(_ pages: some Sequence<UInt64>) {
        state.withLock { state in
            for page in pages {
                guard let slot = state.slots.removeValue(forKey: page) else { continue }
                // Leave a tombstone in the ring: the number of a page no longer cached is skipped by eviction.
                state.ring[slot.ring] = UInt64.max
                state.holes.append(slot.ring)
            }
        }
    }

    /// Every cached node with its page, for checks off the hot path.
    var cachedNodes: [(page: UInt64, node: Node)] {
        state.withLock { state in state.slots.map { ($0.key, $0.value.node) } }
    }

    /// Pages cached, hits and misses so far.
    var statistics: (pages: Int, hits: UInt64, misses: UInt64) {
        let pages = state.withLock { $0.slots.count }
        return (pages, counts.hits.load(ordering: .relaxed), counts.misses.load(ordering: .relaxed))
    }
}
