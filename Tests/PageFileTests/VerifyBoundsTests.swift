// verify()'s check that a node's keys are not below its parent's separator, and its leak check, had no test that
// fails without them: a review (twenty-third session) removed each by hand, and the damage tests, which assert only
// that verify is not clean, stayed green because another check fired too. These assert each problem's own line.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

@Suite("verify names keys below their parent's separator")
struct VerifyBoundsTests {
    @Test("two branch children swapped (checksum recomputed): verify reports both bounds, naming the pages")
    func swappedChildrenBreakBothBounds() async throws {
        let path = try await FuzzChild.store(count: 200)
        defer { try? FileManager.default.removeItem(atPath: path) }
        var d = try FuzzChild.file(path + "/data")
        let m = try #require(FuzzChild.meta(d))
        var p = FuzzChild.page(d, m.root)
        let children = FuzzChild.children(p)
        try #require(children.count >= 3)
        let one = p.loadLE(UInt64.self, at: children[1])
        let two = p.loadLE(UInt64.self, at: children[2])
        p.storeLE(two, at: children[1])  // child 1's slot names child 2's subtree: its keys reach the next separator
        p.storeLE(one, at: children[2])  // child 2's slot names child 1's subtree: its keys lie below the separator
        FuzzChild.put(p, &d, m.root)
        try FuzzChild.save(d, path + "/data")
        let store = try await PageFileKeyValueStore.open(directory: path, options: FuzzChild.opts())
        let problems = try await store.verify().problems
        try await store.close()
        #expect(problems.contains { $0.contains("page \(two): key at or above the next separator") }, "\(problems)")
        #expect(problems.contains { $0.contains("page \(one): key below the parent's separator") }, "\(problems)")
    }
}

@Suite("verify reports leaked pages")
struct VerifyLeakTests {
    @Test("a page inside the file that is neither in the tree nor free is reported as leaked")
    func leakedPageIsReported() async throws {
        let path = try await FuzzChild.store(count: 200)
        defer { try? FileManager.default.removeItem(atPath: path) }
        var leaked: UInt64 = 0
        try FuzzChild.changeMeta(path) { meta in
            leaked = meta.pageCount
            meta.pageCount += 1
        }
        // The file grows by that page: it lies inside the file, and nothing refers to it.
        var d = try FuzzChild.file(path + "/data")
        d += [UInt8](repeating: 0, count: FuzzChild.size)
        try FuzzChild.save(d, path + "/data")
        let store = try await PageFileKeyValueStore.open(directory: path, options: FuzzChild.opts())
        let report = try await store.verify()
        try await store.close()
        #expect(report.pageCount == leaked + 1)
        #expect(
            report.problems.contains { $0.contains("1 pages are neither in the tree nor free (first: [\(leaked)])") },
            "\(report.problems)")
    }
}

@Suite("verify reports a leaf at another depth")
struct VerifyDepthTests {
    /// The root's second child (a branch) replaced by that branch's first leaf, whose keys fit the slot: the tree's
    /// order holds, but one leaf sits a level higher than the others. (The check had no test that fails without it.)
    @Test("a leaf one level above the others is reported, naming its page and both depths")
    func leafAtAnotherDepth() async throws {
        let path = NSTemporaryDirectory() + "eventstore-verify-depth-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        let healthy = try await PageFileKeyValueStore.open(directory: path, options: FuzzChild.opts())
        for batch in 0..<40 {
            _ = try await healthy.commit(KeyValueTransaction(writes: (0..<200).map { index in
                .put(FuzzChild.key(batch * 200 + index), [UInt8](repeating: 1, count: 100))
            }))
        }
        try await healthy.checkpoint()
        let before = try await healthy.verify()
        try await healthy.close()
        // Three levels: the root's children are branches, and theirs are leaves.
        try #require(before.isClean && before.depth == 3, "\(before.depth) levels, \(before.problems)")
        var d = try FuzzChild.file(path + "/data")
        let m = try #require(FuzzChild.meta(d))
        var root = FuzzChild.page(d, m.root)
        let slots = FuzzChild.children(root)
        try #require(slots.count >= 2)
        let branch = root.loadLE(UInt64.self, at: slots[1])
        let branchSlots = FuzzChild.children(FuzzChild.page(d, branch))
        try #require(!branchSlots.isEmpty)
        let leaf = FuzzChild.page(d, branch).loadLE(UInt64.self, at: branchSlots[0])
        root.storeLE(leaf, at: slots[1])
        FuzzChild.put(root, &d, m.root)
        try FuzzChild.save(d, path + "/data")
        let store = try await PageFileKeyValueStore.open(directory: path, options: FuzzChild.opts())
        let report = try await store.verify()
        try await store.close()
        #expect(report.depth == 3)
        #expect(report.problems.contains { $0.contains("page \(leaf): leaf at depth 2, others at 3") }, "\(report.problems)")
    }
}
