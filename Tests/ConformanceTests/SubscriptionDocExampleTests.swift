// Keeps the examples of docs/SUBSCRIPTIONS.md compiling and true: the same calls, run against a real store.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Subscriptions doc examples", .timeLimit(.minutes(5)))
struct SubscriptionDocExampleTests {
    @Test("a subscription prints history, then reports caught up")
    func subscriptionExample() async throws {
        let store = KeyValueEventStore.inMemory()
        _ = try await store.append(
            [EventData(type: "Placed", data: Data("{}".utf8))], to: try StreamName("order-1"), expectedVersion: .noStream)
        var lines: [String] = []
        for try await message in store.subscribeToAll(from: .start) {
            switch message {
            case .event(let event):
                lines.append("\(event.position) \(event.stream) \(event.type)")
            case .caughtUp(let position):
                lines.append("live from here; read everything through position \(position)")
            }
            if lines.count == 2 { break }
        }
        #expect(lines == ["1 order-1 Placed", "live from here; read everything through position 1"])
        try await store.close()
    }

    @Test("a checkpointed projection over one category")
    func projectionExample() async throws {
        let store = KeyValueEventStore.inMemory()
        for index in 1...3 {
            _ = try await store.append(
                [EventData(type: "Placed", data: Data("\(index * 100)".utf8))], to: try StreamName("order-\(index)"),
                expectedVersion: .noStream)
        }
        _ = try await store.append(
            [EventData(type: "Registered", data: Data())], to: try StreamName("user-1"), expectedVersion: .noStream)
        var total = 0
        let projection = CheckpointedProjection(
            store: store, consumer: "order-totals", checkpointEvery: 100, filter: .streamPrefix("order-"))
        try await projection.run(until: .whenCaughtUp) { event in
            total += Int(String(decoding: event.data, as: UTF8.self)) ?? 0
        }
        #expect(total == 600)
        #expect(try await store.checkpoint(of: "order-totals") == 4)
        try await store.close()
    }

    @Test("metadata set, then changed by a read-modify-write at the version read")
    func metadataExample() async throws {
        let store = KeyValueEventStore.inMemory()
        let stream = try StreamName("order-1")
        try await store.setMetadata(
            StreamMetadata(maxCount: 1_000, maxAge: .seconds(86_400), truncateBefore: 10), for: stream)
        let current = try await store.versionedMetadata(of: stream)
        var rules = current.metadata
        rules.maxCount = 500
        try await store.setMetadata(rules, for: stream, expectedVersion: .exact(current.version))
        #expect(
            try await store.versionedMetadata(of: stream)
                == VersionedStreamMetadata(
                    metadata: StreamMetadata(maxCount: 500, maxAge: .seconds(86_400), truncateBefore: 10), version: 2))
        try await store.close()
    }
}
