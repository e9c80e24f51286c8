// KeyValueStore.changes(after:prefix:) promises changes "made by transactions with a revision greater than
// `revision`". A watch that starts after a revision the store has not reached yet (a consumer's saved revision,
// another replica's revision) must not be handed the commits at or below it, as etcd's watch is not (found by a
// review, twenty-second session).

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

@Suite("Change feeds: a watch after a revision not reached yet")
struct FutureRevisionWatchTests {
    /// Commits 6 puts under [9] and returns the revision of the first change the watch after revision 5 delivers.
    static func firstDelivered(_ store: any KeyValueStore) async throws -> UInt64? {
        let watch = store.changes(after: 5, prefix: [9])
        for index in 1...6 {
            _ = try await store.commit(KeyValueTransaction(writes: [.put([9, UInt8(index)], [1])]))
        }
        var iterator = watch.makeAsyncIterator()
        return try await iterator.next()?.revision  // six changes are buffered: returns at once
    }

    @Test("in memory: a watch after revision 5, started at revision 0, gets revision 6 first")
    func inMemory() async throws {
        let store = InMemoryKeyValueStore()
        let first = try await Self.firstDelivered(store)
        #expect(first == 6, "delivered revision \(first.map(String.init) ?? "nil"), which is not after 5")
        try await store.close()
    }

    @Test("page file: a watch after revision 5, started at revision 0, gets revision 6 first")
    func pageFile() async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("eventstore-future-watch-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try await PageFileKeyValueStore.open(directory: directory)
        let first = try await Self.firstDelivered(store)
        #expect(first == 6, "delivered revision \(first.map(String.init) ?? "nil"), which is not after 5")
        try await store.close()
    }
}
