// Binary encodings of the values KeyValueEventStore stores: event records, stream heads, positions and leases.
// Every value starts with a format byte so that it can evolve. Layouts are in docs/ARCHITECTURE.md.

import EventStore
import Foundation

/// Appends little-endian fields to a byte buffer.
struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u16(_ value: UInt16) { Swift.withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ value: UInt32) { Swift.withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ value: UInt64) { Swift.withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ value: Int64) { u64(UInt64(bitPattern: value)) }
    mutating func uuid(_ value: UUID) { withUnsafeBytes(of: value.uuid) { bytes.append(contentsOf: $0) } }
    mutating func raw<C: Collection>(_ value: C) where C.Element == UInt8 { bytes.append(contentsOf: value) }
    mutating func string16(_ value: String) {
        let utf8 = Array(value.utf8)
        u16(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }
    mutating func string32(_ value: String) {
        let utf8 = Array(value.utf8)
        u32(UInt32(utf8.count))
        bytes.append(contentsOf: utf8)
    }
}

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

/// Reads little-endian fields, throwing a corruption error that names the location when the bytes run out.
struct ByteReader {
    let bytes: [UInt8]
    private(set) var offset = 0
    let location: RecordLocation

    init(_ bytes: [UInt8], location: RecordLocation) {
        self.bytes = bytes
        self.location = location
    }

    init(_ bytes: [UInt8], location: String) {
        self.init(bytes, location: .described(location))
    }

    private func corrupted(_ detail: String) -> EventStoreError {
        EventStoreError.corrupted(location: location.description, detail: detail)
    }

    private mutating func advance(_ count: Int) throws -> Int {
        guard count >= 0, count <= bytes.count - offset else {
            throw corrupted("record truncated: needed \(count) bytes at offset \(offset) of \(bytes.count)")
        }
        defer { offset += count }
        return offset
    }

    private mutating func load<T: FixedWidthInteger>(_: T.Type) throws -> T {
        let at = try advance(MemoryLayout<T>.size)
        return T(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: T.self) })
    }

    mutating func u8() throws -> UInt8 { try load(UInt8.self) }
    mutating func u16() throws -> UInt16 { try load(UInt16.self) }
    mutating func u32() throws -> UInt32 { try load(UInt32.self) }
    mutating func u64() throws -> UInt64 { try load(UInt64.self) }
    mutating func i64() throws -> Int64 { try load(Int64.self) }
    mutating func uuid() throws -> UUID {
        let at = try advance(16)
        return UUID(uuid: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: at, as: uuid_t.self) })
    }
    mutating func data(_ count: Int) throws -> Data {
        let at = try advance(count)
        guard count > 0 else { return Data() }
        // A concrete pointer copy: the generic Slice-of-raw-buffer initialiser instantiates metadata per call.
        return bytes.withUnsafeBytes { raw in raw.baseAddress.map { Data(bytes: $0 + at, count: count) } ?? Data() }
    }
    mutating func string16() throws -> String { try string(in: try span16()) }
    mutating func string32() throws -> String { try string(count: Int(try u32())) }
    private mutating func string(count: Int) throws -> String {
        let at = try advance(count)
        return try string(in: at..<(at + count))
    }

    /// Skips a u16-length-prefixed field and returns where its bytes are, so a caller can compare before decoding.
    mutating func span16() throws -> Range<Int> {
        let count = Int(try u16())
        let at = try advance(count)
        return at..<(at + count)
    }

    /// Whether the bytes at `range` equal `other`.
    func bytes(in range: Range<Int>, equal other: [UInt8]) -> Bool {
        guard range.count == other.count else { return false }
        return bytes.withUnsafeBufferPointer { mine in
            other.withUnsafeBufferPointer { theirs in
                range.isEmpty || memcmp(mine.baseAddress! + range.lowerBound, theirs.baseAddress!, range.count) == 0
            }
        }
    }

    /// The validated UTF-8 string at `range` (already advanced past).
    func string(in range: Range<Int>) throws -> String {
        let value = bytes.withUnsafeBufferPointer { buffer -> String? in
            let field = UnsafeBufferPointer(rebasing: buffer[range])
            // Decoding repairs invalid input with U+FFFD, so a decoded string whose UTF-8 differs from the input
            // means the input was not valid UTF-8. This avoids the unspecialised generic validating initialiser.
            var decoded = String(decoding: field, as: UTF8.self)
            let valid = decoded.withUTF8 { $0.count == field.count && (field.isEmpty || memcmp($0.baseAddress!, field.baseAddress!, field.count) == 0) }
            return valid ? decoded : nil
        }
        guard let value else { throw corrupted("invalid UTF-8 at offset \(range.lowerBound)") }
        return value
    }
    var remaining: Int { bytes.count - offset }
}

