// Little-endian encoding helpers shared by the page, meta and WAL codecs.
//
// Invariants:
// - Every multi-byte integer on disk is little-endian (B+tree keys are opaque bytes and need no byte order).
// - `PageBytesReader` never reads past its buffer: every read is bounds-checked and throws `PageBytesReader.Overrun`, which
//   callers turn into `EventStoreError.corrupted` naming the file and page or WAL offset.

/// Appends little-endian integers and raw bytes to a growing buffer.
struct PageBytesWriter {
    var bytes: [UInt8]

    init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u16(_ value: UInt16) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ value: Int64) { u64(UInt64(bitPattern: value)) }
    /// Appends `value`'s bytes through a buffer pointer: passing the array itself to `append(contentsOf:)` retains
    /// and releases it (once per key and value of every WAL record and checkpoint page).
    mutating func raw(_ value: [UInt8]) { value.withUnsafeBufferPointer { bytes.append(contentsOf: $0) } }
}

/// Reads little-endian integers from a buffer, throwing on overrun.
struct PageBytesReader {
    /// A read ran past the end of the buffer.
    struct Overrun: Error {}

    let bytes: [UInt8]
    var offset: Int

    init(_ bytes: [UInt8], offset: Int = 0) {
        self.bytes = bytes
        self.offset = offset
    }

    var remaining: Int { bytes.count - offset }

    mutating func u8() throws -> UInt8 {
        guard remaining >= 1 else { throw Overrun() }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func u16() throws -> UInt16 { UInt16(truncatingIfNeeded: try integer(2)) }
    mutating func u32() throws -> UInt32 { UInt32(truncatingIfNeeded: try integer(4)) }
    mutating func u64() throws -> UInt64 { try integer(8) }
    mutating func i64() throws -> Int64 { Int64(bitPattern: try integer(8)) }

    mutating func raw(_ count: Int) throws -> [UInt8] {
        guard count >= 0, remaining >= count else { throw Overrun() }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    private mutating func integer(_ width: Int) throws -> UInt64 {
        guard remaining >= width else { throw Overrun() }
        let start = offset
        offset += width
        return bytes.withUnsafeBytes { raw in
            switch width {
            case 2: UInt64(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: start, as: UInt16.self)))
            case 4: UInt64(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: start, as: UInt32.self)))
            default: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: start, as: UInt64.self))
            }
        }
    }
}

extension Array where Element == UInt8 {
    /// Stores `value` little-endian at `offset` (the buffer must be large enough).
    mutating func storeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self) }
    }

    /// Loads a little-endian integer at `offset` (the buffer must be large enough).
    func loadLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }
}
