// Page fill: keys appended in order fill their pages, also when another run of keys follows them in the same leaf
// (the event store's log is followed by its event-id index; one stream's versions by the next stream's).

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Page fill")
struct SplitTests {
    /// Appends `count` keys `prefix + i` (big-endian) with 100-byte values, `perCommit` per transaction, after
    /// `others` random keys under `0xFF` (which sort after every appended key) with values as large, and returns the tree's page count.
    func treePages(appending count: Int, perCommit: Int, others: Int) async throws -> (pages: Int, keys: Int) {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        var random = SeededRandom(seed: 7)
        for _ in 0..<others {
            let key: Key = [0xFF] + (0..<8).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            _ = try await store.commit(KeyValueTransaction(writes: [.put(key, [UInt8](repeating: 1, count: 100))]))
        }
        var written = 0
        while written < count {
            let writes = (written..<min(count, written + perCommit)).map { index -> KeyWrite in
                .put([0x04] + withUnsafeBytes(of: UInt64(index).bigEndian, Array.init), [UInt8](repeating: 7, count: 100))
            }
            _ = try await store.commit(KeyValueTransaction(writes: writes))
            written += writes.count
        }
        try await store.checkpoint()
        let report = try await store.verify()
        #expect(report.isClean, "\(report.problems)")
        try await store.close()
        return (report.treePages, report.keys)
    }

    @Test("ordered appends fill their leaves when another run of keys follows them")
    func runEndsSplitFull() async throws {
        // 4 KiB pages hold 29 entries of 140 bytes (31 + 9 + 100): 3,000 keys need about 104 leaves when full.
        let followed = try await treePages(appending: 3_000, perCommit: 10, others: 1_000)
        let alone = try await treePages(appending: 3_000, perCommit: 10, others: 0)
        #expect(followed.keys == 4_000 && alone.keys == 3_000)
        // Half-empty leaves (middle splits) would take about 210 pages; full ones about 104 plus a few branches.
        #expect(alone.pages <= 115, "appends alone: \(alone.pages) pages")
        // The 1,000 random keys fill their leaves about 70 %: about 50 more leaves.
        #expect(followed.pages <= 115 + 55, "appends followed by other keys: \(followed.pages) pages")
    }

    @Test("leaves filled by ordered appends are cached by the checkpoint without copying their bytes")
    func appendedLeavesKeepTheirPageSize() async throws {
        try await withStore { store, _ in
            for first in stride(from: 0, to: 3_000, by: 10) {
                let writes = (first..<(first + 10)).map { index -> KeyWrite in
                    .put([0x04] + withUnsafeBytes(of: UInt64(index).bigEndian, Array.init), [UInt8](repeating: 7, count: 100))
                }
                _ = try await store.commit(KeyValueTransaction(writes: writes))
            }
            // The dirty tree the next checkpoint writes (the test holds no lock, but nothing else writes meanwhile).
            var leaves: [Node] = []
            var pending = [store.writer.state.root].compactMap { $0 }
            while let reference = pending.popLast() {
                guard case .node(let node) = reference else { continue }
                if node.isLeaf { leaves.append(node) } else { pending.append(contentsOf: node.children.map { $0 }) }
            }
            let pageBody = store.pageSize - Page.headerSize
            let full = leaves.filter { $0.body.count >= pageBody * 7 / 8 }
            #expect(full.count >= 90, "\(leaves.count) leaves, \(full.count) nearly full")
            // A full leaf whose array had doubled past its page (about 2x the bytes) would be copied by the checkpoint
            // to keep the cache within its budget; an append that does not fit starts the next leaf instead.
            let copied = full.filter { leaf in
                leaf.body.withUnsafeBufferPointer { original in
                    leaf.body.compacted().withUnsafeBufferPointer { $0.baseAddress != original.baseAddress }
                }
            }
            #expect(copied.isEmpty, "\(copied.count) of \(full.count) full leaves have arrays of \(copied.first?.body.capacity ?? 0) bytes")
            try await store.checkpoint()
            #expect(try await store.verify().isClean)
            #expect(try await allEntries(store).count == 3_000)
        }
    }
}
