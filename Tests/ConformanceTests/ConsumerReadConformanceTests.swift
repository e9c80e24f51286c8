// Category and event-type reads, stream listing, and multi-stream atomic appends on every backend.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Consumer reads") struct ConsumerReadConformanceTests {
    @Test(arguments: Backends.all)
    func categoryAndTypeReadsReturnExactlyTheMatchingEvents(backend: Backend) async throws {
        try await backend.withStore { store in
            let types = ["Opened", "Deposited", "Withdrawn"]
            var expectedByCategory: [String: [UInt64]] = [:]
            var expectedByType: [String: [UInt64]] = [:]
            // Interleave streams of three categories, including one without a dash and a look-alike prefix.
            let names = ["account-1", "order-1", "account-2", "accounting", "account-x-y", "order-2"]
            for round in 0..<4 {
                for (index, raw) in names.enumerated() {
                    let type = types[(round + index) % types.count]
                    let result = try await store.append(sample(type), to: try stream(raw), expectedVersion: .any)
                    let position = result.positions.lowerBound
                    expectedByCategory[try stream(raw).category, default: []].append(position)
                    expectedByType[type, default: []].append(position)
                }
            }
            for (category, positions) in expectedByCategory {
                let read = try await store.readCategory(category, from: 1, limit: .max)
                #expect(read.map(\.position) == positions, "category \(category)")
                #expect(read.allSatisfy { $0.stream.category == category })
            }
            #expect(try await store.readCategory("account", from: 1, limit: .max).count == 12)
            for (type, positions) in expectedByType {
                #expect(try await store.readEvents(ofType: type, from: 1, limit: .max).map(\.position) == positions)
            }
            // Paging: from a position, with a limit.
            let accounts = expectedByCategory["account"] ?? []
            let page = try await store.readCategory("account", from: accounts[3], limit: 4)
            #expect(page.map(\.position) == Array(accounts[3..<7]))
            #expect(try await store.readCategory("nothing", from: 1, limit: 10).isEmpty)
            #expect(try await store.readEvents(ofType: "Unknown", from: 1, limit: 10).isEmpty)
            // The empty category (streams named "-...") is a category like any other; an over-long one is refused.
            #expect(try await store.readCategory("", from: 1, limit: 1).isEmpty)
            await #expect(throws: EventStoreError.self) {
                _ = try await store.readCategory(String(repeating: "c", count: 256), from: 1, limit: 1)
            }
        }
    }

    @Test(arguments: Backends.all)
    func categoryReadsPageThroughManyEvents(backend: Backend) async throws {
        try await backend.withStore { store in
            for index in 0..<30 {
                _ = try await store.append(samples(20), to: try stream("bulk-\(index % 3)"), expectedVersion: .any)
                _ = try await store.append(samples(5), to: try stream("other-\(index)"), expectedVersion: .any)
            }
            var positions: [UInt64] = []
            var next: UInt64 = 1
            while true {
                let page = try await store.readCategory("bulk", from: next, limit: 128)
                positions += page.map(\.position)
                guard let last = page.last, page.count == 128 else { break }
                next = last.position + 1
            }
            let expected = try await store.readAll(from: 1, limit: .max).filter { $0.stream.category == "bulk" }
            #expect(positions == expected.map(\.position))
            #expect(positions.count == 600)
        }
    }

    /// Batches of mixed event types to streams of two categories, interleaved, so the index runs are of every
    /// length and a type's runs are broken inside a batch.
    static func writeMixedBatches(_ store: KeyValueEventStore) async throws {
        for round in 0..<12 {
            let types = (0..<(round % 5 + 1)).map { index in index % 3 == 2 ? "Closed" : index % 2 == 0 ? "Opened" : "Moved" }
            let events = types.enumerated().map { sample($0.element, "\(round)-\($0.offset)") }
            _ = try await store.append(events, to: try stream("runs-\(round % 2)"), expectedVersion: .any)
            _ = try await store.append([sample("Moved")], to: try stream("walk-\(round % 3)"), expectedVersion: .any)
        }
    }

    /// Expects every category and type read, from every position and with limits that cut runs, to equal the log
    /// filtered, and the index runs to name exactly the events in the log.
    static func expectIndexesMatchLog(_ store: KeyValueEventStore) async throws {
        let log = try await store.readAll(from: 1, limit: .max)
        let end = (log.last?.position ?? 0) + 2
        for position in 1...end {
            for limit in [1, 2, 3, 7, 1_000] {
                for category in ["runs", "walk"] {
                    let expected = log.filter { $0.stream.category == category && $0.position >= position }.prefix(limit)
                    let read = try await store.readCategory(category, from: position, limit: limit)
                    #expect(read.map(\.position) == expected.map(\.position), "\(category) from \(position) limit \(limit)")
                }
                for type in ["Opened", "Moved", "Closed"] {
                    let expected = log.filter { $0.type == type && $0.position >= position }.prefix(limit)
                    let read = try await store.readEvents(ofType: type, from: position, limit: limit)
                    #expect(read.map(\.position) == expected.map(\.position), "\(type) from \(position) limit \(limit)")
                }
            }
        }
        #expect(try await secondaryIndexPositions(store, kind: 0x01).sorted() == log.map(\.position))
        #expect(try await secondaryIndexPositions(store, kind: 0x02).sorted() == log.map(\.position))
    }

    @Test("category and type reads resolve index runs from any position, before and after scavenge trims them",
        arguments: Backends.all)
    func indexRunsMatchTheLog(backend: Backend) async throws {
        try await backend.withStore { store in
            try await Self.writeMixedBatches(store)
            // A batch of five writes one category run and four type runs (Opened, Moved, Closed, Moved... split).
            #expect(try await keyCount(store, prefix: [0x0A, 0x01]) == 24)
            try await Self.expectIndexesMatchLog(store)
            // maxCount cuts runs in the middle; two scavenges at once trim the same runs (conditions make the loser
            // recompute), and the indexes still name exactly the surviving events.
            try await store.setMetadata(StreamMetadata(maxCount: 7), for: try stream("runs-0"))
            try await store.setMetadata(StreamMetadata(truncateBefore: 3), for: try stream("runs-1"))
            async let first = store.scavenge()
            async let second = store.scavenge()
            let removed = try await first.eventsRemoved + second.eventsRemoved
            #expect(removed > 0)
            try await Self.expectIndexesMatchLog(store)
            #expect(try await store.readCategory("runs", from: 1, limit: .max).count == 7 + (try await store.read(try stream("runs-1")).count))
        }
    }

    @Test(arguments: Backends.all)
    func listStreamsByPrefixWithVersions(backend: Backend) async throws {
        try await backend.withStore { store in
            for (name, count) in [("order-2", 3), ("order-1", 1), ("user-1", 2), ("order-10", 4)] {
                _ = try await store.append(samples(count), to: try stream(name), expectedVersion: .noStream)
            }
            let orders = try await store.listStreams(prefix: "order-", after: nil, limit: 100)
            #expect(orders.map(\.stream.rawValue) == ["order-1", "order-10", "order-2"])
            #expect(orders.map(\.version) == [1, 4, 3])
            let all = try await store.listStreams(prefix: "", after: nil, limit: 100)
            #expect(all.map(\.stream.rawValue) == ["order-1", "order-10", "order-2", "user-1"])
            let page = try await store.listStreams(prefix: "", after: try stream("order-10"), limit: 1)
            #expect(page.map(\.stream.rawValue) == ["order-2"])
        }
    }

    @Test(arguments: Backends.all)
    func aMultiStreamAppendIsAtomicWhenOneExpectedVersionFails(backend: Backend) async throws {
        try await backend.withStore { store in
            let from = try stream("account-1")
            let to = try stream("account-2")
            _ = try await store.append(samples(2), to: from, expectedVersion: .noStream)
            _ = try await store.append(samples(1), to: to, expectedVersion: .noStream)
            do {
                _ = try await store.append([
                    StreamAppend(stream: from, expectedVersion: .exact(2), events: [sample("Withdrawn")]),
                    StreamAppend(stream: to, expectedVersion: .exact(5), events: [sample("Deposited")]),
                ])
                Issue.record("the append succeeded with a wrong expected version")
            } catch EventStoreError.wrongExpectedVersion(let failed, _, let actual) {
                #expect(failed == to)
                #expect(actual == 1)
            }
            // Nothing of the failed append is visible anywhere.
            #expect(try await store.version(of: from) == 2)
            #expect(try await store.lastPosition() == 3)
            #expect(try await store.readAll(from: 1, limit: 100).count == 3)
            #expect(try await store.readEvents(ofType: "Withdrawn", from: 1, limit: 10).isEmpty)
            // The same transfer with the right versions commits both parts at consecutive positions.
            let results = try await store.append([
                StreamAppend(stream: from, expectedVersion: .exact(2), events: [sample("Withdrawn")]),
                StreamAppend(stream: to, expectedVersion: .exact(1), events: [sample("Deposited")]),
            ])
            #expect(results.map(\.version) == [3, 2])
            #expect(results.map(\.positions) == [4..<5, 5..<6])
        }
    }
}
