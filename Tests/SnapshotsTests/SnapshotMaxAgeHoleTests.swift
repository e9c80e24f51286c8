// Guards that no snapshot is taken of a state that skipped an event maxAge hid between visible ones. maxAge hides each
// event by its own recordedAt, so an event recorded before the one ahead of it (a wall clock that stepped back, or two
// appends to one stream whose clock readings committed in the other order) can be hidden while later ones are not.
// A snapshot of a state built then was stored as folding firstVersion...version; once the event was visible again
// (maxAge raised or removed before a scavenge), loads started from that snapshot and never folded the event, while a
// replay did. These tests failed before the fix (LoadedAggregate.skippedVersion, refused by the snapshotting
// repository's takeSnapshot, policy snapshots on save, and snapshotAll).

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Snapshots: states that skipped an event maxAge hid between visible ones")
struct SnapshotMaxAgeHoleTests {
    enum Backend: String, CaseIterable, Sendable { case inMemory, pageFile }

    static func makeStore(_ backend: Backend, clock: @escaping @Sendable () -> Date) throws
        -> (KeyValueEventStore, @Sendable () async -> Void)
    {
        switch backend {
        case .inMemory:
            let store = KeyValueEventStore(backend: InMemoryKeyValueStore(), clock: clock)
            return (store, { try? await store.close() })
        case .pageFile:
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("eventstore-maxage-hole-\(UUID().uuidString)").path
            let store = KeyValueEventStore(backend: try PageFileKeyValueStore.open(directory: directory), clock: clock)
            return (store, {
                try? await store.close()
                try? FileManager.default.removeItem(atPath: directory)
            })
        }
    }

    /// Runs `body` on a store whose stream has versions 1...4, version `hidden` recorded 100 s before the others,
    /// and maxAge 120 s with the clock 60 s on: only version `hidden` is hidden.
    static func withHole(
        _ backend: Backend, hidden: UInt64,
        _ body: (KeyValueEventStore, StreamName, SnapshottingRepository<Ledger>) async throws -> Void
    ) async throws {
        let now = Locked(Date(timeIntervalSince1970: 1_000_000))
        let (store, cleanup) = try makeStore(backend, clock: { now.withLock { $0 } })
        do {
            let stream = try Fixtures.stream()
            for version in 1...UInt64(4) {
                if version == hidden { now.withLock { $0 = $0.addingTimeInterval(-100) } }  // the clock steps back
                try await Fixtures.fill(stream, in: store, events: 1, startingAt: version - 1)
                if version == hidden { now.withLock { $0 = $0.addingTimeInterval(100) } }
            }
            try await store.setMetadata(StreamMetadata(maxAge: .seconds(120)), for: stream)
            now.withLock { $0 = $0.addingTimeInterval(60) }  // hides version `hidden` only
            try await body(store, stream, try Fixtures.repository(store, policy: .every(1)))
        } catch {
            await cleanup()
            throw error
        }
        await cleanup()
    }

    /// Relaxes the retention (before any scavenge), so that the hidden event is visible again, and checks that loads
    /// equal a replay of every event, with maxAge raised and with no limit.
    static func expectLoadsEqualReplayOnceVisible(
        _ store: KeyValueEventStore, _ stream: StreamName, _ repository: SnapshottingRepository<Ledger>
    ) async throws {
        for metadata in [StreamMetadata(maxAge: .seconds(3_600)), StreamMetadata()] {
            try await store.setMetadata(metadata, for: stream)
            let replay = try await repository.load(stream, usingSnapshots: false)
            #expect(replay.replayedEvents == Int(replay.version), "a replay sees every version")
            let viaSnapshot = try await repository.load(stream)
            #expect(viaSnapshot.state == replay.state, "a load must equal a replay of the visible events")
        }
    }

    @Test("a snapshot of a state that skipped a maxAge-hidden event is refused", arguments: Backend.allCases)
    func takeSnapshotAcrossAMaxAgeHole(backend: Backend) async throws {
        try await Self.withHole(backend, hidden: 2) { store, stream, repository in
            let loaded = try await repository.load(stream, asOf: 3)
            #expect(loaded.firstVersion == 1 && loaded.skippedVersion == 2 && loaded.replayedEvents == 2)
            // The state folds versions 1 and 3 (2 is hidden): it does not stand for 1...3.
            await #expect(throws: SnapshotError.versionNotVisible(stream: stream, version: 2)) {
                try await repository.takeSnapshot(of: stream, at: 3)
            }
            // Before the hole, the state is whole and is snapshotted.
            #expect(try await repository.takeSnapshot(of: stream, at: 1) == 1)
            #expect(try await repository.snapshotVersions(of: stream) == [1])
            try await Self.expectLoadsEqualReplayOnceVisible(store, stream, repository)
        }
    }

    @Test("a snapshot of a state whose last event maxAge hides is refused", arguments: Backend.allCases)
    func takeSnapshotWithAHiddenEnd(backend: Backend) async throws {
        try await Self.withHole(backend, hidden: 4) { store, stream, repository in
            let loaded = try await repository.load(stream)
            #expect(loaded.version == 4 && loaded.replayedEvents == 3 && loaded.skippedVersion == 4)
            await #expect(throws: SnapshotError.versionNotVisible(stream: stream, version: 4)) {
                try await repository.takeSnapshot(of: stream)
            }
            #expect(try await repository.snapshotVersions(of: stream) == [])
            try await Self.expectLoadsEqualReplayOnceVisible(store, stream, repository)
        }
    }

    @Test("a save across a maxAge hole succeeds and reports its policy snapshot as failed", arguments: Backend.allCases)
    func policySnapshotAcrossAMaxAgeHole(backend: Backend) async throws {
        try await Self.withHole(backend, hidden: 2) { store, stream, repository in
            let loaded = try await repository.load(stream)
            let saved = try await repository.save([Deposited(amount: 7)], to: stream, from: loaded)
            #expect(saved.result.version == 5 && saved.aggregate.skippedVersion == 2)
            guard case .failed(let error) = saved.snapshot else {
                Issue.record("a state lacking version 2 was snapshotted: \(saved.snapshot)")
                return
            }
            #expect(error as? SnapshotError == .versionNotVisible(stream: stream, version: 2))
            #expect(try await repository.snapshotVersions(of: stream) == [])
            try await Self.expectLoadsEqualReplayOnceVisible(store, stream, repository)
        }
    }

    @Test("snapshot-all takes no snapshot past a maxAge hole", arguments: Backend.allCases)
    func snapshotAllAcrossAMaxAgeHole(backend: Backend) async throws {
        try await Self.withHole(backend, hidden: 2) { store, stream, repository in
            #expect(try await repository.snapshotAll(of: stream, every: 3) == [])
            #expect(try await repository.snapshotVersions(of: stream) == [])
            try await Self.expectLoadsEqualReplayOnceVisible(store, stream, repository)
        }
    }
}
