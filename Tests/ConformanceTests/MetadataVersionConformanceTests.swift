// Stream metadata is versioned as KurrentDB's metadata stream is: each change counts one version, and a change can
// require the version it was decided on, so that two writers' read-modify-writes (two app nodes on etcd, say) cannot
// lose one another's change.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Retention: metadata versions")
struct MetadataVersionConformanceTests {
    @Test("each change counts one version, from 0 for metadata never set", arguments: Backends.all)
    func versionsCountChanges(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("acct")
            let never = try await store.versionedMetadata(of: stream)
            #expect(never == VersionedStreamMetadata(metadata: .init(), version: 0))
            let first = try await store.setMetadata(
                StreamMetadata(maxCount: 5), for: stream, expectedVersion: .noStream)
            #expect(first == 1)
            #expect(try await store.setMetadata(StreamMetadata(maxCount: 6), for: stream) == 2)
            let stored = try await store.versionedMetadata(of: stream)
            #expect(stored == VersionedStreamMetadata(metadata: StreamMetadata(maxCount: 6), version: 2))
            #expect(try await store.metadata(of: stream) == StreamMetadata(maxCount: 6))
        }
    }

    @Test("a change decided on an older version is refused, and writes nothing", arguments: Backends.all)
    func staleChangeIsRefused(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("acct")
            _ = try await store.append(makeEvents(4), to: stream, expectedVersion: .noStream)
            // Two writers read version 0, and each decides on a change.
            let first = try await store.versionedMetadata(of: stream)
            let second = try await store.versionedMetadata(of: stream)
            try await store.setMetadata(
                StreamMetadata(maxCount: 2), for: stream, expectedVersion: .exact(first.version))
            await #expect {
                try await store.setMetadata(
                    StreamMetadata(truncateBefore: 4), for: stream, expectedVersion: .exact(second.version))
            } throws: { error in
                guard case EventStoreError.wrongExpectedMetadataVersion(let named, let expected, let actual) = error
                else { return false }
                return named == stream && expected == .exact(0) && actual == 1
            }
            #expect(try await store.versionedMetadata(of: stream).metadata == StreamMetadata(maxCount: 2))
            #expect(try await store.read(stream).count == 2, "the refused truncateBefore hides nothing")
        }
    }

    @Test("noStream and streamExists mean metadata never set and set at least once", arguments: Backends.all)
    func noStreamAndStreamExists(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("acct")
            await #expect(throws: EventStoreError.self) {
                try await store.setMetadata(StreamMetadata(maxCount: 1), for: stream, expectedVersion: .streamExists)
            }
            let first = try await store.setMetadata(
                StreamMetadata(maxCount: 1), for: stream, expectedVersion: .noStream)
            #expect(first == 1)
            await #expect(throws: EventStoreError.self) {
                try await store.setMetadata(StreamMetadata(maxCount: 2), for: stream, expectedVersion: .noStream)
            }
            #expect(try await store.setMetadata(StreamMetadata(), for: stream, expectedVersion: .streamExists) == 2)
        }
    }

    /// If clearing the metadata forgot its version, a writer that read version 1 before a clear and two later
    /// changes would find version 1 again and overwrite a change it never saw.
    @Test("clearing the metadata keeps counting, so an old version never matches again", arguments: Backends.all)
    func clearingKeepsTheVersion(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("acct")
            try await store.setMetadata(StreamMetadata(maxCount: 3), for: stream)
            let stale = try await store.versionedMetadata(of: stream)
            #expect(try await store.setMetadata(StreamMetadata(), for: stream) == 2)
            let cleared = try await store.versionedMetadata(of: stream)
            #expect(cleared == VersionedStreamMetadata(metadata: .init(), version: 2))
            await #expect(throws: EventStoreError.self) {
                try await store.setMetadata(
                    StreamMetadata(maxCount: 9), for: stream, expectedVersion: .exact(stale.version))
            }
            await #expect(throws: EventStoreError.self) {
                try await store.setMetadata(StreamMetadata(maxCount: 9), for: stream, expectedVersion: .noStream)
            }
        }
    }

    @Test("a soft delete that removes truncateBefore counts one version; one that changes nothing does not",
        arguments: Backends.all)
    func softDeleteCountsItsChange(backend: Backend) async throws {
        try await backend.withStore { store in
            let truncated = try uniqueStream("acct")
            _ = try await store.append(makeEvents(2), to: truncated, expectedVersion: .noStream)
            try await store.setMetadata(StreamMetadata(maxCount: 7, truncateBefore: 2), for: truncated)
            _ = try await store.delete(truncated, expectedVersion: .exact(2), mode: .soft)
            #expect(
                try await store.versionedMetadata(of: truncated)
                    == VersionedStreamMetadata(metadata: StreamMetadata(maxCount: 7), version: 2))
            let capped = try uniqueStream("acct")
            _ = try await store.append(makeEvents(2), to: capped, expectedVersion: .noStream)
            try await store.setMetadata(StreamMetadata(maxCount: 7), for: capped)
            _ = try await store.delete(capped, expectedVersion: .exact(2), mode: .soft)
            #expect(try await store.versionedMetadata(of: capped).version == 1)
        }
    }

    @Test("of concurrent changes expecting one version, exactly one is written", arguments: Backends.all)
    func concurrentChangesOneWins(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("acct")
            let outcomes = await withTaskGroup(of: Bool.self) { group in
                for count in 1...6 {
                    group.addTask {
                        do {
                            try await store.setMetadata(
                                StreamMetadata(maxCount: UInt64(count)), for: stream, expectedVersion: .noStream)
                            return true
                        } catch EventStoreError.wrongExpectedMetadataVersion(_, _, let actual) {
                            #expect(actual == 1)
                            return false
                        } catch {
                            Issue.record("unexpected \(error)")
                            return false
                        }
                    }
                }
                return await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(outcomes.filter { $0 }.count == 1)
            #expect(try await store.versionedMetadata(of: stream).version == 1)
        }
    }

    @Test("a hard-deleted stream's metadata is refused at any version", arguments: Backends.all)
    func hardDeletedIsRefused(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("acct")
            _ = try await store.append(makeEvents(1), to: stream, expectedVersion: .noStream)
            try await store.setMetadata(StreamMetadata(maxCount: 4), for: stream)
            _ = try await store.delete(stream, expectedVersion: .any, mode: .hard)
            await #expect {
                try await store.setMetadata(StreamMetadata(maxCount: 5), for: stream, expectedVersion: .exact(1))
            } throws: { error in
                guard case EventStoreError.streamDeleted(let named) = error else { return false }
                return named == stream
            }
            #expect(try await store.versionedMetadata(of: stream).version == 1)
        }
    }

    // Twenty-first session's review: a first design kept the version in a new record format, which nodes of the
    // previous release read as corruption, and whose format-1 writes took the version back to 1. The version is now
    // the key's own per-key version, which every write counts, whichever release made it.

    @Test(
        "metadata written by the previous release reads at the number of times it was written", arguments: Backends.all)
    func earlierWritesCount(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("acct")
            let key = KeyLayout.streamMetadata(stream)
            // The previous release's record, written twice: format 1, flags maxCount, u64le 3 (then 4).
            _ = try await store.backend.commit(KeyValueTransaction(writes: [.put(key, [1, 1, 3, 0, 0, 0, 0, 0, 0, 0])]))
            _ = try await store.backend.commit(KeyValueTransaction(writes: [.put(key, [1, 1, 4, 0, 0, 0, 0, 0, 0, 0])]))
            let stored = try await store.versionedMetadata(of: stream)
            #expect(stored == VersionedStreamMetadata(metadata: StreamMetadata(maxCount: 4), version: 2))
            #expect(try await store.setMetadata(StreamMetadata(), for: stream, expectedVersion: .exact(2)) == 3)
            #expect(try await store.backend.get(key)?.value == [1, 0], "the previous release reads it as no limits")
        }
    }

    @Test("a write by a node on the previous release counts a version, so a stale change is still refused",
        arguments: Backends.all)
    func previousReleaseWriteCounts(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("acct")
            try await store.setMetadata(StreamMetadata(maxCount: 3), for: stream)
            let stale = try await store.versionedMetadata(of: stream)
            try await store.setMetadata(StreamMetadata(maxCount: 4), for: stream)
            // The previous release's setMetadata(StreamMetadata(maxCount: 6)): format 1, flags maxCount, u64le 6.
            _ = try await store.backend.commit(
                KeyValueTransaction(writes: [.put(KeyLayout.streamMetadata(stream), [1, 1, 6, 0, 0, 0, 0, 0, 0, 0])]))
            #expect(try await store.versionedMetadata(of: stream).version == 3)
            await #expect(throws: EventStoreError.self) {
                try await store.setMetadata(
                    StreamMetadata(truncateBefore: 9), for: stream, expectedVersion: .exact(stale.version))
            }
            #expect(try await store.metadata(of: stream) == StreamMetadata(maxCount: 6))
        }
    }
}
