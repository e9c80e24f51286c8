// Soft and hard deletion of a stream, recorded in the global log.
//
// Invariants:
// - A deletion is one key-value transaction: it rewrites the stream head (state and hiddenThrough) and appends one
//   ``StreamDeletion`` event to `$deleted` at the next global position, so global-log readers see every deletion in
//   commit order, and a failed deletion changes nothing.
// - Deletion removes no events; reads hide them at once (StreamVisibility) and scavenge removes them later.
// - The head keeps the old version, so a soft-deleted stream recreated by an append continues its versions, and a
//   hard-deleted one stays a tombstone that every later append is refused against.

import EventStore
import Foundation

extension KeyValueEventStore {
    /// Soft- or hard-deletes `stream` and records the deletion in `$deleted`, in one transaction.
    public func delete(_ stream: StreamName, expectedVersion: ExpectedVersion, mode: DeletionMode) async throws
        -> UInt64
    {
        guard !stream.isSystem else {
            throw EventStoreError.invalidArgument("system stream \"\(stream)\" cannot be deleted")
        }
        let system = StreamName.deletedStreams
        let clock = self.clock
        let eventID = UUID()
        let outcome = try await backendCall {
            try await self.backend.update { context -> (transaction: KeyValueTransaction, value: UInt64) in
                let entries = try await context.get([
                    KeyLayout.globalHead, KeyLayout.streamHead(stream), KeyLayout.lease(stream),
                    KeyLayout.streamHead(system), KeyLayout.streamMetadata(stream),
                ])
                let head = try entries[1].map { try StreamHead.decode($0.value, stream: stream) }
                try Self.checkDeletable(stream, head: head, lease: entries[2], expectedVersion: expectedVersion, mode: mode)
                let version = head?.version ?? 0
                let record = try StreamDeletion(stream: stream.rawValue, mode: mode, lastVersion: version).encoded()
                let event = EventData(id: eventID, type: StreamDeletion.eventType, data: record)
                let globalHead = try entries[0].map { try PositionValue.decode($0.value, location: "the global head") } ?? 0
                try Self.checkRoom(after: globalHead, for: 1, in: "the global head")
                let position = globalHead + 1
                let systemHead = try entries[3].map { try StreamHead.decode($0.value, stream: system) }
                try Self.checkRoom(after: systemHead?.version ?? 0, for: 1, in: "stream head of \"\(system)\"")
                let systemVersion = (systemHead?.version ?? 0) + 1
                // Read after the read above, as an append reads it (KeyValueEventStore.buildTransaction).
                let prepared = EventRecord.prepare(
                    event, stream: system,
                    recordedAtMicroseconds: try EventRecord.microseconds(clock(), of: "the store's clock reading"))
                var writes: [KeyWrite] = [
                    .put(KeyLayout.log(position), EventRecord.encode(prepared: prepared, version: systemVersion)),
                    .put(KeyLayout.streamIndex(system, version: systemVersion), StreamIndexRun.value(lastPosition: position, count: 1)),
                    .put(KeyLayout.eventID(eventID), PositionValue.encode(position)),
                    .put(
                        KeyLayout.streamHead(system),
                        StreamHead(version: systemVersion, lastPosition: position).encoded()),
                    .put(KeyLayout.globalHead, PositionValue.encode(position)),
                ]
                writes.append(contentsOf: KeyLayout.secondaryIndexWrites(stream: system, type: event.type, position: position))
                let deleted = StreamHead(
                    version: version, lastPosition: head?.lastPosition ?? 0,
                    state: mode == .hard ? .hardDeleted : .softDeleted, hiddenThrough: version)
                writes.append(.put(KeyLayout.streamHead(stream), deleted.encoded()))
                // A soft delete takes the place of truncateBefore: one left in place would hide the events that
                // recreate the stream, up to its version.
                // The put counts one metadata version, as any change does; emptied metadata keeps its key.
                if mode == .soft, let entry = entries[4] {
                    var metadata = try StreamMetadataRecord.decode(entry.value, stream: stream)
                    if metadata.truncateBefore != nil {
                        metadata.truncateBefore = nil
                        writes.append(.put(KeyLayout.streamMetadata(stream), StreamMetadataRecord.encode(metadata)))
                    }
                }
                return (KeyValueTransaction(writes: writes), position)
            }
        }
        return outcome.value
    }

    private static func checkDeletable(
        _ stream: StreamName, head: StreamHead?, lease: KeyValueEntry?, expectedVersion: ExpectedVersion,
        mode: DeletionMode
    ) throws {
        if head?.state == .hardDeleted { throw EventStoreError.streamDeleted(stream) }
        try checkLease(lease, stream: stream, session: nil)
        let visible = head?.visibleVersion ?? 0
        // A soft delete needs a stream: one at a version above 0, whether or not retention hides its events (as in
        // KurrentDB, where a stream truncated past its end still exists). A tombstone may be placed on any name not
        // yet tombstoned.
        if mode == .soft && visible == 0 { throw EventStoreError.streamNotFound(stream) }
        guard expectedVersion.isSatisfied(byVersion: visible) else {
            throw EventStoreError.wrongExpectedVersion(stream: stream, expected: expectedVersion, actual: visible)
        }
    }
}
