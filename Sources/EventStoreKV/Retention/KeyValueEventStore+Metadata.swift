// Stream metadata (retention rules), stored under `0x07 name`.
//
// Invariants:
// - Metadata is validated before it is written; invalid metadata writes nothing.
// - Setting empty metadata deletes the key, so "no metadata" has one representation.
// - Metadata of a hard-deleted stream cannot be changed (the stream can never hold events again).

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
    public func setMetadata(_ metadata: StreamMetadata, for stream: StreamName) async throws {
        try metadata.validate()
        let key = KeyLayout.streamMetadata(stream)
        let write: KeyWrite = metadata.isEmpty ? .delete(key) : .put(key, StreamMetadataRecord.encode(metadata))
        let headKey = KeyLayout.streamHead(stream)
        _ = try await backendCall {
            try await self.backend.update { context -> (transaction: KeyValueTransaction, value: Bool) in
                if let entry = try await context.get(headKey),
                    try StreamHead.decode(entry.value, stream: stream).state == .hardDeleted
                {
                    throw EventStoreError.streamDeleted(stream)
                }
                return (KeyValueTransaction(writes: [write]), true)
            }
        }
    }
}
