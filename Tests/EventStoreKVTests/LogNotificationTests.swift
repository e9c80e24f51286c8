// The subscription doorbell under a backend that drops watchers: with a one-change watch buffer and a one-change
// history, the in-memory store finishes watches with watcherOverflow and historyUnavailable; the doorbell must
// re-open and ring, so that subscriptions still deliver every event once, in order.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

@Suite("Log notifications", .timeLimit(.minutes(1)))
struct LogNotificationTests {
    @Test func subscriptionsSurviveDroppedWatches() async throws {
        let backend = InMemoryKeyValueStore(historyLimit: 1, watchBufferLimit: 1)
        let store = KeyValueEventStore(backend: backend)
        let writers = 4
        let appendsPerWriter = 100
        let consumer = Task {
            var positions: [UInt64] = []
            for try await message in store.subscribeToAll(bufferSize: 8) {
                guard let event = message.event else { continue }
                positions.append(event.position)
                if event.type == "Sentinel" { break }
            }
            return positions
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    let name = try StreamName("w-\(writer)")
                    for index in 0..<appendsPerWriter {
                        _ = try await store.append(
                            [EventData(type: "Ticked", data: Data("\(index)".utf8))], to: name, expectedVersion: .any)
                        await Task.yield()
                    }
                }
            }
            try await group.waitForAll()
        }
        _ = try await store.append(
            [EventData(type: "Sentinel", data: Data())], to: try StreamName("end"), expectedVersion: .noStream)
        let total = UInt64(writers * appendsPerWriter + 1)
        #expect(try await consumer.value == Array(1...total))
        try await store.close()
    }

    @Test func theDoorbellEndsWhenTheStoreCloses() async throws {
        let store = KeyValueEventStore.inMemory()
        var rings = try await store.logNotifications().makeAsyncIterator()
        _ = try await store.append(
            [EventData(type: "Ticked", data: Data())], to: try StreamName("a"), expectedVersion: .noStream)
        #expect(try await rings.next() != nil)
        try await store.close()
        #expect(try await rings.next() == nil)
    }
}
