// Durable consumer checkpoints: one key per consumer name (`0x09 name`), holding the last processed position.
//
// Invariants:
// - A checkpoint is one key written in its own transaction; it is as durable as any acknowledged append.
// - Consumer names are validated like stream names (non-empty, at most 255 UTF-8 bytes, no control characters).

import EventStore
import Foundation

extension KeyValueEventStore {
    /// The last position the named consumer stored, or nil if it never stored one.
    public func checkpoint(of consumer: String) async throws -> UInt64? {
        try Self.validateConsumer(consumer)
        guard let entry = try await backendCall({ try await self.backend.get(KeyLayout.checkpoint(consumer)) }) else {
            return nil
        }
        return try CheckpointRecord.decode(entry.value, consumer: consumer)
    }

    /// Stores `position` as the named consumer's checkpoint, durably, in its own transaction.
    public func saveCheckpoint(_ position: UInt64, for consumer: String) async throws {
        try Self.validateConsumer(consumer)
        let write = KeyWrite.put(KeyLayout.checkpoint(consumer), CheckpointRecord.encode(position))
        _ = try await backendCall { try await self.backend.commit(KeyValueTransaction(writes: [write])) }
    }

    static func validateConsumer(_ consumer: String) throws {
        guard !consumer.isEmpty, consumer.utf8.count <= StreamName.maximumLength,
            !consumer.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw EventStoreError.invalidArgument(
                "a consumer name must be 1 to \(StreamName.maximumLength) UTF-8 bytes without control characters")
        }
    }
}
