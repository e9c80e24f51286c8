// The event record decoder that reads lent bytes in place: round trips with and without metadata, the decode caches
// (stream names and event types filed by their bytes, including past their bounds), and corruption (truncation, bad
// format, invalid UTF-8, a bad stream name) reported as a typed error naming the global position, also end to end
// through readAll, stream reads and index reads.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

private let recordedAt = Date(timeIntervalSince1970: 1_700_000_000.123456)

private func record(
    stream: String = "order-1", type: String = "Deposited", version: UInt64 = 3, data: Data = Data("payload".utf8),
    metadata: EventMetadata = EventMetadata()
) throws -> (bytes: [UInt8], event: EventData) {
    let event = EventData(type: type, data: data, metadata: metadata)
    let prepared = EventRecord.prepare(
        event, stream: try StreamName(stream),
        recordedAtMicroseconds: try EventRecord.microseconds(recordedAt, of: "the test's date"))
    return (EventRecord.encode(prepared: prepared, version: version), event)
}

private func decodeLent(_ bytes: [UInt8], position: UInt64, names: inout StreamNameCache) throws -> RecordedEvent {
    try bytes.withUnsafeBytes { try EventRecord.decode($0, position: position, names: &names) }
}

/// Whether `error` is corruption of the event record at `position`.
private func isCorruption(_ error: any Error, at position: UInt64) -> Bool {
    guard case EventStoreError.corrupted(let location, _) = error else { return false }
    return location == "event record at global position \(position)"
}

@Suite("Event record decoding from lent bytes")
struct EventRecordDecodingTests {
    @Test("a record decodes in place to the event written, with and without metadata")
    func roundTrip() throws {
        let metadata = EventMetadata(
            correlationID: UUID(), causationID: UUID(), properties: ["user": "ada", "schema": "2", "empty": ""])
        let payloads = [Data(), Data([1]), Data(repeating: 0xAB, count: 14), Data(repeating: 7, count: 4_000)]
        var names = StreamNameCache()
        for (index, payload) in payloads.enumerated() {
            for meta in [EventMetadata(), metadata, EventMetadata(correlationID: UUID())] {
                let (bytes, event) = try record(version: UInt64(index + 1), data: payload, metadata: meta)
                let decoded = try decodeLent(bytes, position: 40 + UInt64(index), names: &names)
                #expect(decoded.id == event.id)
                #expect(decoded.stream.rawValue == "order-1")
                #expect(decoded.version == UInt64(index + 1))
                #expect(decoded.position == 40 + UInt64(index))
                #expect(decoded.type == "Deposited")
                #expect(decoded.data == payload)
                #expect(decoded.data.startIndex == 0)
                #expect(decoded.metadata == meta)
                #expect(abs(decoded.recordedAt.timeIntervalSince(recordedAt)) < 0.000_001)
                // The array decoder forwards to the same decoder.
                #expect(try EventRecord.decode(bytes, position: 40 + UInt64(index)) == decoded)
            }
        }
    }

    @Test("the caches return each stream name and type by its bytes, also past their bounds")
    func cachesFileValuesByBytes() throws {
        var names = StreamNameCache()
        // More distinct streams than the name cache keeps, and more distinct types than the type cache keeps,
        // interleaved with repeats, so hits, misses and the full caches are all exercised.
        for round in 0..<2 {
            for index in 0..<4_200 {
                let stream = "s-\(index % 4_150)"
                let type = index % 3 == 0 ? "Deposited" : "Type\(index % 300)"
                let (bytes, _) = try record(stream: stream, type: type)
                let decoded = try decodeLent(bytes, position: UInt64(round * 10_000 + index + 1), names: &names)
                #expect(decoded.stream.rawValue == stream)
                #expect(decoded.type == type)
            }
        }
        // Fields that share a prefix or differ only in length are told apart.
        for (stream, type) in [("ab", "T"), ("abc", "TT"), ("a", "T"), ("abc", "T"), ("ab", "TT")] {
            let (bytes, _) = try record(stream: stream, type: type)
            let decoded = try decodeLent(bytes, position: 1, names: &names)
            #expect(decoded.stream.rawValue == stream)
            #expect(decoded.type == type)
        }
    }

