// The snapshot store: saving, reading, listing, deleting and pruning, its input checks and its corruption checks.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Snapshots: the snapshot store")
struct SnapshotStoreTests {
    @Test("a saved snapshot reads back exactly, by version and as the latest", arguments: SnapshotBackends.all)
    func saveAndRead(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 5)
            let snapshots = try SnapshotStore(events: store)
            let data = Data((0..<300).map { UInt8($0 % 256) })

            try await snapshots.save(data, schemaVersion: 7, of: stream, at: 4)

            let exact = try #require(try await snapshots.snapshot(of: stream, at: 4))
            #expect(exact.data == data)
            #expect(exact.version == 4)
            #expect(exact.schemaVersion == 7)
            #expect(exact.stream == stream)
            #expect(abs(exact.takenAt.timeIntervalSinceNow) < 3_600, "the save time is recorded")
            #expect(try await snapshots.latestSnapshot(of: stream) == exact)
            #expect(try await snapshots.snapshot(of: stream, at: 3) == nil)
            #expect(try await snapshots.descriptors(of: stream) == [SnapshotDescriptor(version: 4, schemaVersion: 7)])
            #expect(try await RawSnapshotKeys.storedVersions(stream, in: store) == [4], "the documented key layout")
            #expect(try await store.backend.get(RawSnapshotKeys.index(stream)) != nil)
        }
    }

    @Test("a stream without snapshots reads as empty", arguments: SnapshotBackends.all)
    func emptyStream(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let snapshots = try SnapshotStore(events: store)
            #expect(try await snapshots.versions(of: stream) == [])
            #expect(try await snapshots.lastVersion(of: stream) == nil)
            #expect(try await snapshots.latestSnapshot(of: stream) == nil)
            #expect(try await snapshots.deleteAll(of: stream) == 0)
            #expect(try await snapshots.delete(snapshotOf: stream, at: 1) == false)
            #expect(try await RawSnapshotKeys.allKeys(stream, in: store) == [], "reads and no-op deletes write nothing")
        }
    }

    @Test("saving beyond the stream's version is a typed error and writes nothing", arguments: SnapshotBackends.all)
    func saveBeyondStream(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 5)
            let snapshots = try SnapshotStore(events: store)

            await #expect(throws: SnapshotError.versionBeyondStream(stream: stream, requested: 6, streamVersion: 5)) {
                try await snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: 6)
            }
            let missing = try Fixtures.stream()
            await #expect(throws: SnapshotError.versionBeyondStream(stream: missing, requested: 1, streamVersion: 0)) {
                try await snapshots.save(Data([1]), schemaVersion: 1, of: missing, at: 1)
            }
            try await snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: 5)
            #expect(try await snapshots.versions(of: stream) == [5])
            #expect(try await RawSnapshotKeys.allKeys(missing, in: store) == [])
        }
    }

    @Test("bad arguments are typed errors and write nothing", arguments: SnapshotBackends.all)
    func badArguments(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 5)
            let snapshots = try SnapshotStore(events: store)

            await #expect { try await snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: 0) } throws: {
                if case EventStoreError.invalidArgument = $0 { true } else { false }
            }
            await #expect {
                try await snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: 1, keepingLast: 0)
            } throws: {
                if case EventStoreError.invalidArgument = $0 { true } else { false }
            }
            await #expect { try await snapshots.prune(stream, keepingLast: 0) } throws: {
                if case EventStoreError.invalidArgument = $0 { true } else { false }
            }
            #expect(try await RawSnapshotKeys.allKeys(stream, in: store) == [])
        }
    }

    @Test("saving at an existing version replaces that snapshot", arguments: SnapshotBackends.all)
    func saveReplaces(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 5)
            let snapshots = try SnapshotStore(events: store)

            try await snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: 3)
            try await snapshots.save(Data([2, 2]), schemaVersion: 2, of: stream, at: 3)

            #expect(try await snapshots.descriptors(of: stream) == [SnapshotDescriptor(version: 3, schemaVersion: 2)])
            #expect(try await snapshots.snapshot(of: stream, at: 3)?.data == Data([2, 2]))
        }
    }

    @Test("the latest snapshot at or before a version is the newest one not after it", arguments: SnapshotBackends.all)
    func latestAtOrBefore(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 30)
            let snapshots = try SnapshotStore(events: store)
            for version: UInt64 in [5, 10, 20] {
                try await snapshots.save(Data([UInt8(version)]), schemaVersion: version == 10 ? 2 : 1, of: stream, at: version)
            }

            #expect(try await snapshots.latestSnapshot(of: stream, atOrBefore: 4) == nil)
            #expect(try await snapshots.latestSnapshot(of: stream, atOrBefore: 5)?.version == 5)
            #expect(try await snapshots.latestSnapshot(of: stream, atOrBefore: 19)?.version == 10)
            #expect(try await snapshots.latestSnapshot(of: stream, atOrBefore: 1_000)?.version == 20)
            #expect(try await snapshots.latestSnapshot(of: stream)?.version == 20)
            let schemaOne = try await snapshots.latestSnapshot(of: stream, atOrBefore: 19) { $0.schemaVersion == 1 }
            #expect(schemaOne?.version == 5)
        }
    }

    @Test("keeping the last K removes the oldest, with their records", arguments: SnapshotBackends.all)
    func retention(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 10)
            let snapshots = try SnapshotStore(events: store)

            for version: UInt64 in 1...6 {
                try await snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: version, keepingLast: 3)
            }
            #expect(try await snapshots.versions(of: stream) == [4, 5, 6])
            try await snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: 2, keepingLast: 3)
            #expect(try await snapshots.versions(of: stream) == [4, 5, 6], "an older snapshot than the K kept is dropped")
            #expect(try await RawSnapshotKeys.storedVersions(stream, in: store) == [4, 5, 6])

            #expect(try await snapshots.prune(stream, keepingLast: 1) == [4, 5])
            #expect(try await RawSnapshotKeys.storedVersions(stream, in: store) == [6])
            #expect(try await snapshots.prune(stream, keepingLast: 1) == [])
        }
    }

    @Test("deleting all removes every snapshot across several transactions", arguments: SnapshotBackends.all)
    func deleteAllInBatches(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let other = try StreamName(stream.rawValue + "x")
            let count = UInt64(SnapshotStore.deletionBatchSize * 2 + 7)
            try await Fixtures.fill(stream, in: store, events: count)
            try await Fixtures.fill(other, in: store, events: 1)
            let snapshots = try SnapshotStore(events: store)
            for version in 1...count { try await snapshots.save(Data([0]), schemaVersion: 1, of: stream, at: version) }
            try await snapshots.save(Data([0]), schemaVersion: 1, of: other, at: 1)

            #expect(try await snapshots.deleteAll(of: stream) == Int(count))

            #expect(try await RawSnapshotKeys.allKeys(stream, in: store) == [])
            #expect(try await snapshots.versions(of: other) == [1], "a stream whose name extends another's is untouched")
        }
    }

    @Test("a malformed index is reported as corruption naming the stream", arguments: SnapshotBackends.all)
    func corruptIndex(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 5)
            let snapshots = try SnapshotStore(events: store)
            _ = try await store.backend.commit(
                KeyValueTransaction(writes: [.put(RawSnapshotKeys.index(stream), [1, 2, 0, 0, 0, 9])]))

            await #expect { try await snapshots.versions(of: stream) } throws: { error in
                guard case EventStoreError.corrupted(let location, _) = error else { return false }
                return location.contains("snapshot index") && location.contains(stream.rawValue)
            }
            await #expect(throws: EventStoreError.self) {
                try await snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: 1)
            }
        }
    }

    @Test("an index entry without its record is corruption, not a silent fallback", arguments: SnapshotBackends.all)
    func missingRecord(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 5)
            let repository = try Fixtures.repository(store)
            try await repository.takeSnapshot(of: stream, at: 4)
            _ = try await store.backend.commit(KeyValueTransaction(writes: [
                .delete(RawSnapshotKeys.record(stream, 4, collection: repository.snapshots.collection))
            ]))

            await #expect { try await repository.load(stream) } throws: { error in
                guard case EventStoreError.corrupted(let location, _) = error else { return false }
                return location.contains("version 4") && location.contains(stream.rawValue)
            }
        }
    }

    @Test("a record filed under the wrong version is corruption", arguments: SnapshotBackends.all)
    func misfiledRecord(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 5)
            let snapshots = try SnapshotStore(events: store)
            try await snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: 2)
            try await snapshots.save(Data([2]), schemaVersion: 1, of: stream, at: 3)
            let record2 = try #require(try await store.backend.get(RawSnapshotKeys.record(stream, 2)))
            _ = try await store.backend.commit(
                KeyValueTransaction(writes: [.put(RawSnapshotKeys.record(stream, 3), record2.value)]))

            await #expect { try await snapshots.snapshot(of: stream, at: 3) } throws: { error in
                guard case EventStoreError.corrupted(let location, _) = error else { return false }
                return location.contains("version 3")
            }
            #expect(try await snapshots.snapshot(of: stream, at: 2)?.data == Data([1]))
        }
    }

    @Test("a snapshot newer than its stream is corruption, never a state for missing events",
          arguments: SnapshotBackends.all)
    func snapshotNewerThanStream(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let long = try Fixtures.stream()
            let short = try Fixtures.stream()
            try await Fixtures.fill(long, in: store, events: 9)
            try await Fixtures.fill(short, in: store, events: 3)
            let repository = try Fixtures.repository(store)
            try await repository.takeSnapshot(of: long, at: 9)
            // Copy the long stream's snapshot records under the short stream's keys, byte for byte.
            let collection = repository.snapshots.collection
            let index = try #require(try await store.backend.get(RawSnapshotKeys.index(long, collection: collection)))
            let record = try #require(
                try await store.backend.get(RawSnapshotKeys.record(long, 9, collection: collection)))
            _ = try await store.backend.commit(KeyValueTransaction(writes: [
                .put(RawSnapshotKeys.index(short, collection: collection), index.value),
                .put(RawSnapshotKeys.record(short, 9, collection: collection), record.value),
            ]))

            await #expect { try await repository.load(short) } throws: { error in
                guard case EventStoreError.corrupted(let location, let detail) = error else { return false }
                return location.contains(short.rawValue) && detail.contains("newer than its stream")
            }
        }
    }
}
