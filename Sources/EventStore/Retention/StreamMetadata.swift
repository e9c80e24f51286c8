// Stream metadata, deletion and listing: the public vocabulary of retention.
//
// Invariants:
// - Metadata only hides events from stream reads; it never renumbers anything. Versions and global positions of the
//   events that stay visible are unchanged, before and after a scavenge.
// - A deletion is recorded in the global log as one event of type ``StreamDeletion/eventType`` in the system stream
//   ``StreamName/deletedStreams``, committed in the same transaction as the deletion itself.

import Foundation

/// Retention rules for one stream, stored in the store. Events beyond any limit are hidden from stream reads as soon
/// as the metadata is set, and removed from storage by the next scavenge; under maxAge, only the expired events up
/// to the first unexpired one in version order (see ``maxAge``).
public struct StreamMetadata: Sendable, Hashable {
    /// Keep only the newest `maxCount` events; older ones are hidden. Must be at least 1.
    public var maxCount: UInt64?
    /// Hide events recorded longer ago than this, by the reader's clock. Must be positive, and at most 292 years.
    /// Scavenge removes the expired events up to the first unexpired one, in version order: an expired event after a
    /// fresher one (recorded by a clock that was behind) stays stored, and hidden, until those before it expire too.
    public var maxAge: Duration?
    /// Hide every event whose version is lower than this.
    public var truncateBefore: UInt64?

    /// Creates metadata; every limit is optional, and metadata with none leaves the stream unrestricted.
    public init(maxCount: UInt64? = nil, maxAge: Duration? = nil, truncateBefore: UInt64? = nil) {
        self.maxCount = maxCount
        self.maxAge = maxAge
        self.truncateBefore = truncateBefore
    }

    /// Whether no limit is set.
    public var isEmpty: Bool { maxCount == nil && maxAge == nil && truncateBefore == nil }

    /// Checks the limits' ranges.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` naming the limit out of range.
    public func validate() throws {
        if let maxCount, maxCount == 0 {
            throw EventStoreError.invalidArgument("maxCount must be at least 1; delete the stream to hide everything")
        }
        if let maxAge, maxAge <= .zero {
            throw EventStoreError.invalidArgument("maxAge must be positive, got \(maxAge)")
        }
        // Stores keep maxAge in whole nanoseconds in an Int64: longer, or a part of a nanosecond, would be stored as
        // a different value.
        if let maxAge, maxAge > .nanoseconds(Int64.max) {
            throw EventStoreError.invalidArgument("maxAge must be at most 292 years (Int64.max nanoseconds), got \(maxAge)")
        }
        if let maxAge, maxAge.components.attoseconds % 1_000_000_000 != 0 {
            throw EventStoreError.invalidArgument("maxAge must be a whole number of nanoseconds, got \(maxAge)")
        }
    }
}

/// A stream's retention rules as stored, with their version.
public struct VersionedStreamMetadata: Sendable, Hashable {
    /// The rules (empty if none were set).
    public var metadata: StreamMetadata
    /// How many times the rules were set (a soft delete that removes `truncateBefore` counts too), 0 if never: pass
    /// it as `.exact(version)` to set them only if no one changed them since this read.
    public var version: UInt64

    /// Creates a versioned value.
    public init(metadata: StreamMetadata, version: UInt64) {
        self.metadata = metadata
        self.version = version
    }
}

/// How a stream is deleted.
public enum DeletionMode: String, Sendable, Hashable, Codable {
    /// The stream reads as not found, but can be recreated: an append with ``ExpectedVersion/noStream`` or
    /// ``ExpectedVersion/any`` starts it again, with versions continuing from the old end. The deletion takes the
    /// place of the stream's `truncateBefore`, which it removes (as KurrentDB's soft delete sets `$tb` to the end),
    /// so that the events that recreate the stream read back; its other retention rules stay.
    case soft
    /// A tombstone: the stream reads as not found and every later append fails with
    /// ``EventStoreError/streamDeleted(_:)``.
    case hard
}

/// The payload of the system event that records a deletion in the global log.
public struct StreamDeletion: Sendable, Hashable, Codable {
    /// The event type of deletion records.
    public static let eventType = "$streamDeleted"

    /// The stream deleted.
    public var stream: String
    /// Soft or hard.
    public var mode: DeletionMode
    /// The stream's last version when it was deleted (0 if it had no events).
    public var lastVersion: UInt64

    /// Creates a deletion record.
    public init(stream: String, mode: DeletionMode, lastVersion: UInt64) {
        self.stream = stream
        self.mode = mode
        self.lastVersion = lastVersion
    }

    /// Encodes the record as JSON, the payload of the system event.
    public func encoded() throws -> Data {
        do {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return try encoder.encode(self)
        } catch {
            throw EventStoreError.codingFailed(type: Self.eventType, reason: "\(error)")
        }
    }

    /// Decodes the deletion recorded by `event`, or returns nil if it is not a deletion record.
    /// - Throws: ``EventStoreError/codingFailed(type:reason:)`` if it is one but its payload is unreadable.
    public static func decode(_ event: RecordedEvent) throws -> StreamDeletion? {
        guard event.type == eventType, event.stream == StreamName.deletedStreams else { return nil }
        do {
            return try JSONDecoder().decode(StreamDeletion.self, from: event.data)
        } catch {
            throw EventStoreError.codingFailed(type: eventType, reason: "\(error)")
        }
    }
}

/// A stream as listed by ``EventStoring/listStreams(prefix:after:limit:)``.
public struct StreamSummary: Sendable, Hashable {
    /// The stream's name.
    public var stream: StreamName
    /// Its current version: the version of its last event.
    public var version: UInt64

    /// Creates a summary.
    public init(stream: StreamName, version: UInt64) {
        self.stream = stream
        self.version = version
    }
}