/// Remembers validated stream names while decoding many records, so a read validates each name once, and the
/// last stream name and event type by their raw bytes, so a run of records from one stream (or of one type) decodes
/// neither string again.
struct StreamNameCache {
    private var last: (String, StreamName)?
    private var seen: [String: StreamName] = [:]
    private var lastRawName: [UInt8] = []
    private var lastRawNameValue: StreamName?
    private var lastRawType: [UInt8] = []
    private var lastRawTypeValue: String?

    /// The stream name whose u16-prefixed bytes are next in `reader`.
    mutating func name(from reader: inout ByteReader, location: RecordLocation) throws -> StreamName {
        let range = try reader.span16()
        if let known = lastRawNameValue, reader.bytes(in: range, equal: lastRawName) { return known }
        let name = try name(try reader.string(in: range), location: location)
        lastRawName = Array(reader.bytes[range])
        lastRawNameValue = name
        return name
    }

    /// The event type whose u16-prefixed bytes are next in `reader`.
    mutating func type(from reader: inout ByteReader) throws -> String {
        let range = try reader.span16()
        if let known = lastRawTypeValue, reader.bytes(in: range, equal: lastRawType) { return known }
        let type = try reader.string(in: range)
        lastRawType = Array(reader.bytes[range])
        lastRawTypeValue = type
        return type
    }

    mutating func name(_ raw: String, location: RecordLocation) throws -> StreamName {
        if let last, last.0 == raw { return last.1 }
        if let known = seen[raw] {
            last = (raw, known)
            return known
        }
        let name: StreamName
        do {
            name = try StreamName.stored(raw)
        } catch {
            throw EventStoreError.corrupted(location: location.description, detail: "invalid stream name: \(error)")
        }
        if seen.count < 4_096 { seen[raw] = name }
        last = (raw, name)
        return name
    }
}

/// The log record of one event (value of `L position`).
///
/// Layout (format 1): u8 format=1, u64 version, i64 recordedAt (µs since 1970), 16 id, u16+name stream,
/// u16+utf8 type, u8 flags (bit0 correlation, bit1 causation), [16 correlation], [16 causation],
/// u32 property count, per property u16+key u32+value, u32 data length, data.
enum EventRecord {
    static let format: UInt8 = 1

    /// Encodes everything but the version, which is patched in by ``encode(prepared:version:)`` at commit time.
    static func prepare(_ event: EventData, stream: StreamName, recordedAt: Date) -> [UInt8] {
        var writer = ByteWriter(capacity: event.data.count + 96 + stream.rawValue.utf8.count)
        writer.u8(format)
        writer.u64(0)  // version, patched later
        writer.i64(Int64((recordedAt.timeIntervalSince1970 * 1_000_000).rounded()))
        writer.uuid(event.id)
        writer.string16(stream.rawValue)
        writer.string16(event.type)
        let flags: UInt8 = (event.metadata.correlationID != nil ? 1 : 0) | (event.metadata.causationID != nil ? 2 : 0)
        writer.u8(flags)
        if let id = event.metadata.correlationID { writer.uuid(id) }
        if let id = event.metadata.causationID { writer.uuid(id) }
        writer.u32(UInt32(event.metadata.properties.count))
        for (key, value) in event.metadata.properties.sorted(by: { $0.key < $1.key }) {
            writer.string16(key)
            writer.string32(value)
        }
        writer.u32(UInt32(event.data.count))
        writer.raw(event.data)
        return writer.bytes
    }

    static func encode(prepared: [UInt8], version: UInt64) -> [UInt8] {
        var record = prepared
        withUnsafeBytes(of: version.littleEndian) { raw in
            for index in 0..<8 { record[1 + index] = raw[index] }
        }
        return record
    }

    static func decode(_ bytes: [UInt8], position: UInt64) throws -> RecordedEvent {
        var names = StreamNameCache()
        return try decode(bytes, position: position, names: &names)
    }

