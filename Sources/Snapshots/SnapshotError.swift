// The errors only snapshots report. Everything else (bad arguments, corruption, a failed backend) is reported as
// EventStoreError, like the rest of the store.
//
// Invariants:
// - When a call throws one of these, nothing was written.

import EventStore

/// Errors of the snapshot store and the snapshotting repository. Each description says what happened and what to do.
public enum SnapshotError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A snapshot or a load asked for a version the stream has not reached; nothing was written.
    case versionBeyondStream(stream: StreamName, requested: UInt64, streamVersion: UInt64)
    /// The stream has passed `version`, but that version is no longer visible: the stream was deleted (and
    /// recreated) after it, or retention hides it.
    case versionNotVisible(stream: StreamName, version: UInt64)
    /// A stored snapshot in a readable schema could not be decoded or migrated into the current state type.
    case unreadableSnapshot(stream: StreamName, version: UInt64, schemaVersion: UInt32, reason: String)

    /// What happened and what to do about it.
    public var description: String {
        switch self {
        case .versionBeyondStream(let stream, let requested, let streamVersion):
            "stream \"\(stream)\" is at version \(streamVersion), so there is no version \(requested); "
                + "ask for a version at most \(streamVersion)"
        case .versionNotVisible(let stream, let version):
            "version \(version) of stream \"\(stream)\" is no longer visible (deleted, or hidden by retention); "
                + "ask for a later version"
        case .unreadableSnapshot(let stream, let version, let schemaVersion, let reason):
            "the snapshot of \"\(stream)\" at version \(version) (schema \(schemaVersion)) could not be read: "
                + "\(reason); raise the schema version when the state's encoding changes, or register a migration"
        }
    }
}
