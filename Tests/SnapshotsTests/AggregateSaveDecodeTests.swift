// AggregateRepository.save and execute appended events without checking that a replay could decode them, and
// execute returned a state built from the in-memory events rather than from what a load decodes (found by a
// review, twenty-third session; SnapshottingRepository already decoded its exact bytes first).

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

/// An older event still emitted by some code path; the registry upcasts it to `Deposited` on every read.
private struct DepositedInCents: DomainEvent {
    static let eventType = "DepositedInCents"
    var cents: Int
}

@Suite("The plain aggregate repository decodes what it saves as a replay will")
struct AggregateSaveDecodeTests {
    @Test("execute refuses an event no replay could decode, and the stream stays loadable",
        arguments: SnapshotBackends.local)
    func undecodableEventRefusedByExecute(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            var registry = EventTypeRegistry()
            try registry.register(Deposited.self)  // Renamed is not registered
            let repository = AggregateRepository<Ledger>(store: store, registry: registry)
            let stream = try Fixtures.stream()
            try await repository.execute(on: stream) { _ in [Deposited(amount: 5)] }

            do {
                try await repository.execute(on: stream) { _ in [Renamed(name: "x")] }
                Issue.record("an event no replay could decode was appended")
            } catch EventStoreError.unknownEventType(let type, let location) {
                #expect(type == "Renamed")
                #expect(location.contains("to stream \"\(stream)\" (after its visible version 1)"), "\(location)")
            }
            // Nothing already stored is harmed: the stream still loads.
            #expect(try await store.version(of: stream) == 1)
            let loaded = try await repository.load(stream)
            #expect(loaded.state.balance == 5)
        }
    }

    /// A second review found the refusal naming "version 1" on a soft-deleted stream whose next event would be
    /// version 3: a load sees such a stream at version 0, so the refusal names the visible version, not a guess.
    @Test("a refusal on a soft-deleted stream names no version the event would not have had",
        arguments: SnapshotBackends.local)
    func refusalOnSoftDeletedStream(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            var registry = EventTypeRegistry()
            try registry.register(Deposited.self)  // Renamed is not registered
            let repository = AggregateRepository<Ledger>(store: store, registry: registry)
            let stream = try Fixtures.stream()
            try await repository.execute(on: stream) { _ in [Deposited(amount: 1), Deposited(amount: 2)] }
            _ = try await store.delete(stream, expectedVersion: .any, mode: .soft)
            do {
                try await repository.execute(on: stream) { _ in [Deposited(amount: 3), Renamed(name: "x")] }
                Issue.record("an event no replay could decode was appended")
            } catch EventStoreError.unknownEventType(_, let location) {
                #expect(!location.contains("version 1 of"), "\(location)")
                #expect(location.contains("event 2 of 2"), "\(location)")
                #expect(location.contains("(after its visible version 0)"), "\(location)")
            }
            let next = try await repository.execute(on: stream) { _ in [Deposited(amount: 3)] }
            #expect(next.result.version == 3)
        }
    }

    @Test("execute returns the state a load of the saved events gives", arguments: SnapshotBackends.local)
    func executeReturnsTheLoadedState(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            var registry = EventTypeRegistry()
            try registry.register(Deposited.self)
            // Kept registered to keep encoding it; payloads stored under it read back as Deposited (as documented).
            try registry.register(DepositedInCents.self)
            try registry.registerUpcaster(from: DepositedInCents.self, to: Deposited.self) {
                Deposited(amount: $0.cents / 100)
            }
            let repository = AggregateRepository<Ledger>(store: store, registry: registry)
            let stream = try Fixtures.stream()

            let (_, returned) = try await repository.execute(on: stream) { _ in [DepositedInCents(cents: 700)] }
            let loaded = try await repository.load(stream)
            #expect(loaded.state.balance == 7)
            #expect(returned == loaded.state, "execute's state differs from the state the store now holds")
        }
    }
}
