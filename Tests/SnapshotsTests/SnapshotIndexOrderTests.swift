// Mutation testing (twenty-fourth session): the snapshot index's decoder refuses entries that are not in strictly
// ascending version order (SnapshotIndex.swift: "sorted by version with no duplicates; decoding rejects anything else
// as corruption"). The existing corruption test only used a truncated index, so an index listing one version twice read
// as valid.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("A snapshot index out of order is corruption")
struct SnapshotIndexOrderTests {
    /// One index entry: u64 version, u64 first version, u32 schema, little-endian.
    static func entry(version: UInt64, first: UInt64, schema: UInt32) -> [UInt8] {
        withUnsafeBytes(of: version.littleEndian, Array.init) + withUnsafeBytes(of: first.littleEndian, Array.init)
            + withUnsafeBytes(of: schema.littleEndian, Array.init)
    }

    @Test("an index whose entries repeat a version is reported as corruption naming the stream",
          arguments: SnapshotBackends.all)
    func duplicateVersion(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 5)
            let snapshots = try SnapshotStore(events: store)
            let index: [UInt8] = [1] + withUnsafeBytes(of: UInt32(2).littleEndian, Array.init)
                + Self.entry(version: 3, first: 1, schema: 1) + Self.entry(version: 3, first: 1, schema: 2)
            _ = try await store.backend.commit(
                KeyValueTransaction(writes: [.put(RawSnapshotKeys.index(stream), index)]))

            await #expect { try await snapshots.versions(of: stream) } throws: { error in
                guard case EventStoreError.corrupted(let location, _) = error else { return false }
                return location.contains("snapshot index") && location.contains(stream.rawValue)
            }
        }
    }
    @Test("an index entry whose first version is after its version is reported as corruption naming the stream",
          arguments: SnapshotBackends.all)
    func firstVersionAfterVersion(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            try await Fixtures.fill(stream, in: store, events: 5)
            let snapshots = try SnapshotStore(events: store)
            let index: [UInt8] = [1] + withUnsafeBytes(of: UInt32(1).littleEndian, Array.init)
                + Self.entry(version: 3, first: 5, schema: 1)
            _ = try await store.backend.commit(
                KeyValueTransaction(writes: [.put(RawSnapshotKeys.index(stream), index)]))

            await #expect { try await snapshots.versions(of: stream) } throws: { error in
                guard case EventStoreError.corrupted(let location, _) = error else { return false }
                return location.contains("snapshot index") && location.contains(stream.rawValue)
            }
        }
    }
}
