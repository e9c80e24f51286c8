// Conformance: visiting reads (`read(_:from:direction:limit:visiting:)`, `readAll(from:limit:visiting:)`) lend
// exactly the events the array-returning reads return, stop when asked, honour cancellation, and the protocol's
// default implementation (for stores that cannot lend in place) does the same.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Conformance: visiting reads")
struct VisitingReadConformanceTests {
    /// Every event a visiting stream read lends, copied, and the count it returned.
    static func visited(
        _ store: some EventStoring, _ stream: StreamName, from start: ReadStart, direction: ReadDirection,
        limit: Int
    ) async throws -> [RecordedEvent] {
        var events: [RecordedEvent] = []
        let count = try await store.read(stream, from: start, direction: direction, limit: limit) { event in
            events.append(event.copied())
            return true
        }
        #expect(count == events.count)
        return events
    }

    /// Every event a visiting log read lends, copied, and the count it returned.
    static func visitedLog(_ store: some EventStoring, from position: UInt64, limit: Int) async throws
        -> [RecordedEvent]
    {
        var events: [RecordedEvent] = []
        let count = try await store.readAll(from: position, limit: limit) { event in
            events.append(event.copied())
            return true
        }
        #expect(count == events.count)
        return events
    }

    /// Expects `lent` to equal `expected` event for event, reporting positions (not whole events) when they differ.
    static func expectSame(_ lent: [RecordedEvent], _ expected: [RecordedEvent], _ comment: Comment? = nil) {
        #expect(lent.map(\.position) == expected.map(\.position), comment)
        let identical = lent == expected
        #expect(identical, comment)
    }

    /// The stream reads compared: every start, both directions, limits that cut and that do not.
    static let streamReads: [(ReadStart, ReadDirection, Int)] = [
        (.start, .forward, .max), (.start, .forward, 1), (.start, .forward, 7), (.version(5), .forward, 10),
        (.version(40), .forward, .max), (.version(1_000), .forward, 5), (.end, .forward, 5), (.start, .forward, 0),
        (.end, .backward, .max), (.end, .backward, 3), (.version(20), .backward, 6), (.start, .backward, .max),
        (.version(1_000), .backward, 2),
    ]

    /// Writes streams whose reads exercise every decoding path: interleaved streams, metadata, an empty payload, a
    /// payload larger than a page (overflow pages in the page file), a stream with hidden events (maxCount) and a
    /// deleted and recreated one. Returns the streams.
    static func writeVariety(_ store: KeyValueEventStore) async throws -> [StreamName] {
        let plain = try uniqueStream("plain")
        let rich = try uniqueStream("rich")
        let capped = try uniqueStream("capped")
        let recreated = try uniqueStream("recreated")
        try await store.setMetadata(StreamMetadata(maxCount: 12), for: capped)
        for round in 0..<8 {
            _ = try await store.append(makeEvents(5, label: "p\(round)-"), to: plain, expectedVersion: .any)
            let metadata = EventMetadata(
                correlationID: UUID(), causationID: round.isMultiple(of: 2) ? UUID() : nil,
                properties: round.isMultiple(of: 3) ? [:] : ["round": "\(round)", "user": "ada"])
            let payload = round == 3 ? Data(repeating: 0x5A, count: 20_000) : round == 5 ? Data() : Data("r\(round)".utf8)
            _ = try await store.append(
                [EventData(type: "Rich\(round % 2)", data: payload, metadata: metadata)], to: rich, expectedVersion: .any)
            _ = try await store.append(makeEvents(4, label: "c\(round)-"), to: capped, expectedVersion: .any)
            if round == 4 { _ = try await store.delete(recreated, expectedVersion: .any, mode: .soft) }
            _ = try await store.append(makeEvents(2, label: "d\(round)-"), to: recreated, expectedVersion: .any)
        }
        return [plain, rich, capped, recreated]
    }

