// A change-feed watcher whose consumer went away releases its stream, and every change buffered in it, at once,
// without waiting for another commit or watch (found by a review, twenty-second session, of the deadlock fix that
// first only queued it).

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

@Suite("Change feeds: a watcher whose consumer went away is released without waiting for another commit")
struct TerminatedWatcherTests {
    /// How many of `feed`'s watchers still hold a consumer's stream.
    static func watcherCount(_ feed: ChangeFeed) -> Int { feed.liveWatcherCount }

    static func inMemoryFeed(_ store: InMemoryKeyValueStore) -> ChangeFeed? {
        Mirror(reflecting: store).descendant("state", "value", "changes") as? ChangeFeed
    }

    @Test("in memory: a cancelled consumer's watcher (and its 1,000 buffered changes) is released")
    func inMemoryCancelledConsumer() async throws {
        let store = InMemoryKeyValueStore()
        let (started, signal) = AsyncStream<Void>.makeStream()
        let consumer = Task {
            var iterator = store.changes(after: 0, prefix: [7]).makeAsyncIterator()
            signal.finish()
            // Takes one change, then stops reading: the rest stays buffered in the stream.
            _ = try await iterator.next()
            try await Task.sleep(for: .seconds(3_600))
            _ = try await iterator.next()
        }
        for await _ in started {}
        for index in 0..<1_000 {
            _ = try await store.commit(KeyValueTransaction(writes: [.put([7, UInt8(index % 256)], [UInt8](repeating: 1, count: 8))]))
        }
        consumer.cancel()
        _ = await consumer.result  // its stream is gone: the termination handler has run
        let feed = try #require(Self.inMemoryFeed(store))
        #expect(Self.watcherCount(feed) == 0, "the store still holds the ended watcher and its buffered changes")
        try await store.close()
    }

    @Test("in memory: a dropped, never-read change stream's watcher is released")
    func inMemoryDroppedStream() async throws {
        let store = InMemoryKeyValueStore()
        do {
            let stream = store.changes(after: 0, prefix: [])
            _ = stream
        }
        let feed = try #require(Self.inMemoryFeed(store))
        #expect(Self.watcherCount(feed) == 0, "the store still holds the watcher of a stream nobody has")
        try await store.close()
    }

    @Test("page file: a cancelled consumer's watcher is released")
    func pageFileCancelledConsumer() async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("eventstore-watchers-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try await PageFileKeyValueStore.open(directory: directory)
        let (started, signal) = AsyncStream<Void>.makeStream()
        let consumer = Task {
            var iterator = store.changes(after: 0, prefix: []).makeAsyncIterator()
            signal.finish()
            while try await iterator.next() != nil {}
        }
        for await _ in started {}
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        consumer.cancel()
        _ = await consumer.result
        let feed = store.published.state.withLock { $0.changes }
        #expect(Self.watcherCount(feed) == 0, "the store still holds the ended watcher")
        try await store.close()
    }
}
