// Group commit's open group: commits queued behind a sync in progress form one group whose tree nodes later commits
// change in place. These tests hold the WAL's fdatasync (IOGate) to queue commits deterministically, and check that
// readers see each group only whole and only after its own sync, and that a read error met by a commit joining the
// group fails that commit alone.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Group commit")
struct GroupCommitTests {
    /// Keys spread over the whole preloaded tree, written by every test transaction.
    private static let shared: [Key] = stride(from: 0, to: 600, by: 75).map { key($0) }

    private static func key(_ index: Int) -> Key { Array("key-\(String(format: "%04d", index))".utf8) }

    /// A transaction writing `marker` under every shared key and under a key of its own.
    private static func marked(_ marker: UInt8) -> KeyValueTransaction {
        KeyValueTransaction(writes: shared.map { .put($0, [marker]) } + [.put(Array("own-\(marker)".utf8), [marker])])
    }

    /// 600 keys with 100-byte values: a root branch over about twenty 4 KiB leaves.
    private static func preload(_ store: PageFileKeyValueStore) async throws {
        let writes = (0..<600).map { KeyWrite.put(key($0), [UInt8](repeating: 7, count: 100)) }
        _ = try await store.commit(KeyValueTransaction(writes: writes))
    }

    /// The marker every shared key holds (they must agree: transactions are seen whole), and which own keys exist.
    private static func visible(_ store: PageFileKeyValueStore) async throws -> (marker: UInt8?, own: [UInt8]) {
        let values = try await store.get(shared).map { $0?.value }
        let markers = Set(values.map { $0?.first })
        #expect(markers.count == 1, "a reader saw part of a transaction: \(values)")
        var own: [UInt8] = []
        for marker in UInt8(0)...5 where try await store.get(Array("own-\(marker)".utf8)) != nil { own.append(marker) }
        return (markers.first ?? nil, own)
    }