    @Test("a visiting read lends exactly the events the array read returns", arguments: Backends.all)
    func sameEventsAsArrayReads(backend: Backend) async throws {
        try await backend.withStore { store in
            let streams = try await Self.writeVariety(store)
            for stream in streams + [try uniqueStream("missing")] {
                for (start, direction, limit) in Self.streamReads {
                    let expected = try await store.read(stream, from: start, direction: direction, limit: limit)
                    let lent = try await Self.visited(store, stream, from: start, direction: direction, limit: limit)
                    Self.expectSame(lent, expected, "\(stream) from \(start) \(direction) limit \(limit)")
                }
            }
            let head = try await store.lastPosition()
            #expect(head > 0)
            for (position, limit) in [(1, Int.max), (0, 10), (7, 1), (head - 3, .max), (head + 1, .max), (1, 0)] {
                let expected = try await store.readAll(from: position, limit: limit)
                Self.expectSame(try await Self.visitedLog(store, from: position, limit: limit), expected)
            }
            // The oversized payload and the empty one arrive whole.
            let rich = try await Self.visited(store, streams[1], from: .start, direction: .forward, limit: .max)
            #expect(rich[3].data == Data(repeating: 0x5A, count: 20_000))
            #expect(rich[5].data.isEmpty)
        }
    }

    @Test("returning false stops a visiting read after that event", arguments: Backends.all)
    func stopsWhenAsked(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            _ = try await store.append(makeEvents(30), to: stream, expectedVersion: .noStream)
            var versions: [UInt64] = []
            let count = try await store.read(stream, from: .start, direction: .forward, limit: .max) { event in
                versions.append(event.version)
                return versions.count < 4
            }
            #expect(count == 4)
            #expect(versions == [1, 2, 3, 4])
            var backward: [UInt64] = []
            _ = try await store.read(stream, from: .end, direction: .backward, limit: .max) { event in
                backward.append(event.version)
                return event.version > 28
            }
            #expect(backward == [30, 29, 28])
            var positions: [UInt64] = []
            let logCount = try await store.readAll(from: 1, limit: .max) { event in
                positions.append(event.position)
                return event.position < 9
            }
            #expect(logCount == 9)
            #expect(positions == Array(1...9))
        }
    }

    @Test("a negative limit is an invalid argument for visiting reads", arguments: Backends.all)
    func negativeLimit(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            _ = try await store.append(makeEvents(2), to: stream, expectedVersion: .noStream)
            await #expect(throws: EventStoreError.self) {
                _ = try await store.read(stream, from: .start, direction: .forward, limit: -1) { _ in true }
            }
            await #expect(throws: EventStoreError.self) { _ = try await store.readAll(from: 1, limit: -1) { _ in true } }
        }
    }

    @Test("cancelling a task stops a visiting stream read and a visiting log read", arguments: Backends.all)
    func cancellation(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            _ = try await store.append(makeEvents(500), to: stream, expectedVersion: .noStream)
            let streamRead = Task {
                try await store.read(stream, from: .start, direction: .forward, limit: .max) { _ in true }
            }
            streamRead.cancel()
            await #expect(throws: CancellationError.self) { _ = try await streamRead.value }
            let logRead = Task { try await store.readAll(from: 1, limit: .max) { _ in true } }
            logRead.cancel()
            await #expect(throws: CancellationError.self) { _ = try await logRead.value }
        }
    }

    @Test("the protocol's default visiting reads, over array reads in chunks, lend the same events")
    func defaultImplementation() async throws {
        try await Backend.inMemory.withStore { store in
            let forwarding = ForwardingEventStore(base: store)
            let long = try uniqueStream("long")
            // More than two of the default implementation's chunks (1,024 events), so chunks join in both directions.
            for batch in 0..<5 {
                _ = try await store.append(makeEvents(500, label: "\(batch)-"), to: long, expectedVersion: .any)
            }
            let streams = try await Self.writeVariety(store) + [long]
            for stream in streams {
                for (start, direction, limit) in Self.streamReads + [(.version(100), .forward, 2_000), (.end, .backward, 1_500)] {
                    let expected = try await store.read(stream, from: start, direction: direction, limit: limit)
                    let lent = try await Self.visited(forwarding, stream, from: start, direction: direction, limit: limit)
                    Self.expectSame(lent, expected, "\(stream) from \(start) \(direction) limit \(limit)")
                }
            }
            for (position, limit) in [(1, Int.max), (1_000, 1_100), (2_500, 10), (1, 0)] as [(UInt64, Int)] {
                Self.expectSame(
                    try await Self.visitedLog(forwarding, from: position, limit: limit),
                    try await store.readAll(from: position, limit: limit))
            }
            var seen = 0
            let stopped = try await forwarding.readAll(from: 1, limit: .max) { _ in
                seen += 1
                return seen < 1_500
            }
            #expect(stopped == 1_500)
        }
    }
}
