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
}
