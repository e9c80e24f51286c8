// A snapshot-based load racing a truncation and scavenge: the events after the snapshot must not be folded across
// the hole the scavenge leaves.

import EventStore
import EventStoreKV
import Foundation
import KeyValueTestSupport
import Snapshots
import Testing

@Suite("Snapshot loads racing a scavenge")
struct SnapshotReplayHoleTests {
    @Test("a snapshot-based load never folds across versions scavenged under it", arguments: 1...8)
    func snapshotLoadRacingScavenge(scan: Int) async throws {
        let backend = ScanHookedStore()
        let store = KeyValueEventStore(backend: backend, readBatchSize: 10)
        var registry = EventTypeRegistry()
        try registry.register(Deposited.self)
        let repository = try SnapshottingRepository<Ledger>(events: store, registry: registry)
        let stream = try StreamName("ledger-1")
        for batch in 0..<100 {
            let events = try (1...10).map { try registry.encode(Deposited(amount: batch * 10 + $0)) }
            _ = try await store.append(events, to: stream, expectedVersion: .exact(UInt64(batch * 10)))
        }
        try await repository.takeSnapshot(of: stream, at: 100)
        // While the load reads the events after the snapshot, the first 499 are truncated and scavenged.
        backend.arm(atScan: scan) {
            try await store.setMetadata(StreamMetadata(truncateBefore: 500), for: stream)
            try await store.scavenge()
        }
        let loaded = try await repository.load(stream)
        #expect(loaded.version == 1_000)
        // The fold of versions first...1000, as they were (first 1) or as they are (first 500); never a part.
        let first = loaded.firstVersion ?? 0
        #expect(first == 1 || first == 500, "first version \(first)")
        #expect(loaded.state.events == 1_000 - Int(first) + 1, "folded \(loaded.state.events) events from \(first)")
        #expect(loaded.state.balance == (Int(first)...1_000).reduce(0, +))
    }
}

@Suite("Snapshot-all racing a scavenge")
struct SnapshotAllHoleTests {
    @Test("snapshotAll starts its pass again when versions it folded are scavenged under it", arguments: 1...8)
    func snapshotAllRacingScavenge(scan: Int) async throws {
        let backend = ScanHookedStore()
        let store = KeyValueEventStore(backend: backend, readBatchSize: 10)
        var registry = EventTypeRegistry()
        try registry.register(Deposited.self)
        let repository = try SnapshottingRepository<Ledger>(events: store, registry: registry, readBatchSize: 150)
        let stream = try StreamName("ledger-2")
        for batch in 0..<100 {
            let events = try (1...10).map { try registry.encode(Deposited(amount: batch * 10 + $0)) }
            _ = try await store.append(events, to: stream, expectedVersion: .exact(UInt64(batch * 10)))
        }
        backend.arm(atScan: scan) {
            try await store.setMetadata(StreamMetadata(truncateBefore: 500), for: stream)
            try await store.scavenge()
        }
        let taken = try await repository.snapshotAll(of: stream, every: 100)
        // Every version snapshotted by the pass that completed; none folds across the hole.
        #expect(taken == Array(stride(from: 100, through: 1_000, by: 100)) || taken == Array(stride(from: 500, through: 1_000, by: 100)), "\(taken)")
        let loaded = try await repository.load(stream)
        let first = loaded.firstVersion ?? 0
        #expect(first == 500)
        #expect(loaded.state.events == 501 && loaded.state.balance == (500...1_000).reduce(0, +))
    }
}
