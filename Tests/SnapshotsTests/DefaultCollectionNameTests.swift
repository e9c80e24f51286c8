// Guards SnapshotSchema's default collection name for private, fileprivate and function-local state types. It was
// `String(reflecting: State.self)`, which for such types reads "Module.(unknown context at $55c0a07431b0).Account":
// the address of the type's context descriptor, which ASLR moves on every launch. Each run of an application then
// wrote to a new collection: snapshots of earlier runs were never read again (every load after a restart was a full
// replay), nor pruned by `keepingLast` or removed by `clearSnapshots(of:)`. These tests failed before the fix (the
// mangled type name for such types, stable across launches); public and internal types keep their readable name.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

private struct PrivateLedger: Aggregate, Codable, Equatable {
    var balance = 0
    init() {}
    mutating func apply(_ event: any DomainEvent) {
        if let deposit = event as? Deposited { balance += deposit.amount }
    }
}

/// The default collection name of this file's `private struct PrivateLedger`, for the test that tells it apart from
/// the same-named type of another file.
func privateLedgerCollectionNameOfDefaultCollectionNameTests() -> String { SnapshotSchema<PrivateLedger>().name }

@Suite("Snapshots: the default collection name")
struct DefaultCollectionNameTests {
    @Test("the default collection of a private state type is its mangled type name, with no per-launch address")
    func privateStateTypeName() async throws {
        let name = SnapshotSchema<PrivateLedger>().name
        #expect(!name.contains("unknown context at $"), "the name embeds a load address: \(name)")
        #expect(name == _mangledTypeName(PrivateLedger.self), "stable across launches: \(name)")
        #expect(name.contains("PrivateLedger"))
        #expect(name == SnapshotSchema<PrivateLedger>().name)
    }

    @Test("same-named private state types of two files get different collections")
    func samePrivateNameInTwoFiles() {
        let here = privateLedgerCollectionNameOfDefaultCollectionNameTests()
        let there = privateLedgerCollectionNameOfOtherFile()
        #expect(here != there, "both are \(here)")
        #expect(!there.contains("unknown context at $"))
    }

    @Test("a function-local state type gets a name with no per-launch address")
    func localStateTypeName() {
        struct LocalLedger: Aggregate, Codable {
            init() {}
            mutating func apply(_ event: any DomainEvent) {}
        }
        let name = SnapshotSchema<LocalLedger>().name
        #expect(!name.contains("unknown context at $"), "the name embeds a load address: \(name)")
        #expect(name.contains("LocalLedger"))
    }

    @Test("an internal state type keeps its readable, fully qualified name")
    func internalStateTypeName() {
        #expect(SnapshotSchema<Ledger>().name == "SnapshotsTests.Ledger")
        #expect(SnapshotSchema<Ledger>(name: "ledgers").name == "ledgers")
    }

    @Test("a private state's snapshots are kept in a collection whose name holds no load address",
          arguments: SnapshotBackends.local)
    func privateStateSnapshotsLandInAStableCollection(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try SnapshottingRepository<PrivateLedger>(
                events: store, registry: try Fixtures.registry, policy: .every(1, keepingLast: 1))
            let loaded = try await repository.load(stream)
            try await repository.save([Deposited(amount: 1)], to: stream, from: loaded)
            let keys = try await RawSnapshotKeys.allKeys(stream, in: store)
            let names = keys.map { String(decoding: $0, as: UTF8.self) }
            #expect(!names.isEmpty)
            #expect(
                !names.contains { $0.contains("unknown context at $") },
                "stored under a per-launch collection: \(names)")
            #expect(try await RawSnapshotKeys.storedVersions(stream, collection: repository.schema.name, in: store) == [1])
        }
    }
}