    @Test("every truncation of a record is corruption naming its global position")
    func truncationIsCorruption() throws {
        let (bytes, _) = try record(metadata: EventMetadata(correlationID: UUID(), properties: ["k": "v"]))
        for length in 0..<bytes.count {
            var names = StreamNameCache()
            let truncated = Array(bytes[..<length])
            #expect(performing: { try decodeLent(truncated, position: 77, names: &names) }, throws: { error in
                isCorruption(error, at: 77)
            })
        }
    }

    @Test("a bad format, invalid UTF-8, a bad stream name or an absurd property count is corruption")
    func malformedFieldsAreCorruption() throws {
        let (bytes, _) = try record(stream: "order-1", type: "Deposited")
        // Offsets: format 0, version 1, recordedAt 9, id 17, stream length 33, stream 35 (7 bytes), type length 42,
        // type 44 (9 bytes), flags 53, property count 54.
        var badFormat = bytes
        badFormat[0] = 9
        var badType = bytes
        badType[44] = 0xFF
        var badStream = bytes
        badStream[35] = 0xC0
        var controlInStream = bytes
        controlInStream[36] = 0x01
        var hugeCount = bytes
        hugeCount.replaceSubrange(54..<58, with: [0xFF, 0xFF, 0xFF, 0x7F])
        var longerThanRecord = bytes
        longerThanRecord.replaceSubrange(42..<44, with: [0xFF, 0x00])
        for damaged in [badFormat, badType, badStream, controlInStream, hugeCount, longerThanRecord] {
            var names = StreamNameCache()
            #expect(performing: { try decodeLent(damaged, position: 5, names: &names) }, throws: { error in
                isCorruption(error, at: 5)
            })
        }
        // A cache that has seen the good record still refuses the damaged one.
        var names = StreamNameCache()
        _ = try decodeLent(bytes, position: 4, names: &names)
        #expect(performing: { try decodeLent(badType, position: 5, names: &names) }, throws: { isCorruption($0, at: 5) })
    }

    @Test("a damaged log record fails readAll, stream reads and index reads with corruption naming its position")
    func damagedRecordFailsReads() async throws {
        let backend = InMemoryKeyValueStore()
        let store = KeyValueEventStore(backend: backend)
        let stream = try StreamName("account-7")
        let events = (0..<5).map { EventData(type: "Deposited", data: Data("event \($0)".utf8)) }
        _ = try await store.append(events, to: stream, expectedVersion: .noStream)
        let intact = try #require(try await backend.get(KeyLayout.log(3)))
        _ = try await backend.commit(KeyValueTransaction(writes: [.put(KeyLayout.log(3), Array(intact.value.prefix(30)))]))

        await #expect(performing: { try await store.readAll(from: 1, limit: .max) }, throws: { isCorruption($0, at: 3) })
        await #expect(
            performing: { try await store.read(stream, from: .start, direction: .forward, limit: .max) },
            throws: { isCorruption($0, at: 3) })
        await #expect(
            performing: { try await store.read(stream, from: .end, direction: .backward, limit: .max) },
            throws: { isCorruption($0, at: 3) })
        await #expect(
            performing: { try await store.readEvents(ofType: "Deposited", from: 1, limit: .max) },
            throws: { isCorruption($0, at: 3) })
        // Reads that do not reach the damaged record are unaffected.
        #expect(try await store.readAll(from: 1, limit: 2).map(\.position) == [1, 2])
        #expect(try await store.readAll(from: 4, limit: 10).map(\.position) == [4, 5])
        #expect(try await store.read(stream, from: .version(4), direction: .forward, limit: 10).map(\.version) == [4, 5])
    }

    @Test("small read batches page through stream, global and index reads without losing or repeating events")
    func smallBatchesPageCorrectly() async throws {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore(), readBatchSize: 3)
        let streams = try (0..<3).map { try StreamName("cart-\($0)") }
        for round in 0..<4 {
            for stream in streams {
                _ = try await store.append(
                    [EventData(type: round % 2 == 0 ? "Added" : "Removed", data: Data([UInt8(round)]))], to: stream,
                    expectedVersion: .exact(UInt64(round)))
            }
        }
        #expect(try await store.readAll(from: 1, limit: .max).map(\.position) == Array(1...12))
        #expect(try await store.readAll(from: 5, limit: 4).map(\.position) == [5, 6, 7, 8])
        let forward = try await store.read(streams[1], from: .start, direction: .forward, limit: .max)
        #expect(forward.map(\.version) == [1, 2, 3, 4])
        #expect(forward.map(\.position) == [2, 5, 8, 11])
        let backward = try await store.read(streams[1], from: .end, direction: .backward, limit: .max)
        #expect(backward.map(\.version) == [4, 3, 2, 1])
        #expect(try await store.read(streams[1], from: .version(3), direction: .backward, limit: 2).map(\.version) == [3, 2])
        let added = try await store.readEvents(ofType: "Added", from: 1, limit: .max)
        #expect(added.map(\.position) == [1, 2, 3, 7, 8, 9])
        #expect(try await store.readCategory("cart", from: 4, limit: 5).map(\.position) == [4, 5, 6, 7, 8])
    }
}
