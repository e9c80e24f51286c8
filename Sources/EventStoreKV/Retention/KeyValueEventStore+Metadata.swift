// Stream metadata (retention rules), stored under `0x07 name` with the count of its changes (its version).
//
// Invariants:
// - Metadata is validated before it is written; invalid metadata writes nothing.
// - Every change writes the record at the next version, also a change to empty metadata (which keeps the key, so the
//   version never goes back and an expectation read before a clear cannot match again after later changes). No
//   record means version 0: never set.
// - The version is checked in the transaction that writes, against the record read in it.
// - Metadata of a hard-deleted stream cannot be changed (the stream can never hold events again).
// - Metadata of a stream a session holds cannot be changed from outside it (streamLocked), as it cannot be deleted:
//   retention can hide every event the holder wrote.

import EventStore
import Foundation

extension KeyValueEventStore {
    /// The retention rules of `stream` (empty if none were set) and how many times they were set.
    public func versionedMetadata(of stream: StreamName) async throws -> VersionedStreamMetadata {
        guard let entry = try await backendCall({ try await self.backend.get(KeyLayout.streamMetadata(stream)) }) else {
            return VersionedStreamMetadata(metadata: StreamMetadata(), version: 0)
        }
        return try StreamMetadataRecord.decodeVersioned(entry.value, stream: stream)
    }

    /// Sets the retention rules of `stream` if their version meets `expectedVersion`; reads honour them at once.
    /// - Returns: the new version.
    /// - Throws: ``EventStoreError/wrongExpectedMetadataVersion(stream:expected:actual:)`` when the version differs,
    ///   ``EventStoreError/streamLocked(stream:holder:leaseExpiresAt:)`` while a session holds the stream,
    ///   ``EventStoreError/streamDeleted(_:)`` for a hard-deleted stream.
    @discardableResult
    public func setMetadata(_ metadata: StreamMetadata, for stream: StreamName, expectedVersion: ExpectedVersion)
        async throws -> UInt64
    {
        try metadata.validate()
        let (headKey, leaseKey, metadataKey) =
            (KeyLayout.streamHead(stream), KeyLayout.lease(stream), KeyLayout.streamMetadata(stream))
        return try await backendCall {
            try await self.backend.update { context -> (transaction: KeyValueTransaction, value: UInt64) in
                let entries = try await context.get([headKey, leaseKey, metadataKey])
                if let entry = entries[0], try StreamHead.decode(entry.value, stream: stream).state == .hardDeleted {
                    throw EventStoreError.streamDeleted(stream)
                }
                // Retention can hide every event of a stream, as a deletion does: a session's stream is as safe
                // from it as from a deletion, or from an append without the session.
                try Self.checkLease(entries[1], stream: stream, session: nil)
                let stored = try entries[2].map { try StreamMetadataRecord.decodeVersioned($0.value, stream: stream) }
                let current = stored?.version ?? 0
                guard expectedVersion.isSatisfied(byVersion: current) else {
                    throw EventStoreError.wrongExpectedMetadataVersion(
                        stream: stream, expected: expectedVersion, actual: current)
                }
                try Self.checkMetadataRoom(after: current, of: stream)
                let write = KeyWrite.put(metadataKey, StreamMetadataRecord.encode(metadata, version: current + 1))
                return (KeyValueTransaction(writes: [write]), current + 1)
            }
        }.value
    }

    /// Refuses a change to metadata already at the last version a UInt64 counts (only a damaged record can be).
    static func checkMetadataRoom(after version: UInt64, of stream: StreamName) throws {
        guard version < .max else {
            throw EventStoreError.corrupted(
                location: "metadata of stream \"\(stream)\"", detail: "version \(version) leaves no room for a change")
        }
    }
}
