// Scavenge of streams that hide nothing (twentieth session's review): scavenge read the log records of the first
// 128 versions of every stream, even of streams with no retention that were never deleted, so its work was
// proportional to the log, not to the events it removes (Scavenger.swift's invariant).

import EventStore
@testable import EventStoreKV
import Foundation
import KeyValueTestSupport
import Testing

/// Counts the log records (`0x04` keys) fetched by point or batch gets while `counting` is set.
final class LogGetCounter: ForwardingKeyValueStore, @unchecked Sendable {
    // `@unchecked Sendable`: `counting` and `records` are Locked (pthread mutex); nothing else is stored.
    let counting = Locked(false)
    let records = Locked(0)

    private func count(_ keys: [Key]) {
        guard counting.withLock({ $0 }) else { return }
        let logKeys = keys.filter { $0.first == 0x04 }.count
        records.withLock { $0 += logKeys }
    }

    override func get(_ key: Key) async throws -> KeyValueEntry? {
        count([key])
        return try await super.get(key)
    }

    override func get(_ keys: [Key]) async throws -> [KeyValueEntry?] {
        count(keys)
        return try await super.get(keys)
    }

    override func get(_ keys: [Key], visiting visit: (Int, BorrowedEntry?) throws -> Void) async throws {
        count(keys)
        try await super.get(keys, visiting: visit)
    }
}

@Suite("Scavenge: streams with nothing hidden")
struct ScavengeIdleWorkTests {
    @Test("scavenging streams that hide nothing reads none of their events")
    func nothingHiddenReadsNothing() async throws {
        let counter = LogGetCounter(InMemoryKeyValueStore())
        let store = KeyValueEventStore(backend: counter)
        let names = try (0..<50).map { try StreamName("account-\($0)") }
        for name in names {
            _ = try await store.append((0..<20).map { makeEvent("\($0)") }, to: name, expectedVersion: .noStream)
        }
        counter.counting.withLock { $0 = true }
        let report = try await store.scavenge()
        counter.counting.withLock { $0 = false }
        #expect(report.eventsRemoved == 0)
        let read = counter.records.withLock { $0 }
        #expect(read == 0, "scavenge read \(read) log records of 1,000 stored, to remove none")
    }
}
