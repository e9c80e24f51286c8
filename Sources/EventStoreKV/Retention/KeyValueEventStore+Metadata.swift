// Stream metadata (retention rules), stored under `0x07 name`.
//
// Invariants:
// - Metadata is validated before it is written; invalid metadata writes nothing.
// - Setting empty metadata deletes the key, so "no metadata" has one representation.
// - Metadata of a hard-deleted stream cannot be changed (the stream can never hold events again).
// - Metadata of a stream a session holds cannot be changed from outside it (streamLocked), as it cannot be deleted:
//   retention can hide every event the holder wrote.

import EventStore
import Foundation

extension KeyValueEventStore {
    /// The retention rules of `stream` (empty if none were set).
    public func metadata(of stream: StreamName) async throws -> StreamMetadata {
        guard let entry = try await backendCall({ try await self.backend.get(KeyLayout.streamMetadata(stream)) }) else {
            return StreamMetadata()
        }
        return try StreamMetadataRecord.decode(entry.value, stream: stream)
    }

    /// Sets the retention rules of `stream`; reads honour them at once.
    /// - Throws: ``EventStoreError/streamLocked(stream:holder:leaseExpiresAt:)`` while a session holds the stream,
    ///   ``EventStoreError/streamDeleted(_:)`` for a hard-deleted stream.
    public func setMetadata(_ metadata: StreamMetadata, for stream: StreamName) async throws {
        try metadata.validate()
        let key = KeyLayout.streamMetadata(stream)
        let write: KeyWrite = metadata.isEmpty ? .delete(key) : .put(key, StreamMetadataRecord.encode(metadata))
        let (headKey, leaseKey) = (KeyLayout.streamHead(stream), KeyLayout.lease(stream))
        _ = try await backendCall {
            try await self.backend.update { context -> (transaction: KeyValueTransaction, value: Bool) in
                let entries = try await context.get([headKey, leaseKey])
                if let entry = entries[0], try StreamHead.decode(entry.value, stream: stream).state == .hardDeleted {
                    throw EventStoreError.streamDeleted(stream)
                }
                // Retention can hide every event of a stream, as a deletion does: a session's stream is as safe
                // from it as from a deletion, or from an append without the session.
                try Self.checkLease(entries[1], stream: stream, session: nil)
                return (KeyValueTransaction(writes: [write]), true)
            }
        }
    }
}
