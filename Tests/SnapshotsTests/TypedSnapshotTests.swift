// Typed snapshots: Codable state with a schema version; older (and newer) schemas are skipped unless a migration is
// registered.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

/// The ledger as schema 1 encoded it: the balance was called `total`.
struct LedgerV1: Codable {
    var total: Int
    var name: String
    var events: Int
    var digest: UInt64

    init(_ ledger: Ledger) {
        total = ledger.balance
        name = ledger.name
        events = ledger.events
        digest = ledger.digest
    }
}

@Suite("Snapshots: typed snapshots and schemas")
struct TypedSnapshotTests {
    /// A stream of 30 events with a current-schema (2) snapshot at 10 and a schema-1 snapshot at 20.
    private func mixedSchemas(_ store: KeyValueEventStore) async throws -> (StreamName, Ledger) {
        let stream = try Fixtures.stream()
        let at10 = try await Fixtures.fill(stream, in: store, events: 10)
        let at20 = try await Fixtures.fill(stream, in: store, events: 10, after: at10, startingAt: 10)
        let at30 = try await Fixtures.fill(stream, in: store, events: 10, after: at20, startingAt: 20)
        let snapshots = try SnapshotStore(events: store, collection: String(reflecting: Ledger.self))
        try await snapshots.save(try JSONEventCoder().encode(at10), schemaVersion: 2, of: stream, at: 10)
        try await snapshots.save(try JSONEventCoder().encode(LedgerV1(at20)), schemaVersion: 1, of: stream, at: 20)
        return (stream, at30)
    }

