// The key layout of the snapshot store, under tag 0x08 (reserved for snapshots in EventStoreKV's KeyLayout.swift;
// that enum is internal to EventStoreKV, so the byte is repeated here; change both together).
//
//   0x08 stream 0x00 collection 0x00 0x01               the index of one collection of the stream's snapshots
//   0x08 stream 0x00 collection 0x00 0x02 version(u64)  the snapshot of that collection at `version`
//
// A collection is one kind of state snapshotted from the stream (the repository uses its schema's name), so two
// aggregates or projections built from one stream never read or prune each other's snapshots.
//
// Invariants:
// - Stream names never contain 0x00 (control characters are rejected) and collection names are checked to contain
//   none, so each 0x00 ends its name and no (stream, collection)'s keys are a prefix of another's.
// - Versions are big-endian, so the byte order of record keys equals numeric version order.
// - Every snapshot key of a stream starts with `0x08 stream 0x00`, so deleting a stream's snapshots is one prefix.

import EventStore
import EventStoreKV

/// Builds the keys of one snapshot collection.
struct SnapshotKeys: Sendable {
    /// The tag byte of the snapshot key space; the same byte as `KeyTag.snapshot` in EventStoreKV.
    static let tag: UInt8 = 0x08
    /// The sub-tag of a collection's index.
    static let indexSubtag: UInt8 = 0x01
    /// The sub-tag of a collection's records.
    static let recordSubtag: UInt8 = 0x02
    /// The longest collection name, in UTF-8 bytes.
    static let maximumCollectionLength = 255

    /// The collection's name as bytes (no 0x00).
    let collection: [UInt8]

    /// Keys for the collection named `collection`.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` for a name containing U+0000 or longer than 255 bytes.
    init(collection: String) throws {
        let bytes = Array(collection.utf8)
        guard !bytes.contains(0), bytes.count <= Self.maximumCollectionLength else {
            throw EventStoreError.invalidArgument(
                "a snapshot collection name must have no NUL character and at most "
                    + "\(Self.maximumCollectionLength) UTF-8 bytes, got \(bytes.count) bytes")
        }
        self.collection = bytes
    }

    /// `0x08 stream 0x00 collection 0x00`: the prefix of every key of the collection for `stream`.
    func prefix(of stream: StreamName) -> Key {
        var key: Key = [Self.tag]
        key.reserveCapacity(stream.rawValue.utf8.count + collection.count + 12)
        key.append(contentsOf: stream.rawValue.utf8)
        key.append(0)
        key.append(contentsOf: collection)
        key.append(0)
        return key
    }

    /// The key of the collection's index for `stream`.
    func index(of stream: StreamName) -> Key {
        prefix(of: stream) + [Self.indexSubtag]
    }

    /// The key of the collection's snapshot of `stream` at `version`.
    func record(of stream: StreamName, at version: UInt64) -> Key {
        var key = prefix(of: stream) + [Self.recordSubtag]
        withUnsafeBytes(of: version.bigEndian) { key.append(contentsOf: $0) }
        return key
    }
}
