// Conformance: typed events (Codable, upcasting) and aggregates (load, save, conflicts).

import EventStore
import EventStoreKV
import Foundation
import Testing

struct Opened: DomainEvent, Equatable {
    static let eventType = "Opened"
    var owner: String
    var currency: String
}

/// The first payload version of Opened: a single "name" field, no currency.
struct OpenedV1: DomainEvent {
    static let eventType = "Opened.v1"
    var name: String
}

struct Deposited: DomainEvent, Equatable {
    static let eventType = "Deposited"
    var amount: Int64
}

struct Withdrawn: DomainEvent, Equatable {
    static let eventType = "Withdrawn"
    var amount: Int64
}

struct Account: Aggregate {
    var owner = ""
    var balance: Int64 = 0

    mutating func apply(_ event: any DomainEvent) {
        switch event {
        case let opened as Opened: owner = opened.owner
        case let deposited as Deposited: balance += deposited.amount
        case let withdrawn as Withdrawn: balance -= withdrawn.amount
        default: break
        }
    }
}

func accountRegistry() throws -> EventTypeRegistry {
    var registry = EventTypeRegistry()
    try registry.register(Opened.self)
    try registry.register(Deposited.self)
    try registry.register(Withdrawn.self)
    try registry.registerUpcaster(from: OpenedV1.self, to: Opened.self) { Opened(owner: $0.name, currency: "EUR") }
    return registry
}

@Suite("Conformance: typed events and aggregates")
struct TypedEventConformanceTests {
    @Test("typed events round-trip through the store", arguments: Backends.all)
    func roundTrip(backend: Backend) async throws {
        try await backend.withStore { store in
            let registry = try accountRegistry()
            let stream = try uniqueStream("account")
            let events: [any DomainEvent] = [Opened(owner: "ada", currency: "GBP"), Deposited(amount: 1_050)]
            _ = try await store.append(try events.map { try registry.encode(any: $0) }, to: stream, expectedVersion: .noStream)
            let recorded = try await store.read(stream)
            #expect(recorded.map(\.type) == ["Opened", "Deposited"])
            let decoded = try recorded.map { try registry.decode($0) }
            #expect(decoded[0] as? Opened == Opened(owner: "ada", currency: "GBP"))
            #expect(decoded[1] as? Deposited == Deposited(amount: 1_050))
        }
    }

    @Test("older payload versions are upcast on read", arguments: Backends.all)
    func upcasting(backend: Backend) async throws {
        try await backend.withStore { store in
            let registry = try accountRegistry()
            let stream = try uniqueStream("account")
            _ = try await store.append(
                [try registry.encode(OpenedV1(name: "grace"))], to: stream, expectedVersion: .noStream)
            let decoded = try registry.decode(try #require(try await store.read(stream).first))
            #expect(decoded as? Opened == Opened(owner: "grace", currency: "EUR"))
            // Raw upcasters chain, too.
            var raw = registry
            try raw.registerUpcaster(from: "Opened.v0") { data in
                let name = String(decoding: data, as: UTF8.self)
                return ("Opened.v1", Data("{\"name\":\"\(name)\"}".utf8))
            }
            _ = try await store.append(
                [EventData(type: "Opened.v0", data: Data("linus".utf8))], to: stream, expectedVersion: .exact(1))
            let chained = try raw.decode(try #require(try await store.read(stream, from: .version(2)).first))
            #expect(chained as? Opened == Opened(owner: "linus", currency: "EUR"))
        }
    }

    @Test("unknown types and bad payloads give typed errors")
    func decodingErrors() throws {
        let registry = try accountRegistry()
        let unknown = RecordedEvent(
            id: UUID(), stream: try StreamName("a"), version: 1, position: 1, recordedAt: Date(), type: "Mystery",
            data: Data(), metadata: EventMetadata())
        #expect(throws: EventStoreError.self) { try registry.decode(unknown) }
        var bad = unknown
        bad.type = "Deposited"
        bad.data = Data("not json".utf8)
        #expect(throws: EventStoreError.self) { try registry.decode(bad) }
    }

    @Test("aggregates load by replay and save with the loaded version", arguments: Backends.all)
    func aggregateLoadSave(backend: Backend) async throws {
        try await backend.withStore { store in
            let repository = AggregateRepository<Account>(store: store, registry: try accountRegistry(), readBatchSize: 7)
            let stream = try uniqueStream("account")
            try await repository.save([Opened(owner: "ada", currency: "EUR")], to: stream, loadedAt: 0)
            for amount in 1...20 { try await repository.save([Deposited(amount: Int64(amount))], to: stream, loadedAt: UInt64(amount)) }
            let loaded = try await repository.load(stream)
            #expect(loaded.state.owner == "ada")
            #expect(loaded.state.balance == 210)
            #expect(loaded.version == 21)
            #expect(loaded.replayedEvents == 21)
        }
    }

    @Test("a save against a stale version conflicts, and execute retries it", arguments: Backends.all)
    func aggregateConflict(backend: Backend) async throws {
        try await backend.withStore { store in
            let repository = AggregateRepository<Account>(store: store, registry: try accountRegistry())
            let stream = try uniqueStream("account")
            try await repository.save([Opened(owner: "ada", currency: "EUR")], to: stream, loadedAt: 0)
            let stale = try await repository.load(stream)
            try await repository.save([Deposited(amount: 100)], to: stream, loadedAt: stale.version)
            do {
                try await repository.save([Withdrawn(amount: 100)], to: stream, loadedAt: stale.version)
                Issue.record("a save against a stale version must conflict")
            } catch EventStoreError.wrongExpectedVersion(_, let expected, let actual) {
                #expect(expected == .exact(1))
                #expect(actual == 2)
            }
            // execute re-decides on the fresh state when it loses a race.
            let racers = try await withThrowingTaskGroup(of: Int64.self) { group in
                for _ in 0..<8 {
                    group.addTask {
                        try await repository.execute(on: stream, maxAttempts: 50) { _ in [Deposited(amount: 10)] }.state.balance
                    }
                }
                var balances: [Int64] = []
                for try await balance in group { balances.append(balance) }
                return balances
            }
            #expect(Set(racers).count == 8)
            #expect(try await repository.load(stream).state.balance == 180)
        }
    }
}
