// Test fixtures: a small ledger aggregate whose state depends on every event and on their order, its events, a
// seeded random generator and helpers to fill streams.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

struct Deposited: DomainEvent, Equatable {
    static let eventType = "Deposited"
    var amount: Int
}

struct Withdrawn: DomainEvent, Equatable {
    static let eventType = "Withdrawn"
    var amount: Int
}

struct Renamed: DomainEvent, Equatable {
    static let eventType = "Renamed"
    var name: String
}

/// The aggregate under test. `digest` folds every event in order, so any missing, extra or reordered event shows.
struct Ledger: Aggregate, Codable, Equatable {
    var balance = 0
    var name = ""
    var events = 0
    var digest: UInt64 = 14_695_981_039_346_656_037

    init() {}

    mutating func apply(_ event: any DomainEvent) {
        switch event {
        case let deposit as Deposited:
            balance += deposit.amount
            mix(1, UInt64(truncatingIfNeeded: deposit.amount))
        case let withdrawal as Withdrawn:
            balance -= withdrawal.amount
            mix(2, UInt64(truncatingIfNeeded: withdrawal.amount))
        case let rename as Renamed:
            name = rename.name
            mix(3, UInt64(rename.name.utf8.count))
            for byte in rename.name.utf8 { mix(4, UInt64(byte)) }
        default:
            return
        }
        events += 1
    }

    private mutating func mix(_ tag: UInt64, _ value: UInt64) {
        digest = (digest ^ tag) &* 1_099_511_628_211
        digest = (digest ^ value) &* 1_099_511_628_211
    }
}

/// A deterministic generator (SplitMix64), so that a failing random history can be replayed from its seed.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

enum Fixtures {
    static var registry: EventTypeRegistry {
        get throws {
            var registry = EventTypeRegistry()
            try registry.register(Deposited.self)
            try registry.register(Withdrawn.self)
            try registry.register(Renamed.self)
            return registry
        }
    }

    static func stream(_ name: String = "ledger-\(UUID().uuidString.prefix(8))") throws -> StreamName {
        try StreamName(name)
    }

    static func repository(
        _ store: KeyValueEventStore, schema: SnapshotSchema<Ledger> = SnapshotSchema(),
        policy: SnapshotPolicy = .manual, readBatchSize: Int = 1_000
    ) throws -> SnapshottingRepository<Ledger> {
        try SnapshottingRepository(
            events: store, registry: registry, schema: schema, policy: policy, readBatchSize: readBatchSize)
    }

    /// A random event.
    static func randomEvent(using generator: inout some RandomNumberGenerator) -> any DomainEvent {
        switch Int.random(in: 0..<10, using: &generator) {
        case 0..<5: Deposited(amount: Int.random(in: 1...1_000, using: &generator))
        case 5..<9: Withdrawn(amount: Int.random(in: 1...500, using: &generator))
        default: Renamed(name: "owner \(Int.random(in: 0...99, using: &generator))")
        }
    }

    /// The event at version `version` of a deterministic history (used for large streams).
    static func event(number version: UInt64) -> any DomainEvent {
        version % 7 == 0 ? Withdrawn(amount: Int(version % 13)) : Deposited(amount: Int(version % 101))
    }

    /// Appends `count` events of the deterministic history after `start` in batches, and returns the ledger they
    /// fold into from `start`'s state. `expectingAny` appends without a version expectation (to recreate a deleted
    /// stream).
    @discardableResult
    static func fill(
        _ stream: StreamName, in store: KeyValueEventStore, events count: UInt64, after start: Ledger = Ledger(),
        startingAt version: UInt64 = 0, batch: UInt64 = 1_000, expectingAny: Bool = false
    ) async throws -> Ledger {
        var ledger = start
        var next = version + 1
        let end = version + count
        while next <= end {
            let last = min(end, next + batch - 1)
            let events = (next...last).map { event(number: $0) }
            for event in events { ledger.apply(event) }
            let data = try events.map { try registry.encode(any: $0) }
            _ = try await store.append(data, to: stream, expectedVersion: expectingAny ? .any : .exact(next - 1))
            next = last + 1
        }
        return ledger
    }
}

/// The documented key layout (SnapshotKeys.swift), rebuilt independently so that tests check it and can reach the
/// raw keys: `0x08 stream 0x00 collection 0x00 0x01` is a collection's index, `... 0x02 version(big-endian)` a
/// record.
enum RawSnapshotKeys {
    static func streamPrefix(_ stream: StreamName) -> Key { [0x08] + Array(stream.rawValue.utf8) + [0x00] }
    static func prefix(_ stream: StreamName, _ collection: String) -> Key {
        streamPrefix(stream) + Array(collection.utf8) + [0x00]
    }
    static func index(_ stream: StreamName, collection: String = "") -> Key { prefix(stream, collection) + [0x01] }
    static func recordPrefix(_ stream: StreamName, collection: String = "") -> Key {
        prefix(stream, collection) + [0x02]
    }
    static func record(_ stream: StreamName, _ version: UInt64, collection: String = "") -> Key {
        recordPrefix(stream, collection: collection) + withUnsafeBytes(of: version.bigEndian) { Array($0) }
    }

    /// The versions that have a record key in the backend, read straight from the keys.
    static func storedVersions(
        _ stream: StreamName, collection: String = "", in store: KeyValueEventStore
    ) async throws -> [UInt64] {
        let entries = try await store.backend.scan(
            .prefix(recordPrefix(stream, collection: collection)), direction: .forward, limit: .max)
        return entries.map { entry in entry.key.suffix(8).reduce(0) { $0 << 8 | UInt64($1) } }
    }

    /// Every snapshot key of `stream`, in every collection.
    static func allKeys(_ stream: StreamName, in store: KeyValueEventStore) async throws -> [Key] {
        try await store.backend.scan(.prefix(streamPrefix(stream)), direction: .forward, limit: .max).map(\.key)
    }
}

extension SnapshottingRepository where State == Ledger {
    /// Checks the store's invariant: the index lists exactly the records that exist.
    func expectIndexMatchesRecords(_ stream: StreamName, sourceLocation: SourceLocation = #_sourceLocation)
        async throws
    {
        let indexed = try await snapshotVersions(of: stream)
        let stored = try await RawSnapshotKeys.storedVersions(
            stream, collection: snapshots.collection, in: snapshots.events)
        #expect(indexed == stored, "index and records disagree", sourceLocation: sourceLocation)
    }
}
