// One regression test per bug of the seed's snapshot implementation (issue 6).

import EventStore
import EventStoreKV
import Snapshots
import Testing

@Suite("Snapshots: seed regressions")
struct SeedRegressionTests {
    @Test("the first snapshot is in the index, and later loads use it", arguments: SnapshotBackends.all)
    func firstSnapshotIsIndexed(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            try await Fixtures.fill(stream, in: store, events: 12)

            #expect(try await repository.takeSnapshot(of: stream) == 12)

            #expect(try await repository.snapshotVersions(of: stream) == [12])
            #expect(try await repository.lastSnapshotVersion(of: stream) == 12)
            let loaded = try await repository.load(stream)
            #expect(loaded.version == 12)
            #expect(loaded.replayedEvents == 0)
            _ = try await repository.save([Deposited(amount: 3)], to: stream, from: loaded)
            let later = try await repository.load(stream)
            #expect(later.replayedEvents == 1)
            #expect(later.state == (try await repository.load(stream, usingSnapshots: false)).state)
        }
    }

    @Test("clearing one snapshot leaves no dangling index entry", arguments: SnapshotBackends.all)
    func clearingOneSnapshotLeavesNoDanglingEntry(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            try await Fixtures.fill(stream, in: store, events: 30)
            for version: UInt64 in [10, 20, 30] { try await repository.takeSnapshot(of: stream, at: version) }

            #expect(try await repository.clearSnapshot(of: stream, at: 20))

            #expect(try await repository.snapshotVersions(of: stream) == [10, 30])
            try await repository.expectIndexMatchesRecords(stream)
            let asOf25 = try await repository.load(stream, asOf: 25)
            #expect(asOf25.replayedEvents == 15)
            #expect(asOf25.state == (try await repository.load(stream, asOf: 25, usingSnapshots: false)).state)
            #expect(try await repository.clearSnapshot(of: stream, at: 20) == false)

            #expect(try await repository.clearSnapshot(of: stream, at: 30))
            #expect(try await repository.clearSnapshot(of: stream, at: 10))
            #expect(try await repository.snapshotVersions(of: stream) == [])
            #expect(try await RawSnapshotKeys.allKeys(stream, in: store) == [], "no index or record key is left")
            #expect(try await repository.load(stream).replayedEvents == 30)
        }
    }

    @Test("loading as of version v never uses a snapshot newer than v", arguments: SnapshotBackends.all)
    func asOfNeverUsesNewerSnapshot(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            try await Fixtures.fill(stream, in: store, events: 30)
            try await repository.takeSnapshot(of: stream, at: 10)
            try await repository.takeSnapshot(of: stream, at: 20)

            for (version, replayed) in [(15, 5), (20, 0), (19, 9), (9, 9), (25, 5), (0, 0)] as [(UInt64, Int)] {
                let loaded = try await repository.load(stream, asOf: version)
                let replay = try await repository.load(stream, asOf: version, usingSnapshots: false)
                #expect(loaded.version == version)
                #expect(loaded.replayedEvents == replayed, "as of \(version)")
                #expect(loaded.state == replay.state, "as of \(version)")
            }
        }
    }

    @Test("snapshot-all loses no index updates", arguments: SnapshotBackends.all)
    func snapshotAllLosesNoUpdates(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            try await Fixtures.fill(stream, in: store, events: 95)

            let taken = try await repository.snapshotAll(of: stream, every: 10)

            let expected: [UInt64] = Array(stride(from: 10, through: 90, by: 10))
            #expect(taken == expected)
            #expect(try await repository.snapshotVersions(of: stream) == expected)
            try await repository.expectIndexMatchesRecords(stream)
            for version in expected {
                let snapshot = try #require(try await repository.snapshots.snapshot(of: stream, at: version))
                let replay = try await repository.load(stream, asOf: version, usingSnapshots: false)
                #expect(try repository.schema.decode(snapshot) == replay.state, "snapshot at \(version)")
            }
        }
    }
}