    static func decode(_ bytes: [UInt8], position: UInt64, names: inout StreamNameCache) throws -> RecordedEvent {
        let location = RecordLocation.eventRecord(position: position)
        var reader = ByteReader(bytes, location: location)
        let format = try reader.u8()
        guard format == Self.format else {
            throw EventStoreError.corrupted(location: location.description, detail: "unknown record format \(format)")
        }
        let version = try reader.u64()
        let micros = try reader.i64()
        let id = try reader.uuid()
        let stream = try names.name(from: &reader, location: location)
        let type = try names.type(from: &reader)
        let flags = try reader.u8()
        var metadata = EventMetadata()
        if flags & 1 != 0 { metadata.correlationID = try reader.uuid() }
        if flags & 2 != 0 { metadata.causationID = try reader.uuid() }
        let propertyCount = try reader.u32()
        guard Int(propertyCount) <= reader.remaining else {
            throw EventStoreError.corrupted(location: location.description, detail: "property count out of range")
        }
        for _ in 0..<propertyCount {
            let key = try reader.string16()
            metadata.properties[key] = try reader.string32()
        }
        let data = try reader.data(Int(try reader.u32()))
        return RecordedEvent(
            id: id, stream: stream, version: version, position: position,
            recordedAt: Date(timeIntervalSince1970: Double(micros) / 1_000_000), type: type, data: data,
            metadata: metadata)
    }

    /// Reads only the id and stream from a record, for idempotency checks.
    static func identity(_ bytes: [UInt8], position: UInt64) throws -> (id: UUID, stream: String, version: UInt64) {
        var reader = ByteReader(bytes, location: .eventRecord(position: position))
        _ = try reader.u8()
        let version = try reader.u64()
        _ = try reader.i64()
        let id = try reader.uuid()
        return (id, try reader.string16(), version)
    }
}

/// The stream head (value of `H name`). Format 1: u8 format=1, u64 version, u64 last position. Format 2 (written
/// only once a stream has been deleted): format 1's fields, then u8 state (0 live, 1 soft-deleted, 2 hard-deleted),
/// u64 hiddenThrough (versions up to it were deleted and stay hidden after a recreation).
struct StreamHead: Equatable {
    /// Whether the stream is live or deleted.
    enum State: UInt8 {
        case live = 0
        case softDeleted = 1
        case hardDeleted = 2
    }

    var version: UInt64
    var lastPosition: UInt64
    var state: State = .live
    var hiddenThrough: UInt64 = 0

    /// The version appends are checked against and readers see: 0 while the stream is deleted.
    var visibleVersion: UInt64 { state == .live ? version : 0 }

    func encoded() -> [UInt8] {
        let extended = state != .live || hiddenThrough != 0
        var writer = ByteWriter(capacity: 26)
        writer.u8(extended ? 2 : 1)
        writer.u64(version)
        writer.u64(lastPosition)
        if extended {
            writer.u8(state.rawValue)
            writer.u64(hiddenThrough)
        }
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8], stream: StreamName) throws -> StreamHead {
        var reader = ByteReader(bytes, location: .streamHead(stream))
        let format = try reader.u8()
        guard format == 1 || format == 2 else {
            throw EventStoreError.corrupted(location: "stream head of \"\(stream)\"", detail: "unknown format \(format)")
        }
        var head = StreamHead(version: try reader.u64(), lastPosition: try reader.u64())
        if format == 2 {
            let raw = try reader.u8()
            guard let state = State(rawValue: raw) else {
                throw EventStoreError.corrupted(location: "stream head of \"\(stream)\"", detail: "unknown state \(raw)")
            }
            head.state = state
            head.hiddenThrough = try reader.u64()
        }
        return head
    }
}

/// A big-endian u64 value (global head, stream index and event-id index entries).
enum PositionValue {
    static func encode(_ value: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(8)
        bytes.appendBigEndian(value)
        return bytes
    }

    static func decode(_ bytes: [UInt8], location: @autoclosure () -> String) throws -> UInt64 {
        guard bytes.count == 8 else {
            throw EventStoreError.corrupted(location: location(), detail: "expected 8 bytes, found \(bytes.count)")
        }
        return bytes.readBigEndian(at: 0)
    }
}

/// A session lease (value of `K name`, written with a TTL). Format 1: u8 format=1, 16 session id,
/// i64 expiresAt (µs since 1970), u16+utf8 holder.
struct LeaseRecord {
    var sessionID: UUID
    var expiresAt: Date
    var holder: String

    func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: 64)
        writer.u8(1)
        writer.uuid(sessionID)
        writer.i64(Int64((expiresAt.timeIntervalSince1970 * 1_000_000).rounded()))
        writer.string16(holder)
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8], stream: StreamName) throws -> LeaseRecord {
        var reader = ByteReader(bytes, location: .lease(stream))
        let format = try reader.u8()
        guard format == 1 else {
            throw EventStoreError.corrupted(location: "session lease of \"\(stream)\"", detail: "unknown format \(format)")
        }
        let id = try reader.uuid()
        let micros = try reader.i64()
        return LeaseRecord(
            sessionID: id, expiresAt: Date(timeIntervalSince1970: Double(micros) / 1_000_000),
            holder: try reader.string16())
    }
}
