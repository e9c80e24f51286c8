import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite struct HardDeleteReviewTests {
    @Test func aRecreatedStreamLoadsOnlyItsNewLifeAndSnapshotsOnlyAtMultiples() async throws {
        let store = KeyValueEventStore.inMemory()
        let repository = try Fixtures.repository(store, policy: .every(5))
        let stream = try Fixtures.stream()
        var loaded = try await repository.load(stream)
        for _ in 0..<10 { loaded = try await repository.save([Deposited(amount: 7)], to: stream, from: loaded).aggregate }
        _ = try await store.delete(stream, expectedVersion: .any, mode: .soft)
        loaded = try await repository.load(stream)
        for _ in 0..<10 { loaded = try await repository.save([Deposited(amount: 1)], to: stream, from: loaded).aggregate }
        let fromSnapshots = try await repository.load(stream)
        let replayed = try await repository.load(stream, usingSnapshots: false)
        #expect(fromSnapshots.state == replayed.state)
        #expect(fromSnapshots.state.balance == 10)
        let versions = try await repository.snapshotVersions(of: stream)
        #expect(versions == [5, 10, 15, 20], "\(versions)")
        let asOf15 = try await repository.load(stream, asOf: 15)
        #expect(asOf15.state.balance == 5)
    }
}
