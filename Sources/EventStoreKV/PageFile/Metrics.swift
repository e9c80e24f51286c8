// Metrics: counters of a page-file store for monitoring, and the observer hook for notable events.
//
// Invariants:
// - The hot path (commit, flush, cache lookup) only does relaxed atomic adds here: no locks, no allocation.
// - A snapshot reads each counter once; counters only grow, so a snapshot is never ahead of the store, though two
//   counters of one snapshot may be a few operations apart.
// - The observer is called outside the engine's locks, on the thread that caused the event (the WAL flusher, a
//   committer or the opener). It must return quickly and must not wait for the store.

import EventStore
import Synchronization

/// A notable event of a page-file store, delivered to ``PageFileOptions/observer``.
public enum PageFileEvent: Sendable {
    /// The store was opened: what recovery found (also when there was nothing to recover).
    case recovered(RecoveryReport)
    /// A checkpoint moved the WAL into the page file.
    /// - Parameters: epoch: the new meta page's epoch; duration: how long it took; walBytes: the WAL's size before it.
    case checkpointed(epoch: UInt64, duration: Duration, walBytes: UInt64)
    /// The store entered its failed state after an I/O error: it refuses writes until reopened.
    case failed(reason: String)
}

/// A snapshot of a page-file store's counters since it was opened; see ``PageFileKeyValueStore/metrics()``.
public struct PageFileMetrics: Sendable, Hashable {
    /// Transactions committed (each event-store append is one).
    public var commits: UInt64
    /// Bytes written to the WAL by commits (checkpoint writes to the page file are not counted).
    public var walBytesWritten: UInt64
    /// fdatasync calls on the WAL and the page file.
    public var fsyncs: UInt64
    /// Group commits by size: `groupCommitBatchSizes[i]` counts WAL writes that carried up to
    /// ``groupCommitBatchBounds``[i] transactions (the last bucket: more than the previous bound).
    public var groupCommitBatchSizes: [UInt64]
    /// Page-cache lookups served from memory.
    public var cacheHits: UInt64
    /// Page-cache lookups that read the file.
    public var cacheMisses: UInt64
    /// Checkpoints completed since the store was opened (a compaction's own checkpoint included, not the rewrite that
    /// follows it; ``PageFileStatistics/checkpoints`` counts both, since the store was created).
    public var checkpoints: UInt64
    /// Time spent in those checkpoints, in total.
    public var checkpointDuration: Duration
    /// The last checkpoint's duration (zero before the first).
    public var lastCheckpointDuration: Duration
    /// Bytes in the WAL now, including bytes queued for it.
    public var walBytes: UInt64

    /// The upper bounds of the group-commit histogram buckets; the last bucket is open-ended.
    public static let groupCommitBatchBounds: [UInt64] = [1, 2, 4, 8, 16, 32, 64, .max]

    /// The share of page lookups served from the cache, from 0 to 1 (0 if there were none).
    public var cacheHitRatio: Double {
        let lookups = cacheHits + cacheMisses
        return lookups == 0 ? 0 : Double(cacheHits) / Double(lookups)
    }
}

/// The live counters behind ``PageFileMetrics``.
final class StoreMetrics: Sendable {
    let commits = Atomic<UInt64>(0)
    let walBytesWritten = Atomic<UInt64>(0)
    let fsyncs = Atomic<UInt64>(0)
    let checkpoints = Atomic<UInt64>(0)
    let checkpointNanoseconds = Atomic<UInt64>(0)
    let lastCheckpointNanoseconds = Atomic<UInt64>(0)
    // One counter per histogram bucket (Atomic is not copyable, so it cannot live in an array).
    private let batch1 = Atomic<UInt64>(0), batch2 = Atomic<UInt64>(0), batch4 = Atomic<UInt64>(0)
    private let batch8 = Atomic<UInt64>(0), batch16 = Atomic<UInt64>(0), batch32 = Atomic<UInt64>(0)
    private let batch64 = Atomic<UInt64>(0), batchMore = Atomic<UInt64>(0)
    let observer: (@Sendable (PageFileEvent) -> Void)?

    init(observer: (@Sendable (PageFileEvent) -> Void)?) {
        self.observer = observer
    }

    /// Counts one WAL write that carried `transactions` commits of `bytes` bytes.
    func recordGroup(transactions: Int, bytes: Int) {
        commits.add(UInt64(transactions), ordering: .relaxed)
        walBytesWritten.add(UInt64(bytes), ordering: .relaxed)
        switch transactions {
        case ...1: batch1.add(1, ordering: .relaxed)
        case 2: batch2.add(1, ordering: .relaxed)
        case 3...4: batch4.add(1, ordering: .relaxed)
        case 5...8: batch8.add(1, ordering: .relaxed)
        case 9...16: batch16.add(1, ordering: .relaxed)
        case 17...32: batch32.add(1, ordering: .relaxed)
        case 33...64: batch64.add(1, ordering: .relaxed)
        default: batchMore.add(1, ordering: .relaxed)
        }
    }

    func recordSync() { fsyncs.add(1, ordering: .relaxed) }

    func recordCheckpoint(_ duration: Duration) {
        let nanoseconds = UInt64(max(0, duration.components.seconds)) * 1_000_000_000
            + UInt64(max(0, duration.components.attoseconds / 1_000_000_000))
        checkpoints.add(1, ordering: .relaxed)
        checkpointNanoseconds.add(nanoseconds, ordering: .relaxed)
        lastCheckpointNanoseconds.store(nanoseconds, ordering: .relaxed)
    }

    /// The histogram, in the order of ``PageFileMetrics/groupCommitBatchBounds``.
    func batchCounts() -> [UInt64] {
        [
            batch1.load(ordering: .relaxed), batch2.load(ordering: .relaxed), batch4.load(ordering: .relaxed),
            batch8.load(ordering: .relaxed), batch16.load(ordering: .relaxed), batch32.load(ordering: .relaxed),
            batch64.load(ordering: .relaxed), batchMore.load(ordering: .relaxed),
        ]
    }

    func notify(_ event: PageFileEvent) { observer?(event) }
}

extension PageFileKeyValueStore {
    /// The store's counters since it was opened: cheap (atomic loads), never blocks on the writer.
    public func metrics() -> PageFileMetrics {
        // The published reader's cache is the one reads use; after close, the counters keep their last values.
        let facts = published.facts()
        let cache = facts.reader.cache.statistics
        return PageFileMetrics(
            commits: counters.commits.load(ordering: .relaxed),
            walBytesWritten: counters.walBytesWritten.load(ordering: .relaxed),
            fsyncs: counters.fsyncs.load(ordering: .relaxed), groupCommitBatchSizes: counters.batchCounts(),
            cacheHits: cache.hits, cacheMisses: cache.misses,
            checkpoints: counters.checkpoints.load(ordering: .relaxed),
            checkpointDuration: .nanoseconds(Int64(counters.checkpointNanoseconds.load(ordering: .relaxed))),
            lastCheckpointDuration: .nanoseconds(Int64(counters.lastCheckpointNanoseconds.load(ordering: .relaxed))),
            walBytes: facts.walEnd ?? pipeline.walBytes)
    }

    /// The on-disk format version this build reads and writes.
    public static var formatVersion: UInt32 { MetaPage.formatVersion }
}
