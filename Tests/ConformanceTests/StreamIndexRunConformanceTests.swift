// Stream index runs (Sources/EventStoreKV/EventStore/StreamIndexRun.swift): one stream index entry names all the
// events of one append to one stream. Reads must land inside a run from any version, go either way, and carry on
// across read chunks that end inside a run; retention floors inside a run, scavenge shortening a run from its
// front, and per-version entries (what stores wrote before runs) must read exactly as before. Expected results come
// from the appends' own results, never from the reads under test.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Conformance: stream index runs")
struct StreamIndexRunConformanceTests {
    /// Appends of every shape: single events, short runs and a long one, 68 events in all.
    static let batches = [1, 3, 1, 40, 7, 1, 2, 13]

    /// One recorded event as the appends reported it: version, global position and payload.
    struct Expected: Equatable, CustomStringConvertible {
        var version: UInt64
        var position: UInt64
        var label: String
        var description: String { "v\(version)@\(position)" }
    }

    /// Appends `batches` to `stream`, with a single event to another stream after each (so positions are not
    /// versions), and returns every event of `stream` as the appends reported them.
    static func appendBatches(_ store: KeyValueEventStore, to stream: StreamName) async throws -> [Expected] {
        let other = try StreamName("\(stream.rawValue)-other")
        var expected: [Expected] = []
        for (index, size) in batches.enumerated() {
            let labels = (0..<size).map { "b\(index)-\($0)" }
            let events = labels.map { EventData(type: "Posted", data: Data($0.utf8)) }
            let version = UInt64(expected.count)
            let result = try await store.append(
                events, to: stream, expectedVersion: version == 0 ? .noStream : .exact(version))
            #expect(result.version == version + UInt64(size))
            for (offset, position) in result.positions.enumerated() {
                expected.append(Expected(version: version + UInt64(offset) + 1, position: position, label: labels[offset]))
            }
            _ = try await store.append(EventData(type: "Other", data: Data()), to: other, expectedVersion: .any)
        }
        return expected
    }

    /// What a read from `start` in `direction` with `limit` returns of `events` (ascending versions) when versions
    /// from `floor` on are visible.
    static func model(
        _ events: [Expected], from start: ReadStart, _ direction: ReadDirection, limit: Int, floor: UInt64 = 1
    ) -> [Expected] {
        let visible = events.filter { $0.version >= floor }
        switch (direction, start) {
        case (.forward, .start): return Array(visible.prefix(limit))
        case (.forward, .end): return []
        case (.forward, .version(let version)): return Array(visible.filter { $0.version >= version }.prefix(limit))
        case (.backward, .start): return Array(visible.filter { $0.version <= 1 }.reversed().prefix(limit))
        case (.backward, .end): return Array(visible.reversed().prefix(limit))
        case (.backward, .version(let version)):
            return Array(visible.filter { $0.version <= version }.reversed().prefix(limit))
        }
    }

    static func read(
        _ store: KeyValueEventStore, _ stream: StreamName, from start: ReadStart, _ direction: ReadDirection, limit: Int
    ) async throws -> [Expected] {
        try await store.read(stream, from: start, direction: direction, limit: limit).map {
            Expected(version: $0.version, position: $0.position, label: String(decoding: $0.data, as: UTF8.self))
        }
    }

    /// Every read start (all versions, a few past the end, and both ends), each direction, and limits that end
    /// inside runs and past them, through stores whose read chunks are 1, 4 and 4,096 events.
    static func checkEveryRead(
        _ store: KeyValueEventStore, _ stream: StreamName, _ events: [Expected], floor: UInt64 = 1, stride step: Int = 1
    ) async throws {
        let starts: [ReadStart] = [.start, .end, .version(.max)]
            + Swift.stride(from: 0, through: events.count + 2, by: step).map { .version(UInt64($0)) }
        for chunk in [1, 4, 4_096] {
            let chunked = KeyValueEventStore(backend: store.backend, readBatchSize: chunk)
            for start in starts {
                for direction in [ReadDirection.forward, .backward] {
                    for limit in [1, 2, 5, 39, Int.max] {
                        let read = try await read(chunked, stream, from: start, direction, limit: limit)
                        let expected = model(events, from: start, direction, limit: limit, floor: floor)
                        #expect(read == expected, "from \(start) \(direction) limit \(limit), chunks of \(chunk)")
                        if read != expected { return }
                    }
                }
            }
        }
    }

