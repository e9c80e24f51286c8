// Stream metadata (retention rules), stored under `0x07 name`. Its version is the key's own per-key version (the
// contract's: writes since the key was created, etcd's semantics), so every write counts, whichever release of this
// code made it.
//
// Invariants:
// - Metadata is validated before it is written; invalid metadata writes nothing.
// - Every change puts the record, also a change to empty metadata (which keeps the key with no limits, so the
//   version never goes back and an expectation read before a clear cannot match again after later changes). No key
//   means version 0: never set (or cleared by a release that deleted the key, before metadata was versioned).
// - The version is checked in the transaction that writes, against the key read in it.
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
        return VersionedStreamMetadata(
            metadata: try StreamMetadataRecord.decode(entry.value, stream: stream), version: entry.version)
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
                let current = entries[2]?.version ?? 0
                guard expectedVersion.isSatisfied(byVersion: current) else {
                    throw EventStoreError.wrongExpectedMetadataVersion(
                        stream: stream, expected: expectedVersion, actual: current)
                }
                // A put counts one more write of the key (1 for a key that was absent).
                let write = KeyWrite.put(metadataKey, StreamMetadataRecord.encode(metadata))
                return (KeyValueTransaction(writes: [write]), current + 1)
            }
        }.value
    }
}
