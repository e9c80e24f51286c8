// Unit tests of the retention and consumer value codecs: round trips, format evolution of the stream head, and
// corruption reported with its location.

import EventStore
import Testing

@testable import EventStoreKV

@Suite struct RetentionCodecTests {
    let stream: StreamName

    init() throws { stream = try StreamName("order-1") }

    @Test func liveHeadKeepsFormatOne() throws {
        let head = StreamHead(version: 7, lastPosition: 42)
        let bytes = head.encoded()
        #expect(bytes.first == 1)
        #expect(bytes.count == 17)
        #expect(try StreamHead.decode(bytes, stream: stream) == head)
    }

    @Test func deletedHeadRoundTripsInFormatTwo() throws {
        for state in [StreamHead.State.softDeleted, .hardDeleted, .live] {
            let head = StreamHead(version: 9, lastPosition: 100, state: state, hiddenThrough: 5)
            let bytes = head.encoded()
            #expect(bytes.first == 2)
            #expect(try StreamHead.decode(bytes, stream: stream) == head)
        }
    }

    @Test func unknownHeadStateIsCorruption() throws {
        var bytes = StreamHead(version: 1, lastPosition: 1, state: .softDeleted, hiddenThrough: 1).encoded()
        bytes[17] = 9
        #expect {
            try StreamHead.decode(bytes, stream: stream)
        } throws: { error in
            guard case EventStoreError.corrupted(let location, _) = error else { return false }
            return location.contains("order-1")
        }
    }

    @Test func metadataRoundTrips() throws {
        let samples = [
            StreamMetadata(),
            StreamMetadata(maxCount: 3),
            StreamMetadata(maxAge: .seconds(90)),
            StreamMetadata(truncateBefore: 12),
            StreamMetadata(maxCount: 1, maxAge: .milliseconds(5), truncateBefore: 2),
        ]
        for metadata in samples {
            let decoded = try StreamMetadataRecord.decode(StreamMetadataRecord.encode(metadata), stream: stream)
            #expect(decoded == metadata)
        }
    }

    @Test func truncatedMetadataIsCorruption() throws {
        let bytes = Array(StreamMetadataRecord.encode(StreamMetadata(maxCount: 3)).dropLast())
        #expect(throws: EventStoreError.self) { try StreamMetadataRecord.decode(bytes, stream: stream) }
    }

    @Test func checkpointRoundTripsAndRejectsGarbage() throws {
        #expect(try CheckpointRecord.decode(CheckpointRecord.encode(123_456), consumer: "c") == 123_456)
        #expect(throws: EventStoreError.self) { try CheckpointRecord.decode([1, 2, 3], consumer: "c") }
    }

    @Test func secondaryIndexKeysOrderByPositionWithinOneName() {
        let a = KeyLayout.secondaryIndex(.eventType, "Deposited", position: 2)
        let b = KeyLayout.secondaryIndex(.eventType, "Deposited", position: 10)
        let other = KeyLayout.secondaryIndex(.eventType, "Deposit", position: 1)
        let range = KeyRange.prefix(KeyLayout.secondaryIndexPrefix(.eventType, "Deposited"))
        #expect(a.lexicographicallyPrecedes(b))
        #expect(range.contains(a) && range.contains(b))
        #expect(!range.contains(other))
    }

    @Test func indexRunsRoundTripSplitAndRejectGarbage() throws {
        func positions(_ last: UInt64, _ value: [UInt8]) throws -> ClosedRange<UInt64> {
            try value.withUnsafeBytes { try IndexRun.positions(last: last, value: $0, location: "test") }
        }
        #expect(IndexRun.encode(count: 1).isEmpty)
        #expect(try positions(7, IndexRun.encode(count: 1)) == 7...7)
        #expect(try positions(1_000, IndexRun.encode(count: 300)) == 701...1_000)
        #expect(try positions(70_000, IndexRun.encode(count: 70_000)) == 1...70_000)
        // A count of 0 or 1 spelled out, one past the position, or a value of the wrong size is corruption.
        for (last, value) in [(5, [0, 0, 0, 0]), (5, [0, 0, 0, 1]), (5, [0, 0, 0, 6]), (5, [0, 2]), (5, [0, 0, 0, 0, 2])]
            as [(UInt64, [UInt8])]
        {
            #expect(throws: EventStoreError.self) { _ = try positions(last, value) }
        }
        // Writes name each stretch of consecutive positions with one run keyed by its last position.
        let prefix = KeyLayout.secondaryIndexPrefix(.category, "order")
        let writes = IndexRun.writes(prefix: prefix, positions: [3, 4, 5, 9, 11, 12])
        let expected: [KeyWrite] = [
            .put(KeyLayout.secondaryIndex(.category, "order", position: 5), IndexRun.encode(count: 3)),
            .put(KeyLayout.secondaryIndex(.category, "order", position: 9), []),
            .put(KeyLayout.secondaryIndex(.category, "order", position: 12), IndexRun.encode(count: 2)),
        ]
        #expect(writes == expected)
        #expect(IndexRun.writes(prefix: prefix, positions: []).isEmpty)
    }
}
