// Collections: different states snapshotted from one stream keep separate snapshots, so one is never decoded as the
// other, even when its encoding would decode.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

/// A projection of the ledger stream that counts only deposits. Its JSON (`{"balance": n}`) would decode from a
/// Ledger snapshot too, with the wrong balance: only separate collections keep it apart.
struct DepositTotal: Aggregate, Codable, Equatable {
    var balance = 0

    init() {}

    mutating func apply(_ event: any DomainEvent) {
        if let deposit = event as? Deposited { balance += deposit.amount }
    }
}

@Suite("Snapshots: collections")
struct CollectionTests {
    @Test("two states of one stream keep separate snapshots", arguments: SnapshotBackends.all)
    func separateCollections(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 20)
            let ledgers = try Fixtures.repository(store)
            let totals = try SnapshottingRepository<DepositTotal>(events: store, registry: Fixtures.registry)
            #expect(ledgers.snapshots.collection != totals.snapshots.collection)

            try await ledgers.takeSnapshot(of: stream, at: 10)
            let total = try await totals.load(stream)

            #expect(total.replayedEvents == 20, "the ledger's snapshot is not the projection's")
            #expect(total.state == (try await totals.load(stream, usingSnapshots: false)).state)
            #expect(try await totals.snapshotVersions(of: stream) == [])
            try await totals.takeSnapshot(of: stream, at: 15)
            #expect(try await totals.clearSnapshots(of: stream) == 1)
            #expect(try await ledgers.snapshotVersions(of: stream) == [10])
            #expect(try await ledgers.load(stream).replayedEvents == 10)
        }
    }

    @Test("a schema name pins the collection", arguments: SnapshotBackends.all)
    func namedCollection(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 8)
            let repository = try Fixtures.repository(store, schema: SnapshotSchema(name: "ledger"))
            try await repository.takeSnapshot(of: stream, at: 8)

            let raw = try SnapshotStore(events: store, collection: "ledger")
            #expect(try await raw.versions(of: stream) == [8])
            #expect(try await RawSnapshotKeys.storedVersions(stream, collection: "ledger", in: store) == [8])
            #expect(try await SnapshotStore(events: store).versions(of: stream) == [])
        }
    }

    /// A save older than the `keepingLast` newest snapshots is removed in its own transaction; the store's save
    /// now says so (a review, twenty-third session, found callers told nothing of it).
    @Test("a save the retention removes at once says it was not kept", arguments: SnapshotBackends.all)
    func saveRemovedAtOnce(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 8)
            let raw = try SnapshotStore(events: store)
            #expect(try await raw.save(Data([6]), schemaVersion: 1, of: stream, at: 6, keepingLast: 2))
            #expect(try await raw.save(Data([8]), schemaVersion: 1, of: stream, at: 8, keepingLast: 2))
            #expect(try await !raw.save(Data([4]), schemaVersion: 1, of: stream, at: 4, keepingLast: 2))
            #expect(try await raw.versions(of: stream) == [6, 8])
            #expect(try await RawSnapshotKeys.storedVersions(stream, collection: "", in: store) == [6, 8])
            #expect(try await raw.save(Data([7]), schemaVersion: 1, of: stream, at: 7, keepingLast: 2))
            #expect(try await raw.versions(of: stream) == [7, 8])
        }
    }

    @Test("collection names that cannot be keys are rejected", arguments: SnapshotBackends.all)
    func invalidCollectionNames(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            for name in ["a\u{0}b", String(repeating: "x", count: 256)] {
                #expect { try SnapshotStore(events: store, collection: name) } throws: { error in
                    if case EventStoreError.invalidArgument = error { true } else { false }
                }
                #expect { try Fixtures.repository(store, schema: SnapshotSchema(name: name)) } throws: { error in
                    if case EventStoreError.invalidArgument = error { true } else { false }
                }
            }
            let longest = try SnapshotStore(events: store, collection: String(repeating: "x", count: 255))
            #expect(longest.collection.utf8.count == 255)
        }
    }
}
