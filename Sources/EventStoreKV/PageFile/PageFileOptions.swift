// PageFileOptions: how a page-file store is created and run.
//
// Invariants:
// - `pageSize` is a power of two in 4...64 KiB and is fixed when the store is created; reopening with another page
//   size is refused with `incompatibleStore` (nothing is changed).
// - Defaults are the safe choice: full durability, a 64 MiB page cache, a checkpoint every 32 MiB of WAL.
// - `readOnly` stores never write the data file, the WAL or the lock file: they are never created, never
//   checkpointed (not on open, not on close), and every write is refused. WAL records past the last checkpoint are
//   replayed in memory only. Their files are opened for reading only and they take no flock (only a read lock that
//   pins their snapshot, ReaderPins.swift), so a store on a read-only file system, or in files the process may only
//   read, opens read-only, and so does a store a writer in another process has open: the read-only store reads a
//   snapshot beside it (ReadOnlySnapshot.swift).

import EventStore

/// Options for ``PageFileKeyValueStore``.
public struct PageFileOptions: Sendable {
    /// Bytes per page: a power of two from 4 KiB to 64 KiB. Fixed when the store is created.
    public var pageSize: Int
    /// Upper bound of the page cache, in MiB.
    public var cacheSizeMB: Int
    /// When an acknowledged commit is safe from a crash; see ``Durability``.
    public var durability: Durability
    /// A checkpoint runs once the WAL holds this many MiB (ESENT's CheckpointSizeMB), and on close.
    public var checkpointThresholdMB: Int
    /// How many recent changes are kept for ``PageFileKeyValueStore/changes(after:prefix:)`` watchers that start in
    /// the past.
    public var historyLimit: Int
    /// How many undelivered changes a watcher may hold before it is dropped (at least 1).
    public var watchBufferLimit: Int
    /// Opens an existing store as a read-only snapshot, without ever writing a file of it (for inspection tools and
    /// readers in other processes). A missing store is an error instead of being created; commits, checkpoints and
    /// compaction are refused with `invalidArgument`. Its files are opened for reading only and the writer's lock is
    /// not taken, so this opens a store on a read-only file system, in files the process may only read, or held by a
    /// writer in another process.
    ///
    /// The store reads the state committed when it opened (including commits a writer has written but not yet made
    /// durable). ``PageFileKeyValueStore/refresh()`` brings it up to the writer's later commits and checkpoints.
    /// The snapshot is pinned with a byte-range lock on the directory's `lock` file, so a writer does not reuse its
    /// pages while it is open (which makes the writer's file grow while a reader keeps an old snapshot: refresh it
    /// or close it; ``PageFileStatistics/oldestPinnedCheckpoint`` shows the oldest one pinned). Where it cannot be pinned (the `lock` file is missing or cannot be opened, or the
    /// writer is an older build that does not look for pins), reads that need a page the writer may have reused
    /// throw `EventStoreError.snapshotExpired`; refresh() or open the store again then. A read never returns bytes
    /// of another state. A read-only store judges keys put with a TTL by their expiry alone: it cannot know when
    /// the writer it reads beside opened, so it still sees the TTL keys (session leases) of an earlier writable open,
    /// which a writable open reads as expired (see ``KeyWrite/put(_:_:ttl:)``).
    public var readOnly: Bool
    /// Called with notable events (checkpoints, recovery, entering the failed state); see ``PageFileEvent``.
    public var observer: (@Sendable (PageFileEvent) -> Void)?
    /// Planned I/O faults, for tests of the failure paths.
    var faults: IOFaultPlan?

    /// Creates options; every argument has a production default.
    public init(
        pageSize: Int = 8192, cacheSizeMB: Int = 64, durability: Durability = .full, checkpointThresholdMB: Int = 32,
        historyLimit: Int = 100_000, watchBufferLimit: Int = 100_000, readOnly: Bool = false,
        observer: (@Sendable (PageFileEvent) -> Void)? = nil
    ) {
        self.readOnly = readOnly
        self.observer = observer
        self.pageSize = pageSize
        self.cacheSizeMB = cacheSizeMB
        self.durability = durability
        self.checkpointThresholdMB = checkpointThresholdMB
        self.historyLimit = historyLimit
        self.watchBufferLimit = watchBufferLimit
    }

    /// Throws `invalidArgument` for out-of-range options.
    func validate() throws {
        guard Page.sizeRange.contains(pageSize), pageSize.nonzeroBitCount == 1 else {
            throw EventStoreError.invalidArgument("pageSize must be a power of two from 4096 to 65536, got \(pageSize)")
        }
        // Upper bounds (1 TiB each) keep the byte counts derived from them far from Int64's range.
        guard (1...(1 << 20)).contains(cacheSizeMB) else {
            throw EventStoreError.invalidArgument("cacheSizeMB must be from 1 to 1048576 (1 TiB), got \(cacheSizeMB)")
        }
        guard (1...(1 << 20)).contains(checkpointThresholdMB) else {
            throw EventStoreError.invalidArgument(
                "checkpointThresholdMB must be from 1 to 1048576 (1 TiB), got \(checkpointThresholdMB)")
        }
        guard watchBufferLimit > 0 else {
            throw EventStoreError.invalidArgument("watchBufferLimit must be at least 1, got \(watchBufferLimit)")
        }
        if case .deferred(let delay) = durability, delay <= .zero {
            throw EventStoreError.invalidArgument("a deferred durability delay must be positive")
        }
    }
}
