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
        for (index, metadata) in samples.enumerated() {
            let version = UInt64(index + 1) * 1_000_003
            let bytes = StreamMetadataRecord.encode(metadata, version: version)
            #expect(bytes.first == 2)
            let decoded = try StreamMetadataRecord.decodeVersioned(bytes, stream: stream)
            #expect(decoded == VersionedStreamMetadata(metadata: metadata, version: version))
        }
    }

    /// A record of format 1 (written before metadata was versioned) still reads, as version 1.
    @Test func metadataOfFormatOneReadsAsVersionOne() throws {
        // u8 1, flags = maxCount | truncateBefore, u64le 3, u64le 12.
        let bytes: [UInt8] = [1, 5, 3, 0, 0, 0, 0, 0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0]
        let decoded = try StreamMetadataRecord.decodeVersioned(bytes, stream: stream)
        let expected = VersionedStreamMetadata(metadata: StreamMetadata(maxCount: 3, truncateBefore: 12), version: 1)
        #expect(decoded == expected)
    }

    @Test func truncatedMetadataIsCorruption() throws {
        let bytes = Array(StreamMetadataRecord.encode(StreamMetadata(maxCount: 3), version: 1).dropLast())
        #expect(throws: EventStoreError.self) { try StreamMetadataRecord.decode(bytes, stream: stream) }
    }

    /// A record exists only because metadata was set: version 0 in one is damage, not "never set".
    @Test func metadataAtVersionZeroIsCorruption() throws {
        var bytes = StreamMetadataRecord.encode(StreamMetadata(maxCount: 3), version: 1)
        bytes[1] = 0
        #expect {
            try StreamMetadataRecord.decode(bytes, stream: stream)
        } throws: { error in
            guard case EventStoreError.corrupted(let location, let detail) = error else { return false }
            return location.contains("order-1") && detail.contains("version 0")
        }
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
