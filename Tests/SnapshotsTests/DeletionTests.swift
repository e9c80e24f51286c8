// Snapshots and stream deletion: a stream soft-deleted and recreated starts over for readers, so snapshots of its
// earlier life must not seed the new one.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Snapshots: deleted and recreated streams")
struct DeletionTests {
    @Test("snapshots from before a soft delete are not used after the stream is recreated",
          arguments: SnapshotBackends.all)
    func softDeleteAndRecreate(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            try await Fixtures.fill(stream, in: store, events: 10)
            try await repository.takeSnapshot(of: stream, at: 10)
            try await repository.takeSnapshot(of: stream, at: 6)
            _ = try await store.delete(stream, expectedVersion: .any, mode: .soft)
            let recreated = try await Fixtures.fill(stream, in: store, events: 5, startingAt: 10, expectingAny: true)

            let loaded = try await repository.load(stream)
            let replay = try await repository.load(stream, usingSnapshots: false)

            #expect(replay.state == recreated, "a full replay sees only the new life")
            #expect(loaded.state == replay.state)
            #expect(loaded.version == 15)
            #expect(loaded.replayedEvents == 5)

            try await repository.takeSnapshot(of: stream, at: 13)
            let again = try await repository.load(stream)
            #expect(again.replayedEvents == 2, "a snapshot of the new life is used")
            #expect(again.state == replay.state)
            let asOf12 = try await repository.load(stream, asOf: 12)
            #expect(asOf12.version == 12)
            #expect(asOf12.state == (try await repository.load(stream, asOf: 12, usingSnapshots: false)).state)
        }
    }

    @Test("loading as of a deleted version is a typed error, not a later state", arguments: SnapshotBackends.all)
    func asOfDeletedVersion(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            try await Fixtures.fill(stream, in: store, events: 10)
            try await repository.takeSnapshot(of: stream, at: 4)
            _ = try await store.delete(stream, expectedVersion: .any, mode: .soft)
            try await Fixtures.fill(stream, in: store, events: 5, startingAt: 10, expectingAny: true)

            for usingSnapshots in [true, false] {
                await #expect(throws: SnapshotError.versionNotVisible(stream: stream, version: 5)) {
                    try await repository.load(stream, asOf: 5, usingSnapshots: usingSnapshots)
                }
            }
            await #expect(throws: SnapshotError.versionNotVisible(stream: stream, version: 5)) {
                try await repository.takeSnapshot(of: stream, at: 5)
            }
            #expect(try await repository.snapshotVersions(of: stream) == [4])
        }
    }

    @Test("snapshot-all over a recreated stream starts at its first visible version", arguments: SnapshotBackends.all)
    func snapshotAllAfterRecreation(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            try await Fixtures.fill(stream, in: store, events: 10)
            _ = try await store.delete(stream, expectedVersion: .any, mode: .soft)
            try await Fixtures.fill(stream, in: store, events: 12, startingAt: 10, expectingAny: true)

            #expect(try await repository.snapshotAll(of: stream, every: 5) == [15, 20])

            for version: UInt64 in [15, 20] {
                let snapshot = try #require(try await repository.snapshots.snapshot(of: stream, at: version))
                let replay = try await repository.load(stream, asOf: version, usingSnapshots: false)
                #expect(try repository.schema.decode(snapshot) == replay.state)
            }
            #expect(try await repository.load(stream).replayedEvents == 2)
        }
    }

    @Test("after retention hides more of the stream, older snapshots are not used; loads equal a replay",
          arguments: SnapshotBackends.all)
    func truncatedStream(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            try await Fixtures.fill(stream, in: store, events: 20)
            try await repository.takeSnapshot(of: stream, at: 8)
            try await repository.takeSnapshot(of: stream, at: 15)
            try await store.setMetadata(StreamMetadata(truncateBefore: 12), for: stream)

            let replay = try await repository.load(stream, usingSnapshots: false)
            let latest = try await repository.load(stream)
            #expect(replay.replayedEvents == 9, "a replay sees versions 12 to 20")
            #expect(latest.state == replay.state)
            #expect(latest.replayedEvents == 9, "the snapshot at 15 folds 1 to 15, which a replay no longer sees")

            try await repository.takeSnapshot(of: stream, at: 15)
            let again = try await repository.load(stream)
            #expect(again.replayedEvents == 5, "a snapshot folding 12 to 15 is used")
            #expect(again.state == replay.state)
            let asOf14 = try await repository.load(stream, asOf: 14)
            #expect(asOf14.state == (try await repository.load(stream, asOf: 14, usingSnapshots: false)).state)
            await #expect(throws: SnapshotError.versionNotVisible(stream: stream, version: 11)) {
                try await repository.load(stream, asOf: 11)
            }
            await #expect(throws: SnapshotError.versionNotVisible(stream: stream, version: 8)) {
                try await repository.snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: 8)
            }
        }
    }
}
