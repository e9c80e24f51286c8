// The outcome of saving through the snapshotting repository.
//
// Invariants:
// - `result` is the acknowledged append: once a save returns, its events are committed whatever `snapshot` says.
//   A snapshot that fails after the append is reported here, never thrown, so that a caller never retries (and
//   duplicates) an append that succeeded.

import EventStore

/// What happened to the automatic snapshot of a save.
public enum SnapshotOutcome: Sendable {
    /// The policy did not call for a snapshot.
    case notDue
    /// A snapshot was saved at this version.
    case taken(version: UInt64)
    /// A snapshot was due but could not be saved; the events were saved regardless. The next due save tries again.
    case failed(any Error)
}

/// The result of a save through ``SnapshottingRepository``.
public struct SavedAggregate<State: Aggregate>: Sendable {
    /// The append's result.
    public var result: AppendResult
    /// The state after the saved events, at the stream's new version. Its `replayedEvents` is that of the loaded
    /// aggregate it was built from.
    public var aggregate: LoadedAggregate<State>
    /// Whether a snapshot was taken.
    public var snapshot: SnapshotOutcome

    /// Creates a save result.
    public init(result: AppendResult, aggregate: LoadedAggregate<State>, snapshot: SnapshotOutcome) {
        self.result = result
        self.aggregate = aggregate
        self.snapshot = snapshot
    }
}
