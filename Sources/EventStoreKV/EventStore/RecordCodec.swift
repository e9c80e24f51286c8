// Binary encodings of the values KeyValueEventStore stores: event records, stream heads, positions and leases.
// Every value starts with a format byte so that it can evolve. Layouts are in docs/ARCHITECTURE.md.
// Decoding reads the bytes in place (ByteReader.swift): an event record lent by a backend becomes a BorrowedEvent
// with no allocation at all (its payload still lent), or a RecordedEvent with one allocation for its payload; the
// stream name and type come from the read's caches (DecodeCache.swift).

import EventStore
import Foundation
import Synchronization

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
    // Strings and payloads are appended straight from their storage, without an intermediate array.
    mutating func string16(_ value: String) {
        u16(UInt16(value.utf8.count))
        bytes.append(contentsOf: value.utf8)
    }
    mutating func string32(_ value: String) {
        u32(UInt32(value.utf8.count))
        bytes.append(contentsOf: value.utf8)
    }
    mutating func data(_ value: Data) { value.withUnsafeBytes { bytes.append(contentsOf: $0) } }
}

/// Writes little-endian fields into storage sized for them beforehand (EventRecord.prepare). Every write checks
/// that it fits, so a size computed wrongly traps instead of writing past the storage.
struct RecordBytesWriter {
    private let storage: UnsafeMutableRawBufferPointer
    private(set) var offset = 0

    init(_ storage: UnsafeMutableRawBufferPointer) { self.storage = storage }

    private mutating func reserve(_ count: Int) -> UnsafeMutableRawPointer {
        precondition(count <= storage.count - offset, "a record's fields outgrew the size computed for them")
        defer { offset += count }
        return storage.baseAddress! + offset
    }

    mutating func u8(_ value: UInt8) { reserve(1).storeBytes(of: value, as: UInt8.self) }
    mutating func u16(_ value: UInt16) { reserve(2).storeBytes(of: value.littleEndian, as: UInt16.self) }
    mutating func u32(_ value: UInt32) { reserve(4).storeBytes(of: value.littleEndian, as: UInt32.self) }
    mutating func u64(_ value: UInt64) { reserve(8).storeBytes(of: value.littleEndian, as: UInt64.self) }
    mutating func uuid(_ value: UUID) { withUnsafeBytes(of: value.uuid) { raw($0) } }
    mutating func raw(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        reserve(bytes.count).copyMemory(from: source, byteCount: bytes.count)
    }
    mutating func string16(_ value: String) {
        u16(UInt16(value.utf8.count))
        utf8(value)
    }
    mutating func string32(_ value: String) {
        u32(UInt32(value.utf8.count))
        utf8(value)
    }
    private mutating func utf8(_ value: String) {
        let copied: Void? = value.utf8.withContiguousStorageIfAvailable { raw(UnsafeRawBufferPointer($0)) }
        if copied == nil {
            for byte in value.utf8 { u8(byte) }
        }
    }
}

/// The log record of one event (value of `L position`).
///
/// Layout (format 1): u8 format=1, u64 version, i64 recordedAt (µs since 1970), 16 id, u16+name stream,
/// u16+utf8 type, u8 flags (bit0 correlation, bit1 causation), [16 correlation], [16 causation],
/// u32 property count, per property u16+key u32+value, u32 data length, data.
enum EventRecord {
    static let format: UInt8 = 1

