// A state claiming the last version, found by the eleventh session's third review: saving from it trapped adding
// the new events' versions.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Snapshots: a state at the last version")
struct SnapshotExtremeInputTests {
    @Test("saving events from a state at version UInt64.max is a wrong expected version, not a trap")
    func saveFromLastVersion() async throws {
        let store = KeyValueEventStore.inMemory()
        let repository = try SnapshottingRepository<Ledger>(events: store, registry: Fixtures.registry)
        let loaded = LoadedAggregate(state: Ledger(), version: .max, replayedEvents: 0)
        do {
            _ = try await repository.save([Deposited(amount: 1)], to: try StreamName("acct"), from: loaded)
            Issue.record("saved after the last version")
        } catch EventStoreError.wrongExpectedVersion(_, let expected, let actual) {
            #expect(expected == .exact(.max) && actual == 0)
        }
        #expect(try await store.readAll(from: 1, limit: 10).isEmpty)
    }
}
