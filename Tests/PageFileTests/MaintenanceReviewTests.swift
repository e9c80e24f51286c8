import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("ReviewMaintenance")
struct ReviewMaintenanceTests {
    private func key(_ index: Int) -> Key { var key: Key = [4]; key.appendBigEndian(UInt64(index)); return key }

    /// Puts `depth` sealed single-child branch pages above the root of a closed store, and a newer meta naming the top one.
    private func stackBranches(in directory: String, depth: Int) throws {
        let pageSize = 4096
        let file = try SystemFile.open(directory + "/data", create: false, faults: nil)
        let metas = try file.read(count: 2 * pageSize, at: 0)
        let slots = (0..<2).compactMap { slot in
            MetaPage.decode(Array(metas[(slot * pageSize)..<((slot + 1) * pageSize)]), slot: UInt64(slot), pageSize: pageSize, path: "") }
        var meta = try #require(slots.max { $0.epoch < $1.epoch })
        let first = meta.pageCount
        var bytes: [UInt8] = []
        for index in 0..<depth {
            let number = first + UInt64(index)
            let child = index + 1 < depth ? number + 1 : meta.root
            bytes += try NodeCodec.encode(Node(branch: [[]], children: [.page(child)], owner: 0), number: number,
                                          lsn: meta.checkpointLSN, pageSize: pageSize, path: "")
        }
        try file.write(bytes, at: first * UInt64(pageSize))
        meta.root = first; meta.pageCount = first + UInt64(depth); meta.epoch += 1
        try file.write(meta.encoded(), at: (meta.epoch % 2) * UInt64(pageSize))
        try file.sync()
    }
    @Test func freeListNamingALiveLeaf() async throws {
        let directory = TemporaryDirectory("review-free-live"); defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: (0..<400).map { .put(key($0), Array(repeating: 5, count: 100)) }))
        try await store.close()
        let pageSize = 4096
        let file = try SystemFile.open(directory.path + "/data", create: false, faults: nil)
        let metas = try file.read(count: 2 * pageSize, at: 0)
        let slots = (0..<2).compactMap { slot in
            MetaPage.decode(Array(metas[(slot * pageSize)..<((slot + 1) * pageSize)]), slot: UInt64(slot), pageSize: pageSize, path: "") }
        var meta = try #require(slots.max { $0.epoch < $1.epoch })
        let reader = PageReader(file: file, pageSize: pageSize, cache: PageCache(capacity: 16))
        let root = try reader.node(meta.root)
        guard case .page(let leafPage) = root.children[0] else { Issue.record("no leaf page"); return }
        let leafKey = try reader.node(leafPage).key(at: 0)
        let listPage = meta.pageCount
        try file.write(FreeList.encode([leafPage], into: [listPage], lsn: meta.checkpointLSN, pageSize: pageSize)[0],
                       at: listPage * UInt64(pageSize))
        meta.freeListHead = listPage; meta.pageCount += 1; meta.epoch += 1
        try file.write(meta.encoded(), at: (meta.epoch % 2) * UInt64(pageSize)); try file.sync()
        var readOnly = smallOptions(); readOnly.readOnly = true
        let inspector = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly)
        #expect(try await inspector.get(leafKey)?.value == Array(repeating: 5, count: 100))   // passes
        try await inspector.close()
        // A writable open refuses the store before it writes anything: its checkpoint would overwrite the leaf.
        let before = try file.read(count: Int(try file.size()), at: 0)
        await #expect {
            _ = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        } throws: { error in
            guard case EventStoreError.corrupted(let location, _) = error else { return false }
            return location.hasSuffix("data page \(leafPage)")
        }
        #expect(try file.read(count: Int(try file.size()), at: 0) == before, "the refused open changed the data file")
        let again = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly)
        #expect(try await again.get(leafKey)?.value == Array(repeating: 5, count: 100))
        try await again.close()
    }

    /// The open's check reads only branch pages, yet finds a leaf and a branch anywhere in a three-level tree.
    @Test func freeListNamingAPageDeepInTheTree() async throws {
        let directory = TemporaryDirectory("review-free-deep"); defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        for round in 0..<20 {
            _ = try await store.commit(KeyValueTransaction(writes: (0..<1_000).map {
                .put(key(round * 1_000 + $0), Array(repeating: 5, count: 150)) }))
        }
        try await store.close()
        let pageSize = 4096
        let file = try SystemFile.open(directory.path + "/data", create: false, faults: nil)
        let metas = try file.read(count: 2 * pageSize, at: 0)
        let slots = (0..<2).compactMap { slot in
            MetaPage.decode(Array(metas[(slot * pageSize)..<((slot + 1) * pageSize)]), slot: UInt64(slot), pageSize: pageSize, path: "") }
        let meta = try #require(slots.max { $0.epoch < $1.epoch })
        let reader = PageReader(file: file, pageSize: pageSize, cache: PageCache(capacity: 16))
        let root = try reader.node(meta.root)
        guard case .page(let branchPage) = root.children[root.children.count - 1] else { Issue.record("no branch"); return }
        let branch = try reader.node(branchPage)
        #expect(!branch.isLeaf, "the tree should have three levels")
        guard case .page(let leafPage) = branch.children[branch.children.count - 1] else { Issue.record("no leaf"); return }
        for named in [leafPage, branchPage] {
            let copy = try copyDirectory(directory.path); defer { copy.remove() }
            let copied = try SystemFile.open(copy.path + "/data", create: false, faults: nil)
            var damaged = meta
            let (free, _) = try FreeList.read(head: meta.freeListHead, reader: reader, pageCount: meta.pageCount)
            let listPage = damaged.pageCount
            try copied.write(FreeList.encode(free + [named], into: [listPage], lsn: meta.checkpointLSN, pageSize: pageSize)[0],
                             at: listPage * UInt64(pageSize))
            damaged.freeListHead = listPage; damaged.pageCount += 1; damaged.epoch += 1
            try copied.write(damaged.encoded(), at: (damaged.epoch % 2) * UInt64(pageSize)); try copied.sync()
            await #expect {
                _ = try await PageFileKeyValueStore.open(directory: copy.path, options: smallOptions())
            } throws: { error in
                guard case EventStoreError.corrupted(let location, _) = error else { return false }
                return location.hasSuffix("data page \(named)")
            }
        }
        // The undamaged store opens.
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        try await reopened.close()
    }

    @Test func verifyDeepTreeTrap() async throws {
        let directory = TemporaryDirectory("review-deeper"); defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put(key(1), [1, 2, 3])]))
        try await store.close()
        try stackBranches(in: directory.path, depth: 5_000)
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let report = try await reopened.verify()
        #expect(!report.isClean)
        try await reopened.close()
    }
    @Test func verifyMissesTooDeepTree() async throws {
        let directory = TemporaryDirectory("review-deep"); defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put(key(1), [1, 2, 3])]))
        try await store.close()
        try stackBranches(in: directory.path, depth: 100)
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        await #expect { _ = try await reopened.get(key(1)) } throws: { error in
            guard case EventStoreError.corrupted = error else { return false }; return true }   // passes
        let report = try await reopened.verify()
        #expect(!report.isClean, "verify() says clean at depth \(report.depth) while get() throws corrupted")
        try await reopened.close()
    }
    @Test func compactionFailure() async throws {
        let plan = IOFaultPlan([IOFault(operation: .write, onCall: 1, kind: .shortWrite, pathSuffix: "data.compact")])
        let directory = TemporaryDirectory("review-compact-fault"); defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions(faults: plan))
        for round in 0..<4 {
            _ = try await store.commit(KeyValueTransaction(writes: (0..<300).map {
                .put(key($0), [UInt8](repeating: UInt8(round), count: $0 % 10 == 0 ? 6_000 : 200)) }))
        }
        let before = try await allEntries(store)
        await #expect(throws: (any Error).self) { try await store.compact() }
        var commitAfter = "ok"
        do { _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])])) } catch { commitAfter = "\(error)" }
        #expect(commitAfter == "ok", "after a failed compaction the open store refuses writes: \(commitAfter)")
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/data.compact"),
                "the failed compaction's partial file stays on disk while the store is open")
        try? await store.close()
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(try await allEntries(reopened).filter { $0.key != [1] } == before)              // passes
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/data.compact"))     // passes
        #expect(try await reopened.verify().isClean)                                            // passes
        try await reopened.close()
    }
    @Test func backupHonoursCancellation() async throws {
        try await withStore { store, _ in
            _ = try await store.commit(KeyValueTransaction(writes: [.put(key(1), [1])]))
            let destination = TemporaryDirectory("review-cancelled-backup"); defer { destination.remove() }
            let checkpoints = try store.statistics().checkpoints
            let (commitOutcome, backupOutcome) = await Task { () -> (String, String) in
                withUnsafeCurrentTask { $0?.cancel() }
                var commitOutcome = "completed"
                do { _ = try await store.commit(KeyValueTransaction(writes: [.put(key(2), [2])])) } catch { commitOutcome = "\(error)" }
                var backupOutcome = "completed"
                do { try await store.backup(to: destination.path) } catch { backupOutcome = "\(error)" }
                return (commitOutcome, backupOutcome)
            }.value
            #expect(commitOutcome.contains("CancellationError"), "\(commitOutcome)")          // passes
            #expect(backupOutcome.contains("CancellationError"), "backup: \(backupOutcome)")
            #expect(!FileManager.default.fileExists(atPath: destination.path + "/data"), "the cancelled backup wrote a store")
            #expect(try store.statistics().checkpoints == checkpoints, "the cancelled backup checkpointed")
        }
    }
    @Test func compactAndVerifyHonourCancellation() async throws {
        try await withStore { store, _ in
            _ = try await store.commit(KeyValueTransaction(writes: [.put(key(1), [1])]))
            let checkpoints = try store.statistics().checkpoints
            let (compactOutcome, verifyOutcome) = await Task { () -> (String, String) in
                withUnsafeCurrentTask { $0?.cancel() }
                var compactOutcome = "completed"
                do { _ = try await store.compact() } catch { compactOutcome = "\(error)" }
                var verifyOutcome = "completed"
                do { _ = try await store.verify() } catch { verifyOutcome = "\(error)" }
                return (compactOutcome, verifyOutcome)
            }.value
            #expect(compactOutcome.contains("CancellationError"), "compact: \(compactOutcome)")
            #expect(verifyOutcome.contains("CancellationError"), "verify: \(verifyOutcome)")
            #expect(try store.statistics().checkpoints == checkpoints, "the cancelled compact() or verify() checkpointed")
        }
    }

    /// A store of a few hundred pages, so every page loop polls its cancellation at least once.
    private func fillStore(_ store: PageFileKeyValueStore) async throws {
        for round in 0..<5 {
            _ = try await store.commit(KeyValueTransaction(writes: (0..<300).map {
                .put(key(round * 300 + $0), [UInt8](repeating: UInt8(round), count: $0 % 10 == 0 ? 6_000 : 200)) }))
        }
    }

    private func cancelled() -> Offload.Cancellation {
        let cancellation = Offload.Cancellation()
        cancellation.cancel()
        return cancellation
    }

    @Test func compactionSyncFailureLeavesTheStoreWritable() async throws {
        let plan = IOFaultPlan([IOFault(operation: .sync, onCall: 1, kind: .fail(EIO), pathSuffix: "data.compact")])
        let directory = TemporaryDirectory("review-compact-sync"); defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions(faults: plan))
        try await fillStore(store)
        let before = try await allEntries(store)
        await #expect(throws: (any Error).self) { try await store.compact() }
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/data.compact"))
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        #expect(try await allEntries(store).filter { $0.key != [1] } == before)
        let report = try await store.compact()
        #expect(report.pagesAfter <= report.pagesBefore)
        #expect(try await store.verify().isClean)
        try await store.close()
    }

    /// Cancellation while the compacted file is written (not only at entry): it is removed, the store is unchanged.
    @Test func compactionCancelledWhileWriting() async throws {
        try await withStore { store, directory in
            try await fillStore(store)
            let before = try await allEntries(store)
            let temporary = directory.path + "/data.compact"
            let cancellation = cancelled()
            let outcome = try await store.writerLock.withLock { () -> String in
                do { _ = try store.writeCompacted(to: temporary, cancellation: cancellation); return "completed" }
                catch { return "\(error)" }
            }
            #expect(outcome.contains("CancellationError"), "\(outcome)")
            #expect(!FileManager.default.fileExists(atPath: temporary))
            _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
            #expect(try await allEntries(store).filter { $0.key != [1] } == before)
            #expect(try await store.verify().isClean)
        }
    }

    /// Cancellation between chunks of a backup's copy: nothing is left in (or as) the destination.
    @Test func backupCancelledWhileCopying() async throws {
        try await withStore { store, _ in
            try await fillStore(store)
            try await store.checkpoint()
            let destination = TemporaryDirectory("review-cancelled-copy"); defer { destination.remove() }
            let cancellation = cancelled()
            let outcome = try await store.writerLock.withLock { () -> String in
                let state = store.writer.state
                do {
                    try PageFileKeyValueStore.copy(state.meta, from: state.reader, to: destination.path, cancellation: cancellation)
                    return "completed"
                } catch { return "\(error)" }
            }
            #expect(outcome.contains("CancellationError"), "\(outcome)")
            #expect(!FileManager.default.fileExists(atPath: destination.path), "the cancelled copy left its destination")
            try await store.backup(to: destination.path)
            let copy = try await PageFileKeyValueStore.open(directory: destination.path, options: smallOptions())
            #expect(try await allEntries(copy) == allEntries(store))
            try await copy.close()
        }
    }

    /// Cancellation during verify's walk stops it with CancellationError.
    @Test func verifyCancelledWhileWalking() async throws {
        try await withStore { store, _ in
            try await fillStore(store)
            try await store.checkpoint()
            let cancellation = cancelled()
            let outcome = try await store.writerLock.withLock { () -> String in
                let state = store.writer.state
                #expect(state.meta.pageCount > 256)
                do { _ = try store.check(state.meta, reader: state.reader, cancellation: cancellation); return "completed" }
                catch { return "\(error)" }
            }
            #expect(outcome.contains("CancellationError"), "\(outcome)")
            #expect(try await store.verify().isClean)
        }
    }
}
