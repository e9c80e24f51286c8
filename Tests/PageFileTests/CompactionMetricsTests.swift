// Found by the fifteenth session's review of the read side (failed before its fix): a compaction's fdatasync of the
// rewritten page file was not counted in `fsyncs`, documented as every fdatasync of the WAL and the page file.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Page-file metrics across a compaction")
struct CompactionMetricsTests {
    @Test("compaction's fdatasync is counted, and each checkpoint count counts what its doc says")
    func compactionCounters() async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("compaction-metrics-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try await PageFileKeyValueStore.open(directory: directory)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await store.checkpoint()
        let beforeIdle = store.metrics().fsyncs
        try await store.checkpoint()
        let idleCheckpointSyncs = store.metrics().fsyncs - beforeIdle
        let (metrics, statistics) = (store.metrics(), try store.statistics())
        try await store.compact()  // its own (idle) checkpoint, then the rewritten file's fdatasync
        let (metricsAfter, statisticsAfter) = (store.metrics(), try store.statistics())
        #expect(metricsAfter.fsyncs - metrics.fsyncs == idleCheckpointSyncs + 1)
        #expect(metricsAfter.checkpoints - metrics.checkpoints == 1, "the compaction's own checkpoint")
        #expect(statisticsAfter.checkpoints - statistics.checkpoints == 2, "that checkpoint's meta and the rewrite's")
        try await store.close()
    }
}
