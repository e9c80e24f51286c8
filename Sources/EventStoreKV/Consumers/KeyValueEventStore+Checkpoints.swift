// Durable consumer checkpoints: one key per consumer name (`0x09 name`), holding the last processed position.
//
// Invariants:
// - A checkpoint is one key written in its own transaction (with a session's lease check and renewal, when saved
//   through a session); it is as durable as any acknowledged append.
// - Consumer names are validated like stream names (non-empty, at most 255 UTF-8 bytes, no control characters).
// - A checkpoint never names a position past the log's last: resuming after it would skip events written later.

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
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` for a position past the log's last: a consumer resuming
    ///   after it would skip the events later written up to it.
    public func saveCheckpoint(_ position: UInt64, for consumer: String) async throws {
        let write = try await checkpointWrite(position, for: consumer)
        _ = try await backendCall { try await self.backend.commit(KeyValueTransaction(writes: [write])) }
    }

    /// The write that stores `position` as the consumer's checkpoint, once the name and the position are checked.
    func checkpointWrite(_ position: UInt64, for consumer: String) async throws -> KeyWrite {
        try Self.validateConsumer(consumer)
        // The head only grows, so a position at or below it now stays so: no need to check it in the transaction.
        let last = try await lastPosition()
        guard position <= last else {
            throw EventStoreError.invalidArgument(
                "checkpoint \(position) for consumer \"\(consumer)\" is past the log's last position, \(last)")
        }
        return KeyWrite.put(KeyLayout.checkpoint(consumer), CheckpointRecord.encode(position))
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
