// The key layout of the snapshot store, under tag 0x08 (reserved for snapshots in EventStoreKV's KeyLayout.swift;
// that enum is internal to EventStoreKV, so the byte is repeated here; change both together).
//
//   0x08 name 0x00 0x01               the snapshot index of stream `name` (SnapshotIndex.swift)
//   0x08 name 0x00 0x02 version(u64)  the snapshot of `name` taken at `version` (SnapshotRecord.swift)
//
// Invariants:
// - Stream names never contain 0x00 (control characters are rejected), so `name 0x00` ends the name and no stream's
//   keys are a prefix of another stream's.
// - Versions are big-endian, so the byte order of record keys equals numeric version order.
// - Every key of one stream starts with `prefix(of:)`; nothing else in the store does.

import EventStore
import EventStoreKV

/// Builds the keys of the snapshot store.
enum SnapshotKeys {
    /// The tag byte of the snapshot key space; the same byte as `KeyTag.snapshot` in EventStoreKV.
    static let tag: UInt8 = 0x08
    /// The sub-tag of a stream's snapshot index.
    static let indexSubtag: UInt8 = 0x01
    /// The sub-tag of a stream's snapshot records.
    static let recordSubtag: UInt8 = 0x02

    /// `0x08 name 0x00`: the prefix of every snapshot key of `stream`.
    static func prefix(of stream: StreamName) -> Key {
        var key: Key = [tag]
        key.reserveCapacity(stream.rawValue.utf8.count + 11)
        key.append(contentsOf: stream.rawValue.utf8)
        key.append(0)
        return key
    }

    /// The key of the snapshot index of `stream`.
    static func index(of stream: StreamName) -> Key {
        prefix(of: stream) + [indexSubtag]
    }

    /// The prefix of every snapshot record of `stream`.
    static func recordPrefix(of stream: StreamName) -> Key {
        prefix(of: stream) + [recordSubtag]
    }

    /// The key of the snapshot of `stream` at `version`.
    static func record(of stream: StreamName, at version: UInt64) -> Key {
        var key = recordPrefix(of: stream)
        withUnsafeBytes(of: version.bigEndian) { key.append(contentsOf: $0) }
        return key
    }
}
