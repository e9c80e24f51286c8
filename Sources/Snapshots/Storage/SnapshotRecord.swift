// One stored snapshot (value of `0x08 stream 0x00 collection 0x00 0x02 version`).
//
// Layout (format 1): u8 format=1, u64 version, u64 first version, u32 schema version, i64 takenAt (µs since 1970),
// u32 data length, data; integers little-endian.
//
// Invariants:
// - The version inside the record equals the version in its key, and its first and schema versions equal the index
//   entry's;
//   decoding checks both, so a record filed under the wrong key reads as corruption, never as another state.

import EventStore
import Foundation

/// Encodes and decodes snapshot records.
enum SnapshotRecord {
    static let format: UInt8 = 1

    static func encode(_ snapshot: Snapshot) -> [UInt8] {
        var writer = SnapshotByteWriter(capacity: 33 + snapshot.data.count)
        writer.u8(format)
        writer.u64(snapshot.version)
        writer.u64(snapshot.firstVersion)
        writer.u32(snapshot.schemaVersion)
        writer.i64(Int64((snapshot.takenAt.timeIntervalSince1970 * 1_000_000).rounded()))
        writer.u32(UInt32(snapshot.data.count))
        writer.raw(snapshot.data)
        return writer.bytes
    }

    /// Decodes the record the index describes as `expected`.
    static func decode(_ bytes: [UInt8], stream: StreamName, expected: SnapshotDescriptor) throws -> Snapshot {
        var reader = SnapshotByteReader(
            bytes, location: "snapshot of stream \"\(stream)\" at version \(expected.version)")
        let format = try reader.u8()
        guard format == Self.format else { throw reader.corruption("unknown snapshot format \(format)") }
        let version = try reader.u64()
        guard version == expected.version else {
            throw reader.corruption("the record holds version \(version), not the version of its key")
        }
        let firstVersion = try reader.u64()
        guard firstVersion == expected.firstVersion else {
            throw reader.corruption(
                "the record has first version \(firstVersion) but the index says \(expected.firstVersion)")
        }
        let schemaVersion = try reader.u32()
        guard schemaVersion == expected.schemaVersion else {
            throw reader.corruption(
                "the record has schema \(schemaVersion) but the index says \(expected.schemaVersion)")
        }
        let micros = try reader.i64()
        let length = Int(try reader.u32())
        let data = Data(try reader.raw(length))
        try reader.finish()
        return Snapshot(
            stream: stream, version: version, schemaVersion: schemaVersion, firstVersion: firstVersion,
            takenAt: Date(timeIntervalSince1970: Double(micros) / 1_000_000), data: data)
    }
}
