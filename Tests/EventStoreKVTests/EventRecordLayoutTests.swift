// EventRecord.prepare writes the log record layout byte for byte as docs/ARCHITECTURE.md and RecordCodec.swift
// describe it. The encoder sizes the record first and writes it through a raw pointer, so these tests compare
// its bytes with a plain field-by-field encoding of the same layout, for every optional part of it.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

/// The documented layout, appended field by field: u8 format=1, u64 version, i64 recordedAt (µs), 16 id,
/// u16+name stream, u16+utf8 type, u8 flags, [16 correlation], [16 causation], u32 property count, per property
/// (sorted by key) u16+key u32+value, u32 data length, data.
private func referenceRecord(_ event: EventData, stream: String, recordedAt: Date, version: UInt64) -> [UInt8] {
    var bytes: [UInt8] = []
    func integer<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
    func uuid(_ value: UUID) { withUnsafeBytes(of: value.uuid) { bytes += $0 } }
    bytes.append(1)
    integer(version)
    integer(Int64((recordedAt.timeIntervalSince1970 * 1_000_000).rounded()))
    uuid(event.id)
    integer(UInt16(stream.utf8.count))
    bytes += stream.utf8
    integer(UInt16(event.type.utf8.count))
    bytes += event.type.utf8
    let metadata = event.metadata
    bytes.append((metadata.correlationID != nil ? 1 : 0) | (metadata.causationID != nil ? 2 : 0))
    if let id = metadata.correlationID { uuid(id) }
    if let id = metadata.causationID { uuid(id) }
    integer(UInt32(metadata.properties.count))
    for (key, value) in metadata.properties.sorted(by: { $0.key < $1.key }) {
        integer(UInt16(key.utf8.count))
        bytes += key.utf8
        integer(UInt32(value.utf8.count))
        bytes += value.utf8
    }
    integer(UInt32(event.data.count))
    bytes += event.data
    return bytes
}

@Suite("Event record layout")
struct EventRecordLayoutTests {
    static let metadataVariants: [EventMetadata] = [
        EventMetadata(),
        EventMetadata(correlationID: UUID()),
        EventMetadata(causationID: UUID()),
        EventMetadata(correlationID: UUID(), causationID: UUID()),
        EventMetadata(properties: ["user": "ada", "schema": "2", "empty": "", "ключ": "значение ✓", "a": "b"]),
        EventMetadata(correlationID: UUID(), causationID: UUID(), properties: ["k": String(repeating: "v", count: 70_000)]),
    ]

    @Test("prepare writes the documented layout byte for byte, whatever the metadata", arguments: metadataVariants)
    func layout(metadata: EventMetadata) throws {
        let recordedAt = Date(timeIntervalSince1970: 1_700_000_000.654321)
        for (stream, type) in [("order-1", "Deposited"), ("счёт-№7", "Überweisung ✓"), ("s", "T")] {
            for data in [Data(), Data([0]), Data(repeating: 0xEE, count: 256), Data(repeating: 3, count: 9_000)] {
                let event = EventData(type: type, data: data, metadata: metadata)
                var record = EventRecord.prepare(
                    event, stream: try StreamName(stream),
                    recordedAtMicroseconds: try EventRecord.microseconds(recordedAt, of: "the test's date"))
                EventRecord.setVersion(42, of: &record)
                #expect(record == referenceRecord(event, stream: stream, recordedAt: recordedAt, version: 42))
            }
        }
    }

    @Test("a prepared record decodes back to its event")
    func roundTrip() throws {
        let metadata = EventMetadata(correlationID: UUID(), properties: ["x": "1", "y": ""])
        let event = EventData(type: "Moved", data: Data("{\"to\":3}".utf8), metadata: metadata)
        var record = EventRecord.prepare(
            event, stream: try StreamName("cart-9"),
            recordedAtMicroseconds: try EventRecord.microseconds(Date(), of: "the test's date"))
        EventRecord.setVersion(7, of: &record)
        let decoded = try EventRecord.decode(record, position: 11)
        #expect(decoded.id == event.id && decoded.version == 7 && decoded.position == 11)
        #expect(decoded.stream == (try StreamName("cart-9")) && decoded.type == "Moved" && decoded.data == event.data)
        #expect(decoded.metadata == metadata)
    }
}
