// Names the store keys by their UTF-8 bytes are matched by bytes: subscription filters and the system-stream
// prefix. Before, String semantics (canonical equivalence, whole characters) let a filter deliver a type it was not
// given and skip a stream listStreams(prefix:) lists, and let a user stream start with the byte "$". (A category
// stays "before the first '-' character", as Conformance: input validation pins, since index keys depend on it.)

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Names are matched by their bytes: subscription filters and the system prefix")
struct NameBytesTests {
    /// The events a subscription delivers until it first catches up.
    private func history(_ store: KeyValueEventStore, _ filter: SubscriptionFilter) async throws -> [RecordedEvent] {
        var events: [RecordedEvent] = []
        for try await message in store.subscribeToAll(from: .start, filter: filter) {
            if case .event(let event) = message { events.append(event) } else { break }
        }
        return events
    }

    @Test("an event-type filter does not deliver a byte-different (NFD) type")
    func eventTypeFilterUsesBytes() async throws {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore())
        let nfc = "Caf\u{E9}Opened"
        let nfd = "Cafe\u{301}Opened"
        _ = try await store.append(
            [EventData(type: nfc, data: Data([1])), EventData(type: nfd, data: Data([2]))],
            to: try StreamName("menu-1"), expectedVersion: .noStream)
        let indexed = try await store.readEvents(ofType: nfc, from: 1, limit: 10)
        #expect(indexed.count == 1)
        let delivered = try await history(store, .eventTypes(nfc))
        #expect(delivered.map { Array($0.type.utf8) } == indexed.map { Array($0.type.utf8) })
        // Both spellings in one filter are two types, not one.
        #expect(try await history(store, .eventTypes(nfc, nfd)).count == 2)
        #expect(SubscriptionFilter.eventTypes(nfc) != SubscriptionFilter.eventTypes(nfd))
    }

    @Test("a stream-prefix filter matches the name's bytes, like listStreams(prefix:)")
    func streamPrefixFilterUsesBytes() async throws {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore())
        let nfd = try StreamName("cafe\u{301}-1")  // starts with the bytes of "cafe"
        let other = try StreamName("caf\u{E9}-2")  // NFC: does not start with the bytes of "cafe\u{301}"
        _ = try await store.append([EventData(type: "Opened", data: Data())], to: nfd, expectedVersion: .noStream)
        _ = try await store.append([EventData(type: "Opened", data: Data())], to: other, expectedVersion: .noStream)
        #expect(try await store.listStreams(prefix: "cafe", after: nil, limit: 10).map(\.stream) == [nfd])
        #expect(try await history(store, .streamPrefix("cafe")).map(\.stream) == [nfd])
        #expect(try await store.listStreams(prefix: "cafe\u{301}", after: nil, limit: 10).map(\.stream) == [nfd])
        #expect(try await history(store, .streamPrefix("cafe\u{301}")).map(\.stream) == [nfd])
    }

    @Test("a name whose first byte is '$' is a system stream, even when a combining mark follows the '$'")
    func systemPrefixIsTheFirstByte() throws {
        let name = "$\u{301}orders"
        do {
            _ = try StreamName(name)
            Issue.record("a user stream named \(name) was accepted")
        } catch let EventStoreError.invalidStreamName(_, rule) {
            #expect(rule == .reservedPrefix)
        }
        #expect(try StreamName.system(name).isSystem)
    }

    @Test("category and type reads page exactly like a filtered readAll", arguments: [1, 2, 3, 7, 9])
    func pagesMatchReadAll(batch: Int) async throws {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore(), readBatchSize: batch)
        let types = ["A", "B"]
        for round in 0..<6 {
            for name in ["order-1", "order-2", "cart-1"] {
                let count = (round * 3 + name.count) % 11 + 1
                let events = (0..<count).map { EventData(type: types[($0 / 3 + round) % 2], data: Data([UInt8($0)])) }
                _ = try await store.append(events, to: try StreamName(name), expectedVersion: .any)
            }
        }
        try await store.setMetadata(StreamMetadata(maxCount: 4), for: try StreamName("order-1"))
        let version = try await store.version(of: try StreamName("order-2"))
        _ = try await store.delete(try StreamName("order-2"), expectedVersion: .exact(version), mode: .soft)
        _ = try await store.append(
            [EventData(type: "A", data: Data())], to: try StreamName("order-2"), expectedVersion: .any)
        _ = try await store.scavenge()
        let all = try await store.readAll(from: 1, limit: 10_000)
        for limit in [1, 2, 5, 10_000] {
            func paged(_ read: (UInt64, Int) async throws -> [RecordedEvent]) async throws -> [UInt64] {
                var result: [UInt64] = []
                var from: UInt64 = 1
                while true {
                    let page = try await read(from, limit)
                    result += page.map(\.position)
                    guard let last = page.last, page.count == limit else { return result }
                    from = last.position + 1
                }
            }
            #expect(
                try await paged { try await store.readCategory("order", from: $0, limit: $1) }
                    == all.filter { $0.stream.category == "order" }.map(\.position))
            #expect(
                try await paged { try await store.readEvents(ofType: "A", from: $0, limit: $1) }
                    == all.filter { $0.type == "A" }.map(\.position))
        }
    }
}
