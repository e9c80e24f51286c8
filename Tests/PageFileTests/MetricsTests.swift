// Metrics, the observer hook and read-only opening: the counters move with the work done, the observer hears of
// recovery, checkpoints and the failed state, and a read-only store never writes or creates anything.

import EventStore
@testable import EventStoreKV
import Foundation
import Glibc
import Synchronization
import Testing

/// Collects observer events (guarded by its lock).
private final class EventLog: Sendable {
    let events = Locked<[PageFileEvent]>([])
    func record(_ event: PageFileEvent) { events.withLock { $0.append(event) } }
    var checkpoints: Int { events.withLock { $0.filter { if case .checkpointed = $0 { true } else { false } }.count } }
    var recoveries: [RecoveryReport] {
        events.withLock { $0.compactMap { if case .recovered(let report) = $0 { report } else { nil } } }
    }
    var failures: [String] { events.withLock { $0.compactMap { if case .failed(let reason) = $0 { reason } else { nil } } } }
}

@Suite("Metrics and observer")
struct MetricsTests {
    @Test("many small commits to the same keys do not force checkpoints; only distinct dirty nodes count")
    func smallCommitsDoNotForceCheckpoints() async throws {
        // With a 1 MiB cache the dirty-node limit is 2,048 nodes of 4 KiB; each commit re-copies the same leaf, so
        // 3,000 commits dirty one node (plus the root), far below it, and the WAL stays far below its threshold.
        let options = PageFileOptions(pageSize: 4096, cacheSizeMB: 1, durability: .none, checkpointThresholdMB: 64)
        try await withStore(options: options) { store, _ in
            try await store.checkpoint()
            let before = store.metrics().checkpoints
            for index in 0..<3_000 {
                _ = try await store.commit(
                    KeyValueTransaction(writes: [.put([1], [UInt8(truncatingIfNeeded: index)]), .put([2], [1])]))
            }
            #expect(store.metrics().checkpoints == before)
        }
    }

    @Test("commits, WAL bytes, fsyncs, the batch histogram and checkpoints are counted; the observer hears them")
    func countersFollowTheWork() async throws {
        let log = EventLog()
        var options = smallOptions()
        options.observer = { log.record($0) }
        try await withStore(options: options) { store, _ in
            #expect(log.recoveries.map(\.created) == [true])
            let start = store.metrics()
            #expect(start.commits == 0 && start.walBytesWritten == 0)
            for index in 0..<10 { _ = try await store.commit(KeyValueTransaction(writes: [.put([UInt8(index)], [1, 2, 3])])) }
            let afterCommits = store.metrics()
            #expect(afterCommits.commits == 10)
            #expect(afterCommits.walBytesWritten > 30)
            #expect(afterCommits.fsyncs >= start.fsyncs + 1, "full durability syncs each group")
            let groups = afterCommits.groupCommitBatchSizes.reduce(0, +)
            #expect(groups >= 1 && groups <= 10)
            #expect(afterCommits.groupCommitBatchSizes.count == PageFileMetrics.groupCommitBatchBounds.count)
            let checkpointsBefore = afterCommits.checkpoints
            try await store.checkpoint()
            let afterCheckpoint = store.metrics()
            #expect(afterCheckpoint.checkpoints == checkpointsBefore + 1)
            #expect(afterCheckpoint.checkpointDuration > .zero && afterCheckpoint.lastCheckpointDuration > .zero)
            #expect(afterCheckpoint.fsyncs >= afterCommits.fsyncs + 3, "data, meta and WAL header are synced")
            #expect(log.checkpoints == Int(afterCheckpoint.checkpoints))
            _ = try await store.get([3])
            let reads = store.metrics()
            #expect(reads.cacheHits + reads.cacheMisses > 0)
            #expect(reads.cacheHitRatio >= 0 && reads.cacheHitRatio <= 1)
        }
    }

    @Test("the observer hears of the failed state after a WAL fdatasync error")
    func observerHearsFailure() async throws {
        let directory = TemporaryDirectory("observer-failure")
        defer { directory.remove() }
        try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions()).close()
        let log = EventLog()
        var options = smallOptions(faults: IOFaultPlan([IOFault(operation: .sync, onCall: 1, kind: .fail(EIO), pathSuffix: "/wal")]))
        options.observer = { log.record($0) }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        await #expect(throws: (any Error).self) { _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])])) }
        #expect(log.failures.count == 1, "\(log.failures)")
        #expect(store.metrics().commits == 0, "a failed group is not counted as committed")
        try? await store.close()
    }

    @Test("the event store counts appends, events and open sessions")
    func eventStoreMetrics() async throws {
        try await withStore { backend, _ in
            let store = KeyValueEventStore(backend: backend)
            let stream = try StreamName("metrics-1")
            // Sizes (payload, type, property keys and values): 5 + 1, and 0 + 1 + 1 + 2.
            let events = [
                EventData(type: "A", data: Data("12345".utf8)),
                EventData(type: "B", data: Data(), metadata: EventMetadata(properties: ["k": "vv"])),
            ]
            _ = try await store.append(events, to: stream, expectedVersion: .noStream)
            _ = try await store.append(events, to: stream, expectedVersion: .noStream)  // idempotent: writes nothing
            let session = try await store.openSession(on: try StreamName("metrics-2"), sessionTimeout: .seconds(60), openTimeout: .zero)
            let metrics = try await store.metrics()
            #expect(metrics.appends == 1)
            #expect(metrics.eventsAppended == 2)
            #expect(metrics.eventBytesAppended == 10)
            #expect(metrics.openSessions == 1)
            #expect(metrics.engine?.commits ?? 0 >= 2, "the append and the session's lease")
            try await session.close()
            #expect(try await store.metrics().openSessions == 0)
        }
    }

    @Test("a read-only store refuses writes, never checkpoints and leaves its files unchanged")
    func readOnlyOpen() async throws {
        let directory = TemporaryDirectory("readonly")
        defer { directory.remove() }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await writer.close()
        let other = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await other.commit(KeyValueTransaction(writes: [.put([2], [2])]))
        await other.closeWithoutCheckpoint()  // leaves a WAL record to replay
        let before = try ["data", "wal"].map { try Data(contentsOf: URL(fileURLWithPath: directory.file($0))) }

        var options = smallOptions()
        options.readOnly = true
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        #expect(store.recovery.replayedTransactions == 1)
        #expect(try await store.get([2])?.value == [2], "WAL records are replayed in memory")
        await #expect(throws: EventStoreError.self) { _ = try await store.commit(KeyValueTransaction(writes: [.put([3], [3])])) }
        await #expect(throws: EventStoreError.self) { try await store.checkpoint() }
        #expect(try await store.verify().isClean)
        try await store.close()
        let after = try ["data", "wal"].map { try Data(contentsOf: URL(fileURLWithPath: directory.file($0))) }
        #expect(after == before)
    }

    @Test("read-only opening never creates a store")
    func readOnlyNeverCreates() async throws {
        let directory = TemporaryDirectory("readonly-missing")
        defer { directory.remove() }
        var options = smallOptions()
        options.readOnly = true
        await #expect(throws: EventStoreError.self) {
            _ = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        }
        #expect(!FileManager.default.fileExists(atPath: directory.path))
        try FileManager.default.createDirectory(atPath: directory.path, withIntermediateDirectories: true)
        await #expect(throws: EventStoreError.self) {
            _ = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path).isEmpty)
    }
}