    @Test("an older-schema snapshot is skipped for an older usable one", arguments: SnapshotBackends.all)
    func olderSchemaSkipped(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let (stream, expected) = try await mixedSchemas(store)
            let repository = try Fixtures.repository(store, schema: SnapshotSchema(version: 2))

            let loaded = try await repository.load(stream)

            #expect(loaded.replayedEvents == 20, "starts from the schema-2 snapshot at 10")
            #expect(loaded.state == expected)
        }
    }

    @Test("with only older-schema snapshots, loading replays everything", arguments: SnapshotBackends.all)
    func onlyOlderSchemaReplays(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let (stream, expected) = try await mixedSchemas(store)
            let repository = try Fixtures.repository(store, schema: SnapshotSchema(version: 3))

            let loaded = try await repository.load(stream)

            #expect(loaded.replayedEvents == 30)
            #expect(loaded.state == expected)
        }
    }

    @Test("a snapshot from a newer schema is skipped too", arguments: SnapshotBackends.all)
    func newerSchemaSkipped(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let expected = try await Fixtures.fill(stream, in: store, events: 30)
            let current = try Fixtures.repository(store, schema: SnapshotSchema(version: 1))
            let newer = try Fixtures.repository(store, schema: SnapshotSchema(version: 2))
            try await current.takeSnapshot(of: stream, at: 10)
            try await newer.takeSnapshot(of: stream, at: 20)

            let loaded = try await current.load(stream)

            #expect(current.schema.canRead(schemaVersion: 2) == false)
            #expect(loaded.replayedEvents == 20, "starts from its own schema's snapshot at 10")
            #expect(loaded.state == expected)
            #expect(try await newer.load(stream).replayedEvents == 10)
        }
    }

    @Test("a registered typed migration makes an older-schema snapshot usable", arguments: SnapshotBackends.all)
    func typedMigration(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let (stream, expected) = try await mixedSchemas(store)
            var schema = SnapshotSchema<Ledger>(version: 2)
            try schema.registerMigration(from: 1, decoding: LedgerV1.self) { old in
                var ledger = Ledger()
                ledger.balance = old.total
                ledger.name = old.name
                ledger.events = old.events
                ledger.digest = old.digest
                return ledger
            }
            let repository = try Fixtures.repository(store, schema: schema)

            let loaded = try await repository.load(stream)

            #expect(loaded.replayedEvents == 10, "starts from the migrated schema-1 snapshot at 20")
            #expect(loaded.state == expected)
        }
    }

    @Test("raw migrations chain from schema to schema", arguments: SnapshotBackends.all)
    func rawMigrationChain(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let (stream, expected) = try await mixedSchemas(store)
            var schema = SnapshotSchema<Ledger>(version: 3)
            #expect(schema.canRead(schemaVersion: 1) == false)
            // 1 → 2 renames `total` to `balance`; 2 → 3 changes nothing in the encoding.
            try schema.registerMigration(from: 1, to: 2) { data in
                let old = try JSONDecoder().decode(LedgerV1.self, from: data)
                var ledger = Ledger()
                ledger.balance = old.total
                ledger.name = old.name
                ledger.events = old.events
                ledger.digest = old.digest
                return try JSONEventCoder().encode(ledger)
            }
            #expect(schema.canRead(schemaVersion: 1) == false, "no path from 2 to 3 yet")
            try schema.registerMigration(from: 2, to: 3) { $0 }
            #expect(schema.canRead(schemaVersion: 1))
            #expect(schema.canRead(schemaVersion: 2))
            #expect(schema.canRead(schemaVersion: 4) == false)
            let repository = try Fixtures.repository(store, schema: schema)

            let loaded = try await repository.load(stream)

            #expect(loaded.replayedEvents == 10)
            #expect(loaded.state == expected)
        }
    }

    @Test("migrations must go from an older schema to a newer one")
    func migrationDirection() throws {
        var schema = SnapshotSchema<Ledger>(version: 3)
        for (source, target) in [(2, 2), (3, 2), (1, 4)] as [(UInt32, UInt32)] {
            #expect { try schema.registerMigration(from: source, to: target) { $0 } } throws: { error in
                if case EventStoreError.invalidArgument = error { true } else { false }
            }
        }
        #expect { try schema.registerMigration(from: 3, decoding: LedgerV1.self) { _ in Ledger() } } throws: { error in
            if case EventStoreError.invalidArgument = error { true } else { false }
        }
    }

    /// A second migration from the same schema replaced the first without a word, while a second upcaster of an
    /// event type is refused (found by a review, twenty-third session).
    @Test("a second migration from the same schema is refused, and the first one stays")
    func secondMigrationFromOneSchema() throws {
        var schema = SnapshotSchema<Ledger>(version: 3)
        try schema.registerMigration(from: 1, to: 3) { $0 }
        #expect { try schema.registerMigration(from: 1, to: 2) { $0 } } throws: { error in
            if case EventStoreError.invalidArgument(let message) = error { message.contains("already") } else { false }
        }
        #expect(schema.canRead(schemaVersion: 1))
        #expect(!schema.canRead(schemaVersion: 2), "the refused migration 1 -> 2 left no trace")
    }

    @Test("a current-schema snapshot that does not decode is a typed error naming it", arguments: SnapshotBackends.all)
    func undecodableSnapshot(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 5)
            try await SnapshotStore(events: store, collection: String(reflecting: Ledger.self)).save(Data("{\"nope\":1}".utf8), schemaVersion: 1, of: stream, at: 5)
            let repository = try Fixtures.repository(store)

            await #expect { try await repository.load(stream) } throws: { error in
                guard case SnapshotError.unreadableSnapshot(let named, let version, let schemaVersion, _) = error
                else { return false }
                return named == stream && version == 5 && schemaVersion == 1
            }
            #expect(try await repository.load(stream, usingSnapshots: false).version == 5)
        }
    }

    @Test("a failing migration is a typed error naming the snapshot", arguments: SnapshotBackends.all)
    func failingMigration(backend: SnapshotBackend) async throws {
        struct Refused: Error {}
        try await backend.withStore { store in
            let (stream, _) = try await mixedSchemas(store)
            var schema = SnapshotSchema<Ledger>(version: 2)
            try schema.registerMigration(from: 1, to: 2) { _ in throw Refused() }
            let repository = try Fixtures.repository(store, schema: schema)

            await #expect { try await repository.load(stream) } throws: { error in
                guard case SnapshotError.unreadableSnapshot(_, let version, let schemaVersion, _) = error
                else { return false }
                return version == 20 && schemaVersion == 1
            }
        }
    }
}