    @Test("reads from every version, either way, with limits ending inside runs, match the appends", arguments: Backends.all)
    func readsAcrossRuns(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("runs")
            let events = try await Self.appendBatches(store, to: stream)
            try await Self.checkEveryRead(store, stream, events, stride: backend.workloadDivisor)
            // One stream index entry per append.
            let entries = try await store.backend.scan(
                .prefix(KeyLayout.streamIndexPrefix(stream)), direction: .forward, limit: .max)
            #expect(entries.count == Self.batches.count)
        }
    }

    @Test("floors inside a run, and scavenge shortening runs from their front, leave reads as the model says", arguments: Backends.all)
    func retentionInsideRuns(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("runs-kept")
            let events = try await Self.appendBatches(store, to: stream)
            // Version 20 lies inside the run of versions 6...45.
            try await store.setMetadata(StreamMetadata(truncateBefore: 20), for: stream)
            try await Self.checkEveryRead(store, stream, events, floor: 20, stride: 3 * backend.workloadDivisor)
            #expect(try await store.scavenge(stream) == 19)
            try await Self.checkEveryRead(store, stream, events, floor: 20, stride: 3 * backend.workloadDivisor)
            let other = try StreamName("\(stream.rawValue)-other")
            let otherPositions = try await store.read(other, from: .start, limit: .max).map(\.position)
            #expect(
                try await streamIndexPositions(store).sorted()
                    == (events.filter { $0.version >= 20 }.map(\.position) + otherPositions).sorted())

            // Version 59 lies inside the last run, 56...68: the runs before it go whole, that one loses three.
            try await store.setMetadata(StreamMetadata(maxCount: 10), for: stream)
            #expect(try await store.scavenge(stream) == 39)
            try await Self.checkEveryRead(store, stream, events, floor: 59, stride: 3 * backend.workloadDivisor)
            let prefix = KeyLayout.streamIndexPrefix(stream)
            let entries = try await store.backend.scan(.prefix(prefix), direction: .forward, limit: .max)
            #expect(
                try entries.map { try StreamIndexRun.decode($0, versionOffset: prefix.count, location: "test") }
                    == [StreamIndexRun(lastVersion: 68, lastPosition: events[67].position, count: 10)])
            #expect(try await store.scavenge(stream) == 0)
        }
    }

    /// Stores written before runs hold one entry per version (an 8-byte position), whatever the append's size.
    @Test("a stream index of one entry per version, as earlier stores wrote it, reads and scavenges as before", arguments: Backends.all)
    func perVersionEntries(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("runs-old")
            let events = try await Self.appendBatches(store, to: stream)
            var writes: [KeyWrite] = []
            let prefix = KeyLayout.streamIndexPrefix(stream)
            for entry in try await store.backend.scan(.prefix(prefix), direction: .forward, limit: .max) {
                writes.append(.delete(entry.key))
            }
            for event in events {
                writes.append(.put(KeyLayout.streamIndex(stream, version: event.version), PositionValue.encode(event.position)))
            }
            _ = try await store.backend.commit(KeyValueTransaction(writes: writes))
            try await Self.checkEveryRead(store, stream, events, stride: 2 * backend.workloadDivisor)
            try await store.setMetadata(StreamMetadata(truncateBefore: 20), for: stream)
            #expect(try await store.scavenge(stream) == 19)
            try await Self.checkEveryRead(store, stream, events, floor: 20, stride: 3 * backend.workloadDivisor)
            #expect(try await streamIndexPositions(store).filter { events.map(\.position).contains($0) }.sorted()
                == events.filter { $0.version >= 20 }.map(\.position))
            #expect(try await store.scavenge(stream) == 0)
        }
    }

    @Test("a damaged stream index run is a typed error naming the stream index, never wrong events")
    func damagedRuns() async throws {
        for value: [UInt8] in [
            [0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0],  // a run of zero events
            [0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 1],  // a run of one event in the longer form
            [0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 50],  // more events than versions before it
            [0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 5],  // more events than positions before it
            [0, 0, 0, 9],  // neither form
        ] {
            let store = KeyValueEventStore.inMemory()
            let stream = try StreamName("damaged")
            _ = try await store.append(makeEvents(10), to: stream, expectedVersion: .noStream)
            _ = try await store.backend.commit(
                KeyValueTransaction(writes: [.put(KeyLayout.streamIndex(stream, version: 10), value)]))
            for direction in [ReadDirection.forward, .backward] {
                await #expect(
                    performing: {
                        try await store.read(
                            stream, from: direction == .forward ? .start : .end, direction: direction, limit: .max)
                    },
                    throws: { error in
                        guard case EventStoreError.corrupted(let location, _) = error else { return false }
                        return location.contains("stream index of \"damaged\"")
                    })
            }
            await #expect(throws: EventStoreError.self) { try await store.scavenge() }
        }
    }
}
