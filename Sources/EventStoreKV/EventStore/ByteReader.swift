// ByteReader: the one decoder of stored values, reading little-endian fields from raw bytes in place, so a record
// lent by a backend (a cached page, an in-memory array) is decoded without first being copied into an array.
//
// Invariants:
// - Every read is bounds-checked against the buffer; running out of bytes, a negative length or invalid UTF-8 is
//   EventStoreError.corrupted naming the record's location and the offset, never a crash or a wrong value.
// - The reader never outlives the buffer it reads: it is made inside the scope that lends the bytes
//   (`ByteReader.reading(_:location:_:)` for an array, a backend's visitor for lent bytes) and only copies out.
// - Locations are formatted only when an error is thrown, so the hot path builds no strings.

import EventStore
import Foundation

/// Where a record being decoded lives, for corruption errors; formatted only when an error is thrown.
enum RecordLocation {
    case eventRecord(position: UInt64)
    case streamHead(StreamName)
    case lease(StreamName)
    /// Any other record, described up front (for records off the hot read path).
    case described(String)

    var description: String {
        switch self {
        case .described(let text): text
        case .eventRecord(let position): "event record at global position \(position)"
        case .streamHead(let stream): "stream head of \"\(stream)\""
        case .lease(let stream): "session lease of \"\(stream)\""
        }
    }
}

/// Reads little-endian fields from bytes it does not own, throwing a corruption error that names the location when
/// the bytes run out or are malformed.
struct ByteReader {
    /// The bytes read; valid only while the lender's scope lasts.
    let bytes: UnsafeRawBufferPointer
    private(set) var offset = 0
    let location: RecordLocation

    init(_ bytes: UnsafeRawBufferPointer, location: RecordLocation) {
        self.bytes = bytes
        self.location = location
    }

    /// Runs `body` with a reader over `bytes`.
    static func reading<T>(_ bytes: [UInt8], location: RecordLocation, _ body: (inout ByteReader) throws -> T)
        throws -> T
    {
        try bytes.withUnsafeBytes { raw in
            var reader = ByteReader(raw, location: location)
            return try body(&reader)
        }
    }

    /// Runs `body` with a reader over `bytes`, for records off the hot path that describe their location up front.
    static func reading<T>(_ bytes: [UInt8], location: String, _ body: (inout ByteReader) throws -> T) throws -> T {
        try reading(bytes, location: .described(location), body)
    }

    func corrupted(_ detail: String) -> EventStoreError {
        EventStoreError.corrupted(location: location.description, detail: detail)
    }

    /// Moves past `count` bytes and returns where they start. Kept tiny so it inlines into every field read; the
    /// error is built out of line.
    @inline(__always)
    private mutating func advance(_ count: Int) throws -> Int {
        guard count >= 0, count <= bytes.count - offset else { throw truncated(needing: count) }
        defer { offset += count }
        return offset
    }

    @inline(never)
    private func truncated(needing count: Int) -> EventStoreError {
        corrupted("record truncated: needed \(count) bytes at offset \(offset) of \(bytes.count)")
    }

    // The field readers are forced inline: they run a dozen times per event on the read path and are each a bounds
    // check and a load, which a call would double.
    @inline(__always)
    private mutating func load<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let at = try advance(MemoryLayout<T>.size)
        return T(littleEndian: bytes.loadUnaligned(fromByteOffset: at, as: T.self))
    }

    @inline(__always) mutating func u8() throws -> UInt8 { try load(UInt8.self) }
    @inline(__always) mutating func u16() throws -> UInt16 { try load(UInt16.self) }
    @inline(__always) mutating func u32() throws -> UInt32 { try load(UInt32.self) }
    @inline(__always) mutating func u64() throws -> UInt64 { try load(UInt64.self) }
    @inline(__always) mutating func i64() throws -> Int64 { try load(Int64.self) }
    @inline(__always)
    mutating func uuid() throws -> UUID {
        let at = try advance(16)
        return UUID(uuid: bytes.loadUnaligned(fromByteOffset: at, as: uuid_t.self))
    }

    /// The next `count` bytes, still borrowed.
    @inline(__always)
    mutating func span(_ count: Int) throws -> UnsafeRawBufferPointer {
        let at = try advance(count)
        return field(at..<(at + count))
    }

    mutating func string16() throws -> String { try string(in: try span16()) }
    mutating func string32() throws -> String {
        let count = Int(try u32())
        let at = try advance(count)
        return try string(in: at..<(at + count))
    }

    /// Skips a u16-length-prefixed field and returns where its bytes are, so a caller can look them up first.
    @inline(__always)
    mutating func span16() throws -> Range<Int> {
        let count = Int(try u16())
        let at = try advance(count)
        return at..<(at + count)
    }

    /// The bytes at `range` (already advanced past), still borrowed.
    @inline(__always)
    func field(_ range: Range<Int>) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[range])
    }

    /// The validated UTF-8 string at `range` (already advanced past).
    func string(in range: Range<Int>) throws -> String {
        let field = field(range).assumingMemoryBound(to: UInt8.self)
        // Decoding repairs invalid input with U+FFFD, so a decoded string whose UTF-8 differs from the input means
        // the input was not valid UTF-8. This avoids the unspecialised generic validating initialiser.
        var decoded = String(decoding: field, as: UTF8.self)
        let valid = decoded.withUTF8 { utf8 in
            utf8.count == field.count
                && (field.isEmpty || memcmp(utf8.baseAddress!, field.baseAddress!, field.count) == 0)
        }
        guard valid else { throw corrupted("invalid UTF-8 at offset \(range.lowerBound)") }
        return decoded
    }

    var remaining: Int { bytes.count - offset }
}