    /// Encodes everything but the version, which is set later (``setVersion(_:of:)``) at commit time. The record
    /// is sized exactly first and written in one pass into its own storage: appending field by field cost about
    /// four times as much per event.
    static func prepare(_ event: EventData, stream: StreamName, recordedAtMicroseconds micros: Int64) -> [UInt8] {
        let metadata = event.metadata
        let properties = metadata.properties.isEmpty ? [] : metadata.properties.sorted(by: { $0.key < $1.key })
        var size = 1 + 8 + 8 + 16 + (2 + stream.rawValue.utf8.count) + (2 + event.type.utf8.count) + 1 + 4 + 4
        size += event.data.count
        if metadata.correlationID != nil { size += 16 }
        if metadata.causationID != nil { size += 16 }
        for (key, value) in properties { size += 2 + key.utf8.count + 4 + value.utf8.count }
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            var writer = RecordBytesWriter(UnsafeMutableRawBufferPointer(buffer))
            writer.u8(format)
            writer.u64(0)  // version, set later
            writer.u64(UInt64(bitPattern: micros))
            writer.uuid(event.id)
            writer.string16(stream.rawValue)
            writer.string16(event.type)
            writer.u8((metadata.correlationID != nil ? 1 : 0) | (metadata.causationID != nil ? 2 : 0))
            if let id = metadata.correlationID { writer.uuid(id) }
            if let id = metadata.causationID { writer.uuid(id) }
            writer.u32(UInt32(properties.count))
            for (key, value) in properties {
                writer.string16(key)
                writer.string32(value)
            }
            writer.u32(UInt32(event.data.count))
            event.data.withUnsafeBytes { writer.raw($0) }
            initialized = writer.offset
        }
    }

    /// `date` as records store it: microseconds since 1970, rounded.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` naming `source` when the date is not a number or too far
    ///   from 1970 for 64 bits (about 292,000 years either way). Only a store's `clock` can give such a date.
    static func microseconds(_ date: Date, of source: @autoclosure () -> String) throws -> Int64 {
        guard let micros = Int64(exactly: (date.timeIntervalSince1970 * 1_000_000).rounded()) else {
            throw EventStoreError.invalidArgument(
                "\(source()) is \(date.timeIntervalSince1970) s since 1970, outside the dates a record can store "
                    + "(microseconds since 1970 in 64 bits)")
        }
        return micros
    }

    static func encode(prepared: [UInt8], version: UInt64) -> [UInt8] {
        var record = prepared
        setVersion(version, of: &record)
        return record
    }

    /// Writes `version` into a prepared record, in place when the caller holds the only reference to it.
    static func setVersion(_ version: UInt64, of record: inout [UInt8]) {
        record.withUnsafeMutableBytes { $0.storeBytes(of: version.littleEndian, toByteOffset: 1, as: UInt64.self) }
    }

    /// Sets the time a prepared record was recorded (microseconds since 1970), at commit time.
    static func setRecordedAt(_ micros: Int64, of record: inout [UInt8]) {
        record.withUnsafeMutableBytes {
            $0.storeBytes(of: UInt64(bitPattern: micros).littleEndian, toByteOffset: 9, as: UInt64.self)
        }
    }

    static func decode(_ bytes: [UInt8], position: UInt64) throws -> RecordedEvent {
        var names = StreamNameCache()
        return try decode(bytes, position: position, names: &names)
    }

    static func decode(_ bytes: [UInt8], position: UInt64, names: inout StreamNameCache) throws -> RecordedEvent {
        try bytes.withUnsafeBytes { try decode($0, position: position, names: &names) }
    }

    /// Decodes the record in `bytes` (lent, not kept) with the fewest allocations: one Data for the payload; the
    /// stream name and type come from `names` when seen before; metadata is built only when the record has any.
    /// - Throws: ``EventStoreError/corrupted(location:detail:)`` naming the position when the bytes are malformed.
    static func decode(_ bytes: UnsafeRawBufferPointer, position: UInt64, names: inout StreamNameCache) throws
        -> RecordedEvent
    {
        try borrowed(bytes, position: position, names: &names).copied()
    }

    /// Decodes the record in `bytes` without copying its payload: the event's `data` points into `bytes`, so it is
    /// valid only as long as they are. Stream name and type come from `names` when seen before.
    /// - Throws: ``EventStoreError/corrupted(location:detail:)`` naming the position when the bytes are malformed.
    @inline(__always)
    static func borrowed(_ bytes: UnsafeRawBufferPointer, position: UInt64, names: inout StreamNameCache) throws
        -> BorrowedEvent
    {
        let location = RecordLocation.eventRecord(position: position)
        var reader = ByteReader(bytes, location: location)
        let format = try reader.u8()
        guard format == Self.format else { throw reader.corrupted("unknown record format \(format)") }
        let version = try reader.u64()
        // Versions start at 1: a record of version 0 (or of the last UInt64, which no stream reaches) is damage.
        guard version > 0, version < .max else { throw reader.corrupted("impossible stream version \(version)") }
        let micros = try reader.i64()
        let id = try reader.uuid()
        let stream = try names.name(from: &reader, location: location)
        let type = try names.type(from: &reader)
        let metadata = try decodeMetadata(&reader)
        let data = try reader.span(Int(try reader.u32()))
        return BorrowedEvent(
            id: id, stream: stream, version: version, position: position,
            recordedAt: Date(timeIntervalSince1970: Double(micros) / 1_000_000), type: type, data: data,
            metadata: metadata)
    }

    /// The flags, optional ids and properties; the empty metadata (no allocation) when there are none.
    private static func decodeMetadata(_ reader: inout ByteReader) throws -> EventMetadata {
        let flags = try reader.u8()
        var metadata = EventMetadata()
        if flags & 1 != 0 { metadata.correlationID = try reader.uuid() }
        if flags & 2 != 0 { metadata.causationID = try reader.uuid() }
        let propertyCount = try reader.u32()
        guard propertyCount > 0 else { return metadata }
        guard Int(propertyCount) <= reader.remaining else { throw reader.corrupted("property count out of range") }
        metadata.properties.reserveCapacity(Int(propertyCount))
        for _ in 0..<propertyCount {
            let key = try reader.string16()
            metadata.properties[key] = try reader.string32()
        }
        return metadata
    }

    /// Reads only the id and stream from a record, for idempotency checks.
    static func identity(_ bytes: [UInt8], position: UInt64) throws -> (id: UUID, stream: String, version: UInt64) {
        try ByteReader.reading(bytes, location: .eventRecord(position: position)) { reader in
            let format = try reader.u8()
            guard format == Self.format else { throw reader.corrupted("unknown record format \(format)") }
            let version = try reader.u64()
            guard version > 0, version < .max else { throw reader.corrupted("impossible stream version \(version)") }
            _ = try reader.i64()
            let id = try reader.uuid()
            return (id, try reader.string16(), version)
        }
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
        try ByteReader.reading(bytes, location: .streamHead(stream)) { try decode(&$0, stream: stream) }
    }

    private static func decode(_ reader: inout ByteReader, stream: StreamName) throws -> StreamHead {
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
        // A deletion hides at most the versions the stream has, and no stream reaches the last UInt64: scavenge
        // and reads must not act on (or trap over) a head that says otherwise.
        guard head.hiddenThrough <= head.version, head.version < .max else {
            throw EventStoreError.corrupted(
                location: "stream head of \"\(stream)\"",
                detail: "version \(head.version) with versions through \(head.hiddenThrough) hidden is impossible")
        }
        return head
    }
}

