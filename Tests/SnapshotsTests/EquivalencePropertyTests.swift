// Property: over 200 random histories (random events, batches, policies, snapshots taken, cleared and rebuilt),
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
        let perChunk = Self.histories / Self.chunks
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
        // states[v] is the state after events 1...v, folded locally from the events as generated.
        var states: [Ledger] = [Ledger()]

        while states.count - 1 < length {
            let current = UInt64(states.count - 1)
            switch Int.random(in: 0..<20, using: &random) {
            case 0..<12:
                let loaded = try await repository.load(stream)
                #expect(loaded.state == states[Int(loaded.version)], "seed \(seed): load before save")
                let count = Int.random(in: 1...6, using: &random)
                let events = (0..<count).map { _ in Fixtures.randomEvent(using: &random) }
                try await repository.save(events, to: stream, from: loaded)
                for event in events {
                    var next = states[states.count - 1]
                    next.apply(event)
                    states.append(next)
                }
            case 12..<16 where current > 0:
                try await repository.takeSnapshot(of: stream, at: UInt64.random(in: 1...current, using: &random))
            case 16..<18:
                let versions = try await repository.snapshotVersions(of: stream)
                if let victim = versions.randomElement(using: &random) {
                    #expect(try await repository.clearSnapshot(of: stream, at: victim), "seed \(seed)")
                }
            case 18:
                try await repository.snapshotAll(of: stream, every: UInt64.random(in: 1...10, using: &random))
            default:
                try await repository.clearSnapshots(of: stream)
            }
        }
        try await checkEveryVersion(of: stream, against: states, repository: repository, seed: seed)
    }

    private func checkEveryVersion(
        of stream: StreamName, against states: [Ledger], repository: SnapshottingRepository<Ledger>, seed: UInt64
    ) async throws {
        let snapshotVersions = try await repository.snapshotVersions(of: stream)
        for (offset, expected) in states.enumerated() {
            let version = UInt64(offset)
            let loaded = try await repository.load(stream, asOf: version)
            let base = snapshotVersions.last { $0 <= version } ?? 0
            #expect(loaded.version == version, "seed \(seed), version \(version)")
            #expect(loaded.state == expected, "seed \(seed): snapshot + tail differs at version \(version)")
            #expect(loaded.replayedEvents == Int(version - base), "seed \(seed): newest snapshot unused at \(version)")
        }
        let replay = try await repository.load(stream, usingSnapshots: false)
        let latest = try await repository.load(stream)
        #expect(replay.state == states[states.count - 1], "seed \(seed): full replay")
        #expect(latest.state == replay.state, "seed \(seed): latest through snapshots")
        #expect(latest.version == replay.version)
        try await repository.expectIndexMatchesRecords(stream)
    }
}
