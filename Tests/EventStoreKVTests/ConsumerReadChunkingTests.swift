// Indexed reads, listing and retention-aware stream reads when a read spans many backend round trips: a tiny
// readBatchSize makes every read cross chunk boundaries, where off-by-one errors in range continuation would show.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

@Suite("Consumer reads in small chunks")
struct ConsumerReadChunkingTests {
    let store = KeyValueEventStore(backend: InMemoryKeyValueStore(), readBatchSize: 3)

    func append(_ count: Int, type: String, to name: String) async throws {
        let events = (0..<count).map { EventData(type: type, data: Data("\(name)-\($0)".utf8)) }
        _ = try await store.append(events, to: try StreamName(name), expectedVersion: .any)
    }

    @Test func indexedReadsCrossChunkBoundaries() async throws {
        for round in 0..<5 {
            try await append(4, type: "A", to: "left-\(round)")
            try await append(3, type: "B", to: "right-\(round)")
        }
        let all = try await store.readAll(from: 1, limit: .max)
        #expect(all.count == 35)
        let left = try await store.readCategory("left", from: 1, limit: .max)
        #expect(left.map(\.position) == all.filter { $0.stream.category == "left" }.map(\.position))
        let typeB = try await store.readEvents(ofType: "B", from: 5, limit: 10)
        #expect(typeB.map(\.position) == Array(all.filter { $0.type == "B" && $0.position >= 5 }.map(\.position).prefix(10)))
        let streams = try await store.listStreams(prefix: "", after: nil, limit: .max)
        #expect(streams.count == 10)
        #expect(streams.map(\.stream) == streams.map(\.stream).sorted())
        let page = try await store.listStreams(prefix: "right-", after: try StreamName("right-1"), limit: 2)
        #expect(page.map(\.stream.rawValue) == ["right-2", "right-3"])
    }

    @Test func retentionAwareReadsCrossChunkBoundaries() async throws {
        let name = try StreamName("log-1")
        try await append(20, type: "A", to: "log-1")
        try await store.setMetadata(StreamMetadata(maxCount: 8), for: name)
        #expect(try await store.read(name).map(\.version) == Array(13...20))
        #expect(try await store.readBackward(name).map(\.version) == Array((13...20).reversed()))
        #expect(try await store.read(name, from: .version(15), limit: 4).map(\.version) == [15, 16, 17, 18])
        #expect(try await store.scavenge().eventsRemoved == 12)
        #expect(try await store.read(name).map(\.version) == Array(13...20))
    }

    @Test func scavengeRemovesMoreThanOneBatchPerStream() async throws {
        let name = try StreamName("big-1")
        try await append(300, type: "A", to: "big-1")
        try await store.setMetadata(StreamMetadata(maxCount: 10), for: name)
        #expect(KeyValueEventStore.scavengeBatchSize < 290)
        #expect(try await store.scavenge().eventsRemoved == 290)
        #expect(try await store.readAll(from: 1, limit: .max).map(\.position) == Array(291...300))
        #expect(try await store.read(name).map(\.version) == Array(291...300))
    }
}