/// The log records of an append's events, encoded outside the writer section without their versions and times.
/// The writer sets each record's version and recordedAt in place and hands the records on, so an event's record is
/// built once and never copied (the records are owned here alone until then). A second transaction attempt (a
/// backend may retry it) sets them again; records the first attempt still shares are then copied, as they must be.
final class PreparedRecords: Sendable {
    private let parts: Mutex<[[[UInt8]]]>

    /// Prepares the records of every part of `appends`.
    init(_ appends: [StreamAppend]) {
        parts = Mutex(appends.map { part in
            part.events.map { EventRecord.prepare($0, stream: part.stream, recordedAtMicroseconds: 0) }
        })
    }

    /// Part `index`'s records, with versions from `firstVersion` on, recorded at `micros` (since 1970).
    func records(ofPart index: Int, firstVersion: UInt64, recordedAtMicroseconds micros: Int64) -> [[UInt8]] {
        parts.withLock { parts in
            for event in parts[index].indices {
                EventRecord.setVersion(firstVersion + UInt64(event), of: &parts[index][event])
                EventRecord.setRecordedAt(micros, of: &parts[index][event])
            }
            return parts[index]
        }
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

    /// Decodes a lent value in place.
    static func decode(_ bytes: UnsafeRawBufferPointer, location: @autoclosure () -> String) throws -> UInt64 {
        guard bytes.count == 8 else {
            throw EventStoreError.corrupted(location: location(), detail: "expected 8 bytes, found \(bytes.count)")
        }
        return UInt64(bigEndian: bytes.loadUnaligned(as: UInt64.self))
    }
}

/// A session lease (value of `K name`, written with a TTL). Format 1: u8 format=1, 16 session id,
/// i64 expiresAt (µs since 1970), u16+utf8 holder.
struct LeaseRecord {
    var sessionID: UUID
    var expiresAt: Date
    var holder: String

    /// The stored form.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` when `expiresAt` is beyond what a record can store.
    func encoded() throws -> [UInt8] {
        var writer = ByteWriter(capacity: 64)
        writer.u8(1)
        writer.uuid(sessionID)
        writer.i64(try EventRecord.microseconds(expiresAt, of: "the session's expiry"))
        writer.string16(holder)
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8], stream: StreamName) throws -> LeaseRecord {
        try ByteReader.reading(bytes, location: .lease(stream)) { try decode(&$0, stream: stream) }
    }

    private static func decode(_ reader: inout ByteReader, stream: StreamName) throws -> LeaseRecord {
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
