// SnapshotPolicy: when the snapshotting repository takes snapshots on its own, and how many it keeps.
//
// Invariants:
// - An interval, when set, is at least 1, and a retention, when set, is at least 1 (checked by `validated()`), so a
//   policy can never ask to snapshot at every fractional event or to keep no snapshot at all.

import EventStore

/// When snapshots are taken automatically on save, and how many are kept per stream.
public struct SnapshotPolicy: Sendable, Hashable {
    /// Take a snapshot on save whenever the stream's version passes a multiple of this many events; nil never
    /// takes one automatically.
    public var interval: UInt64?
    /// Keep only this many of the newest snapshots per stream, pruning older ones in the same transaction as each
    /// new snapshot; nil keeps them all.
    public var retention: Int?

    /// Creates a policy.
    public init(interval: UInt64? = nil, retention: Int? = nil) {
        self.interval = interval
        self.retention = retention
    }

    /// Snapshots are only taken when asked for, and all are kept.
    public static let manual = SnapshotPolicy()

    /// A snapshot every `interval` events on save, keeping the newest `retention` (all when nil).
    public static func every(_ interval: UInt64, keepingLast retention: Int? = nil) -> SnapshotPolicy {
        SnapshotPolicy(interval: interval, retention: retention)
    }

    /// Whether saving moves a stream from version `old` to `new` across a multiple of the interval.
    func isDue(from old: UInt64, to new: UInt64) -> Bool {
        guard let interval, interval > 0 else { return false }
        return new / interval > old / interval
    }

    /// The policy, checked.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` for an interval or a retention below 1.
    func validated() throws -> SnapshotPolicy {
        if let interval, interval < 1 {
            throw EventStoreError.invalidArgument("a snapshot interval must be at least 1 event, got \(interval)")
        }
        if let retention, retention < 1 {
            throw EventStoreError.invalidArgument("a snapshot retention must keep at least 1 snapshot, got \(retention)")
        }
        return self
    }
}
