// The public values of the snapshot store: a stored snapshot and its index entry.
//
// Invariants:
// - A snapshot's `version` is a version its stream reached when the snapshot was saved (1 ... stream version); its
//   `data` is the state after applying exactly the events `firstVersion` ... `version` (the events readers saw),
//   encoded in schema `schemaVersion`. `firstVersion` is 1 unless a deletion or retention hid the stream's start.

import EventStore
import Foundation

/// What the snapshot index records about one snapshot: its stream version and the schema of its state.
public struct SnapshotDescriptor: Sendable, Hashable, Comparable {
    /// The stream version the snapshot was taken at: its state folds the events ``firstVersion`` through this version.
    public var version: UInt64
    /// The schema version of the encoded state.
    public var schemaVersion: UInt32
    /// The first version readers saw when the snapshot was saved: the state folds events `firstVersion` through
    /// ``version``. A snapshot is only used while readers still see the stream from this version.
    public var firstVersion: UInt64

    /// Creates a descriptor.
    public init(version: UInt64, schemaVersion: UInt32, firstVersion: UInt64 = 1) {
        self.version = version
        self.schemaVersion = schemaVersion
        self.firstVersion = firstVersion
    }

    /// Orders descriptors by version, then by schema version and first version, so that the order agrees with
    /// equality (two descriptors neither before the other are equal).
    public static func < (lhs: SnapshotDescriptor, rhs: SnapshotDescriptor) -> Bool {
        (lhs.version, lhs.schemaVersion, lhs.firstVersion) < (rhs.version, rhs.schemaVersion, rhs.firstVersion)
    }
}

/// A stored snapshot: an aggregate's encoded state as of one version of its stream.
public struct Snapshot: Sendable, Hashable {
    /// The stream the snapshot belongs to.
    public var stream: StreamName
    /// The stream version the snapshot was taken at.
    public var version: UInt64
    /// The schema version of ``data``.
    public var schemaVersion: UInt32
    /// The first version readers saw when the snapshot was saved: ``data`` folds events `firstVersion` through
    /// ``version``.
    public var firstVersion: UInt64
    /// When the snapshot was saved, by the writer's clock (microsecond precision).
    public var takenAt: Date
    /// The encoded state.
    public var data: Data

    /// Creates a snapshot value.
    public init(
        stream: StreamName, version: UInt64, schemaVersion: UInt32, firstVersion: UInt64 = 1, takenAt: Date,
        data: Data
    ) {
        self.stream = stream
        self.version = version
        self.schemaVersion = schemaVersion
        self.firstVersion = firstVersion
        self.takenAt = takenAt
        self.data = data
    }

    /// The index entry of this snapshot.
    public var descriptor: SnapshotDescriptor {
        SnapshotDescriptor(version: version, schemaVersion: schemaVersion, firstVersion: firstVersion)
    }
}
