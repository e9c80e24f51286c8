// BorrowedEvent: an event lent to a visitor in place, so a reader that folds over many events (a projection being
// rebuilt, a replay, an export) touches each payload where the store keeps it instead of allocating a copy per event.
//
// Invariants:
// - `data` is valid only during the visitor call that lends it: it points into the store's own buffers (for the page
//   file, a cached page). A visitor copies what it keeps (`copied()`, or `Data(event.data)`).
// - Every other field is an ordinary value and may be kept.
// - The events a visiting read lends are exactly the events the array-returning read with the same arguments
//   returns, in the same order (the conformance suite checks this on every backend).

import Foundation

/// An event lent to a visitor by ``EventStoring/read(_:from:direction:limit:visiting:)`` or
/// ``EventStoring/readAll(from:limit:visiting:)``. Its payload bytes are valid only inside the visitor call; copy
/// what you keep.
public struct BorrowedEvent {
    /// The event's id.
    public let id: UUID
    /// The stream it belongs to.
    public let stream: StreamName
    /// Its version in that stream, starting at 1.
    public let version: UInt64
    /// Its position in the global log.
    public let position: UInt64
    /// When it was committed, by the writer's clock.
    public let recordedAt: Date
    /// The event type name.
    public let type: String
    /// The payload bytes, lent: valid only during the visitor call.
    public let data: UnsafeRawBufferPointer
    /// Correlation, causation and free-form properties.
    public let metadata: EventMetadata

    /// Lends an event; the caller keeps `data` valid and unchanged for the length of the visit.
    public init(
        id: UUID, stream: StreamName, version: UInt64, position: UInt64, recordedAt: Date, type: String,
        data: UnsafeRawBufferPointer, metadata: EventMetadata
    ) {
        self.id = id
        self.stream = stream
        self.version = version
        self.position = position
        self.recordedAt = recordedAt
        self.type = type
        self.data = data
        self.metadata = metadata
    }

    /// A recorded event that outlives the visit (the payload copied).
    public func copied() -> RecordedEvent {
        RecordedEvent(
            id: id, stream: stream, version: version, position: position, recordedAt: recordedAt, type: type,
            data: data.isEmpty ? Data() : Data(data), metadata: metadata)
    }

    /// Lends `event`'s payload in place to `visit` and returns what it returned.
    public static func lend<T>(_ event: RecordedEvent, to visit: (BorrowedEvent) throws -> T) rethrows -> T {
        try event.data.withUnsafeBytes { bytes in
            try visit(
                BorrowedEvent(
                    id: event.id, stream: event.stream, version: event.version, position: event.position,
                    recordedAt: event.recordedAt, type: event.type, data: bytes, metadata: event.metadata))
        }
    }
}
