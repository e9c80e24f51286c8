// The example of docs/SNAPSHOTS.md (the README's snapshots section), compiled and run so that it cannot rot.
// Keep the two in step.

import EventStore
import EventStoreKV
import Snapshots
import Testing

private struct Deposit: DomainEvent {
    static let eventType = "Deposited"
    var amount: Int
}

private struct Account: Aggregate, Codable {
    var balance = 0

    init() {}

    mutating func apply(_ event: any DomainEvent) {
        if let deposit = event as? Deposit { balance += deposit.amount }
    }
}

/// Schema 1 of the account snapshot called the balance `total`.
private struct AccountV1: Codable {
    var total: Int
}

@Suite("Snapshots: documentation example")
struct DocumentationExampleTests {
    @Test("the snapshots section's example runs as documented")
    func example() async throws {
        // --- docs/SNAPSHOTS.md example, from here ---
        var registry = EventTypeRegistry()
        try registry.register(Deposit.self)
        let store = KeyValueEventStore.inMemory()

        var schema = SnapshotSchema<Account>(version: 2)
        try schema.registerMigration(from: 1, decoding: AccountV1.self) { old in
            var account = Account()
            account.balance = old.total
            return account
        }
        let accounts = try SnapshottingRepository<Account>(
            events: store, registry: registry, schema: schema, policy: .every(100, keepingLast: 3))

        let stream = try StreamName("account-42")
        for _ in 1...250 {
            let account = try await accounts.load(stream)  // newest usable snapshot + the events after it
            try await accounts.save([Deposit(amount: 2)], to: stream, from: account)
        }
        let versions = try await accounts.snapshotVersions(of: stream)  // [100, 200]: taken on save
        let current = try await accounts.load(stream)  // replays 50 events, not 250
        let earlier = try await accounts.load(stream, asOf: 150)  // from the snapshot at 100, never the one at 200
        try await accounts.snapshotAll(of: stream, every: 50)  // rebuilds them over the whole stream
        try await accounts.clearSnapshots(of: stream)
        // --- to here ---

        #expect(versions == [100, 200])
        #expect(current.state.balance == 500)
        #expect(current.replayedEvents == 50)
        #expect(earlier.state.balance == 300)
        #expect(earlier.replayedEvents == 50)
        #expect(try await accounts.snapshotVersions(of: stream) == [])
    }
}
