// Property: over 200 random histories (random events, batches, policies, snapshots taken, cleared and rebuilt,
// soft deletes and recreations; a sample of 8 of them on etcd),
// loading through snapshots gives exactly the state of a full replay, at every version, and uses the newest
// snapshot it may.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Snapshots: snapshot plus tail equals a full replay")
struct EquivalencePropertyTests {
    static let histories = 200
    static let chunks = 4

    @Test(
        "200 random histories: snapshot plus tail equals a full replay",
        arguments: SnapshotBackends.all, 0..<EquivalencePropertyTests.chunks)
    func randomHistories(backend: SnapshotBackend, chunk: Int) async throws {
        // A networked backend runs a sample of the histories (etcd: 8 of them, 2 per chunk, about 30 s).
        let perChunk = Self.histories / backend.workloadDivisor / Self.chunks
        for number in (chunk * perChunk)..<((chunk + 1) * perChunk) {
            let seed = UInt64(number) &* 0x9E37_79B9_7F4A_7C15 &+ 6
            try await backend.withStore { store in try await checkHistory(seed: seed, store: store) }
        }
    }

    private func checkHistory(seed: UInt64, store: KeyValueEventStore) async throws {
        var random = SeededGenerator(seed: seed)
        let interval: UInt64? = Bool.random(using: &random) ? UInt64.random(in: 1...12, using: &random) : nil
        let retention: Int? = Bool.random(using: &random) ? Int.random(in: 1...4, using: &random) : nil
        let repository = try Fixtures.repository(
            store, policy: SnapshotPolicy(interval: interval, retention: retention),
            readBatchSize: Int.random(in: 1...16, using: &random))
        let stream = try Fixtures.stream("history-\(seed)")
        let length = Int.random(in: 1...60, using: &random)
        // states[v] is the state as of version v, folded locally from the events as generated within v's life;
        // versions up to `hidden` were soft-deleted (the stream may have been recreated after them).
        var states: [Ledger] = [Ledger()]
        var hidden: UInt64 = 0

        while states.count - 1 < length {
            let current = UInt64(states.count - 1)
            let live = current > hidden
            switch Int.random(in: 0..<22, using: &random) {
            case 0..<12:
                let loaded = try await repository.load(stream)
                #expect(loaded.version == (live ? current : 0), "seed \(seed): load before save")
                #expect(loaded.state == (live ? states[Int(current)] : Ledger()), "seed \(seed): load before save")
                let count = Int.random(in: 1...6, using: &random)
                let events = (0..<count).map { _ in Fixtures.randomEvent(using: &random) }
                try await repository.save(events, to: stream, from: loaded)
                var next = live ? states[Int(current)] : Ledger()
                for event in events {
                    next.apply(event)
                    states.append(next)
                }
            case 12..<16 where live:
                try await repository.takeSnapshot(
                    of: stream, at: UInt64.random(in: (hidden + 1)...current, using: &random))
            case 16..<18:
                let versions = try await repository.snapshotVersions(of: stream)
                if let victim = versions.randomElement(using: &random) {
                    #expect(try await repository.clearSnapshot(of: stream, at: victim), "seed \(seed)")
                }
            case 18:
                try await repository.snapshotAll(of: stream, every: UInt64.random(in: 1...10, using: &random))
            case 19:
                try await repository.clearSnapshots(of: stream)
            case 20..<22 where live:
                _ = try await store.delete(stream, expectedVersion: .any, mode: .soft)
                hidden = current
            default:
                break
            }
        }
        try await checkEveryVersion(of: stream, against: states, hidden: hidden, repository: repository, seed: seed)
    }

    private func checkEveryVersion(
        of stream: StreamName, against states: [Ledger], hidden: UInt64, repository: SnapshottingRepository<Ledger>,
        seed: UInt64
    ) async throws {
        let snapshotVersions = try await repository.snapshotVersions(of: stream)
        for (offset, expected) in states.enumerated() {
            let version = UInt64(offset)
            if version > 0, version <= hidden {
                await #expect(throws: SnapshotError.versionNotVisible(stream: stream, version: version)) {
                    try await repository.load(stream, asOf: version)
                }
                continue
            }
            let loaded = try await repository.load(stream, asOf: version)
            // Snapshots of the deleted life are never used: the newest one of this life, else a replay of it.
            let base = snapshotVersions.last { $0 <= version && $0 > hidden } ?? (version == 0 ? 0 : hidden)
            #expect(loaded.version == version, "seed \(seed), version \(version)")
            #expect(loaded.state == expected, "seed \(seed): snapshot + tail differs at version \(version)")
            #expect(loaded.replayedEvents == Int(version - base), "seed \(seed): newest snapshot unused at \(version)")
        }
        let current = UInt64(states.count - 1)
        let replay = try await repository.load(stream, usingSnapshots: false)
        let latest = try await repository.load(stream)
        #expect(replay.state == (current > hidden ? states[states.count - 1] : Ledger()), "seed \(seed): full replay")
        #expect(latest.state == replay.state, "seed \(seed): latest through snapshots")
        #expect(latest.version == replay.version)
        try await repository.expectIndexMatchesRecords(stream)
    }
}
