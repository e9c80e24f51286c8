// Little-endian field writing and bounds-checked reading for the snapshot store's values.
//
// Invariants:
// - A reader never reads past its buffer: running out of bytes throws EventStoreError.corrupted naming the value's
//   location, never traps.
// - `finish()` rejects trailing bytes, so a value that decodes is exactly one well-formed value.

import EventStore

/// Appends little-endian fields to a byte buffer.
struct SnapshotByteWriter {
    private(set) var bytes: [UInt8] = []

    init(capacity: Int) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ value: Int64) { u64(UInt64(bitPattern: value)) }
    mutating func raw<C: Collection>(_ value: C) where C.Element == UInt8 { bytes.append(contentsOf: value) }
}

/// Reads little-endian fields, throwing a corruption error that names `location` when the bytes are malformed.
struct SnapshotByteReader {
    private let bytes: [UInt8]
    private var offset = 0
    let location: String

    init(_ bytes: [UInt8], location: String) {
        self.bytes = bytes
        self.location = location
    }

    /// The bytes not read yet.
    var remaining: Int { bytes.count - offset }

    private mutating func take(_ count: Int) throws -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else {
            throw corruption("value truncated: needed \(count) bytes at offset \(offset), \(remaining) left")
        }
        defer { offset += count }
        return bytes[offset..<(offset + count)]
    }

    mutating func u8() throws -> UInt8 { try take(1).first ?? 0 }
    mutating func u32() throws -> UInt32 { try take(4).reversed().reduce(0) { $0 << 8 | UInt32($1) } }
    mutating func u64() throws -> UInt64 { try take(8).reversed().reduce(0) { $0 << 8 | UInt64($1) } }
    mutating func i64() throws -> Int64 { Int64(bitPattern: try u64()) }
    mutating func raw(_ count: Int) throws -> ArraySlice<UInt8> { try take(count) }

    /// Checks that every byte was read.
    func finish() throws {
        guard remaining == 0 else { throw corruption("\(remaining) unexpected trailing bytes") }
    }

    /// A corruption error at this reader's location.
    func corruption(_ detail: String) -> EventStoreError {
        EventStoreError.corrupted(location: location, detail: detail)
    }
}