    @Test("commits queued behind a sync form one group, published whole and only after its own sync")
    func queuedCommitsShareAGroup() async throws {
        let gate = IOGate(pathSuffix: "/wal")
        try await withStore(options: smallOptions(faults: IOFaultPlan([], syncGate: gate))) { store, _ in
            try await Self.preload(store)
            // Clean pages: a group's first commit copies its path, the others change it in place.
            try await store.checkpoint()
            _ = try await store.commit(Self.marked(0))
            let before = store.metrics().groupCommitBatchSizes

            gate.hold()
            let first = Task { try await store.commit(Self.marked(1)) }
            await gate.arrival()
            var queued: [Task<UInt64?, any Error>] = []
            for marker in UInt8(2)...4 { queued.append(await startUpdate(store, Self.marked(marker))) }
            // A read-only update runs only after commit 4 is applied and queued.
            let barrier = await startUpdate(store, KeyValueTransaction())
            var seen = try await Self.visible(store)
            #expect(seen.marker == 0 && seen.own == [0], "commits 1-4 are not durable yet: \(seen)")

            gate.hold()
            gate.release()
            _ = try await first.value
            await gate.arrival()
            seen = try await Self.visible(store)
            #expect(seen.marker == 1 && seen.own == [0, 1], "the group 2-4 is not durable yet: \(seen)")

            gate.release()
            var revisions: [UInt64] = []
            for task in queued { revisions.append(try #require(try await task.value)) }
            _ = try await barrier.value
            seen = try await Self.visible(store)
            #expect(seen.marker == 4 && seen.own == [0, 1, 2, 3, 4], "\(seen)")
            // Applied in the order queued, each its own revision.
            #expect(revisions == [revisions[0], revisions[0] + 1, revisions[0] + 2])
            // Commits 2-4 went to the WAL as one write of three transactions (the 3...4 bucket).
            let after = store.metrics().groupCommitBatchSizes
            #expect(after[2] - before[2] == 1 && after[0] - before[0] == 1 && after[1] == before[1])
        }
    }

    @Test("under concurrent writers, readers only ever see whole transactions, and the last one wins")
    func concurrentWritersAndReaders() async throws {
        let gate = IOGate(pathSuffix: "/wal")
        try await withStore(options: smallOptions(faults: IOFaultPlan([], syncGate: gate))) { store, _ in
            try await Self.preload(store)
            try await store.checkpoint()
            let writers = 8
            let rounds = 60
            // One commit shaped like the writers' (they overwrite it) gives the size of their WAL records.
            let before = store.pipeline.walBytes
            _ = try await store.commit(KeyValueTransaction(writes: Self.shared.map { .put($0, [255, 255]) }))
            let recordSize = store.pipeline.walBytes - before
            // However the writers are scheduled (on a loaded machine each commit can otherwise find the flusher
            // idle), a commit's sync is held until at least two writer commits queued behind it, so they share a
            // group and change its nodes in place while the reader reads.
            gate.hold()
            let blocker = Task {
                try await store.commit(KeyValueTransaction(writes: Self.shared.map { .put($0, [255, 254]) }))
            }
            await gate.arrival()
            // The held record is taken off the queue: from here walBytes counts what queues behind it.
            let held = store.pipeline.walBytes
            let reads = try await withThrowingTaskGroup(of: Int.self) { group in
                group.addTask {
                    let deadline = ContinuousClock.now + .seconds(30)
                    while store.pipeline.walBytes < held + 2 * recordSize, ContinuousClock.now < deadline {
                        try await Task.sleep(for: .milliseconds(1))
                    }
                    gate.release()
                    return 0
                }
                for writer in 0..<writers {
                    group.addTask {
                        for round in 0..<rounds {
                            let marker = UInt8((writer * rounds + round) % 251)
                            _ = try await store.commit(
                                KeyValueTransaction(writes: Self.shared.map { .put($0, [UInt8(writer), marker]) }))
                        }
                        return 0
                    }
                }
                group.addTask {
                    // Every snapshot a reader takes holds one transaction's values under all shared keys.
                    var checked = 0
                    while checked < 2_000 {
                        let values = try await store.get(Self.shared).map { $0?.value }
                        #expect(Set(values).count == 1, "a reader saw part of a transaction: \(values)")
                        checked += 1
                        await Task.yield()
                    }
                    return checked
                }
                return try await group.reduce(0, +)
            }
            #expect(reads == 2_000)
            _ = try await blocker.value
            // The shared keys end with some writer's last transaction.
            let last = Set((0..<writers).map { [UInt8($0), UInt8(($0 * rounds + rounds - 1) % 251)] })
            let final = try await store.get(Self.shared).map { $0?.value }
            #expect(Set(final).count == 1 && final[0].map { last.contains($0) } == true, "\(final)")
            let metrics = store.metrics()
            // The commits did share groups (so commits changed a group's nodes in place while readers read).
            #expect(metrics.groupCommitBatchSizes.dropFirst().reduce(0, +) > 0, "\(metrics.groupCommitBatchSizes)")
        }
    }

    @Test("a group's commits survive a reopen exactly as acknowledged")
    func groupSurvivesReopen() async throws {
        let gate = IOGate(pathSuffix: "/wal")
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(
            directory: directory.path, options: smallOptions(faults: IOFaultPlan([], syncGate: gate)))
        try await Self.preload(store)
        gate.hold()
        let first = Task { try await store.commit(Self.marked(1)) }
        await gate.arrival()
        var queued: [Task<UInt64?, any Error>] = []
        for marker in UInt8(2)...4 { queued.append(await startUpdate(store, Self.marked(marker))) }
        gate.release()
        _ = try await first.value
        for task in queued { _ = try await task.value }
        await store.closeWithoutCheckpoint()

        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let seen = try await Self.visible(reopened)
        #expect(seen.marker == 4 && seen.own == [1, 2, 3, 4], "\(seen)")
        #expect(try await reopened.get(Self.key(599))?.value == [UInt8](repeating: 7, count: 100))
        try await reopened.close()
    }

    @Test("a damaged page met by a commit joining an open group fails that commit alone; the group commits")
    func readErrorInAJoiningCommitFailsOnlyIt() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        var store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        try await Self.preload(store)
        try await store.close()

        // The leaf holding the first key, found from the checkpointed root; then damage it on disk.
        let victim = Self.key(0)
        store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let reader = store.writer.state.reader
        let root = try reader.resolve(try #require(store.writer.state.root))
        #expect(!root.isLeaf)
        guard case .page(let leafPage) = root.children[root.childIndex(for: victim)] else {
            Issue.record("the checkpointed root's children should be pages")
            return
        }
        try await store.close()
        let data = try SystemFile.open(directory.file("data"), create: false, faults: nil)
        let offset = leafPage * UInt64(store.pageSize) + 2_000
        var byte = try data.read(count: 1, at: offset)
        byte[0] ^= 0xFF
        try data.write(byte, at: offset)

        let gate = IOGate(pathSuffix: "/wal")
        store = try await PageFileKeyValueStore.open(
            directory: directory.path, options: smallOptions(faults: IOFaultPlan([], syncGate: gate)))
        let late: Key = Array("zz-late".utf8)
        gate.hold()
        let first = Task { try await store.commit(KeyValueTransaction(writes: [.put(Array("zz-1".utf8), [1])])) }
        await gate.arrival()
        // The open group's first commit (keys in the last leaf), then one that needs the damaged leaf.
        let opener = await startUpdate(store, KeyValueTransaction(writes: [.put(Array("zz-2".utf8), [2])]))
        let damaged = await startUpdate(
            store, KeyValueTransaction(writes: [.put(Array("zz-3".utf8), [3]), .put(victim, [3])]))
        let barrier = await startUpdate(store, KeyValueTransaction())
        gate.release()
        _ = try await first.value
        #expect(try await opener.value != nil)
        do {
            _ = try await damaged.value
            Issue.record("the commit needing the damaged leaf succeeded")
        } catch let error as EventStoreError {
            guard case .corrupted(let location, _) = error else {
                Issue.record("expected corruption, got \(error)")
                return
            }
            #expect(location.contains("page \(leafPage)"), "\(location)")
        }
        _ = try await barrier.value
        // Nothing of the failed commit is visible; the store still takes writes.
        #expect(try await store.get(Array("zz-3".utf8)) == nil)
        #expect(try await store.get(Array("zz-2".utf8))?.value == [2])
        _ = try await store.commit(KeyValueTransaction(writes: [.put(late, [4])]))
        #expect(try await store.get(late)?.value == [4])
        try await store.close()
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(try await reopened.get(Array("zz-3".utf8)) == nil)
        #expect(try await reopened.get(Array("zz-2".utf8))?.value == [2])
        #expect(try await reopened.get(late)?.value == [4])
        try await reopened.close()
    }
}
