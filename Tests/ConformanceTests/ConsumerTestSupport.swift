// Small helpers shared by the consumer and retention scenarios.

import EventStore
import EventStoreKV
import Foundation
import Testing

/// A sample event of `type` whose payload is `text`.
func sample(_ type: String = "Ticked", _ text: String = "") -> EventData {
    EventData(type: type, data: Data(text.utf8))
}

/// `count` events of `type`, with payloads "prefix-0", "prefix-1", ...
func samples(_ count: Int, type: String = "Ticked", prefix: String = "e") -> [EventData] {
    (0..<count).map { sample(type, "\(prefix)-\($0)") }
}

/// A user stream name; the test fails if the name is invalid.
func stream(_ name: String) throws -> StreamName { try StreamName(name) }

extension AsyncIteratorProtocol where Element == SubscriptionMessage {
    /// The next `count` events, failing the test if the sequence ends or a marker comes first.
    mutating func nextEvents(_ count: Int) async throws -> [RecordedEvent] {
        var events: [RecordedEvent] = []
        while events.count < count {
            let message = try await next()
            guard let message else {
                Issue.record("subscription ended after \(events.count) of \(count) events")
                return events
            }
            guard case .event(let event) = message else {
                Issue.record("expected an event, got \(message)")
                return events
            }
            events.append(event)
        }
        return events
    }

    /// Skips events up to the next "caught up" marker and returns its position.
    mutating func nextCaughtUp() async throws -> UInt64? {
        while let message = try await next() {
            if case .caughtUp(let through) = message { return through }
        }
        return nil
    }
}

/// How many keys the store's backend holds under `prefix` (for checking that scavenge removes data).
func keyCount(_ store: KeyValueEventStore, prefix: [UInt8]) async throws -> Int {
    try await store.backend.scan(.prefix(prefix), direction: .forward, limit: .max).count
}
