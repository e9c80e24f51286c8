// Stream metadata, deletion and scavenge on every backend: reads hide what maxCount, maxAge, truncateBefore and
// deletion hide, as soon as they are set; soft-deleted streams can be recreated with continuing versions;
// hard-deleted ones refuse appends; scavenge removes hidden events and leaves survivors' positions unchanged.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Retention") struct RetentionConformanceTests {
    @Test(arguments: Backends.all)
    func maxCountKeepsOnlyTheNewestEvents(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("log-1")
            _ = try await store.append(samples(10), to: name, expectedVersion: .noStream)
            try await store.setMetadata(StreamMetadata(maxCount: 3), for: name)
            #expect(try await store.metadata(of: name) == StreamMetadata(maxCount: 3))
            #expect(try await store.read(name).map(\.version) == [8, 9, 10])
            #expect(try await store.readBackward(name).map(\.version) == [10, 9, 8])
            #expect(try await store.read(name, from: .version(2), limit: 2).map(\.version) == [8, 9])
            _ = try await store.append(samples(2), to: name, expectedVersion: .exact(10))
            #expect(try await store.read(name).map(\.version) == [10, 11, 12])
            #expect(try await store.version(of: name) == 12)
            // Removing the limit shows everything again (nothing was scavenged yet).
            try await store.setMetadata(StreamMetadata(), for: name)
            #expect(try await store.read(name).count == 12)
        }
    }

    @Test(arguments: Backends.all)
    func truncateBeforeHidesEarlierVersions(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("log-1")
            _ = try await store.append(samples(6), to: name, expectedVersion: .noStream)
            try await store.setMetadata(StreamMetadata(truncateBefore: 4), for: name)
            #expect(try await store.read(name).map(\.version) == [4, 5, 6])
            #expect(try await store.readBackward(name, from: .version(5)).map(\.version) == [5, 4])
            #expect(try await store.readBackward(name, from: .version(2)).isEmpty)
        }
    }

    @Test(arguments: Backends.all)
    func maxAgeHidesOldEventsByTheStoreClock(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("log-1")
            // A writer whose clock is two hours behind records "old" events on the same backend.
            let past = KeyValueEventStore(backend: store.backend, clock: { Date().addingTimeInterval(-7_200) })
            _ = try await past.append(samples(3, prefix: "old"), to: name, expectedVersion: .noStream)
            _ = try await store.append(samples(2, prefix: "new"), to: name, expectedVersion: .exact(3))
            try await store.setMetadata(StreamMetadata(maxAge: .seconds(3_600)), for: name)
            #expect(try await store.read(name).map(\.version) == [4, 5])
            #expect(try await store.readBackward(name).map(\.version) == [5, 4])
            // A reader three hours ahead sees every event as too old.
            let future = KeyValueEventStore(backend: store.backend, clock: { Date().addingTimeInterval(10_800) })
            #expect(try await future.read(name).isEmpty)
        }
    }

    @Test(arguments: Backends.all)
    func invalidMetadataIsRejectedAndChangesNothing(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("log-1")
            _ = try await store.append(samples(2), to: name, expectedVersion: .noStream)
            await #expect(throws: EventStoreError.self) {
                try await store.setMetadata(StreamMetadata(maxCount: 0), for: name)
            }
            await #expect(throws: EventStoreError.self) {
                try await store.setMetadata(StreamMetadata(maxAge: .seconds(-1)), for: name)
            }
            #expect(try await store.metadata(of: name) == StreamMetadata())
            #expect(try await store.read(name).count == 2)
        }
    }

    @Test(arguments: Backends.all)
    func softDeleteThenRecreateContinuesVersions(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("cart-1")
            _ = try await store.append(samples(5), to: name, expectedVersion: .noStream)
            await #expect(throws: EventStoreError.self) {
                _ = try await store.delete(name, expectedVersion: .exact(4), mode: .soft)
            }
            let deletedAt = try await store.delete(name, expectedVersion: .exact(5), mode: .soft)
            #expect(deletedAt == 6)
            #expect(try await store.read(name).isEmpty)
            #expect(try await store.version(of: name) == 0)
            #expect(try await store.listStreams(prefix: "cart", after: nil, limit: 10).isEmpty)
            do {
                _ = try await store.delete(name, expectedVersion: .any, mode: .soft)
                Issue.record("a second soft delete succeeded")
            } catch EventStoreError.streamNotFound(let missing) {
                #expect(missing == name)
            }
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append(sample(), to: name, expectedVersion: .streamExists)
            }
            // Recreate: noStream is met, and versions continue from the old end.
            let result = try await store.append(samples(2, prefix: "again"), to: name, expectedVersion: .noStream)
            #expect(result.version == 7)
            #expect(result.positions == 7..<9)
            #expect(try await store.read(name).map(\.version) == [6, 7])
            #expect(try await store.version(of: name) == 7)
            #expect(try await store.listStreams(prefix: "cart", after: nil, limit: 10) == [StreamSummary(stream: name, version: 7)])
            // The old events stay in the global log until scavenged.
            #expect(try await store.readAll(from: 1, limit: 100).count == 8)
        }
    }

    @Test(arguments: Backends.all)
    func softDeletedStreamCanBeRecreatedWithAny(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("cart-1")
            _ = try await store.append(samples(3), to: name, expectedVersion: .noStream)
            _ = try await store.delete(name, expectedVersion: .any, mode: .soft)
            let result = try await store.append(sample(), to: name, expectedVersion: .any)
            #expect(result.version == 4)
            #expect(try await store.read(name).map(\.version) == [4])
        }
    }

    @Test(arguments: Backends.all)
    func hardDeleteIsATombstone(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("cart-1")
            _ = try await store.append(samples(3), to: name, expectedVersion: .noStream)
            _ = try await store.delete(name, expectedVersion: .any, mode: .hard)
            #expect(try await store.read(name).isEmpty)
            #expect(try await store.version(of: name) == 0)
            for expected in [ExpectedVersion.any, .noStream, .exact(3)] {
                do {
                    _ = try await store.append(sample(), to: name, expectedVersion: expected)
                    Issue.record("an append to a hard-deleted stream succeeded with \(expected)")
                } catch EventStoreError.streamDeleted(let deleted) {
                    #expect(deleted == name)
                }
            }
            // Nothing was written by the failed appends; a multi-stream append including it fails as a whole.
            let other = try stream("other-1")
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append([
                    StreamAppend(stream: other, expectedVersion: .any, events: [sample()]),
                    StreamAppend(stream: name, expectedVersion: .any, events: [sample()]),
                ])
            }
            #expect(try await store.lastPosition() == 4)
            await #expect(throws: EventStoreError.self) {
                _ = try await store.delete(name, expectedVersion: .any, mode: .hard)
            }
            await #expect(throws: EventStoreError.self) {
                try await store.setMetadata(StreamMetadata(maxCount: 1), for: name)
            }
            // A name that never held events can be tombstoned too.
            let ghost = try stream("ghost-1")
            _ = try await store.delete(ghost, expectedVersion: .noStream, mode: .hard)
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append(sample(), to: ghost, expectedVersion: .noStream)
            }
            #expect(try await store.listStreams(prefix: "", after: nil, limit: 10).map(\.stream) == [.deletedStreams])
        }
    }

    @Test(arguments: Backends.all)
    func deletionsAppearInTheGlobalLogAsSystemEvents(backend: Backend) async throws {
        try await backend.withStore { store in
            let soft = try stream("a-1")
            let hard = try stream("b-1")
            _ = try await store.append(samples(2), to: soft, expectedVersion: .noStream)
            _ = try await store.append(samples(1), to: hard, expectedVersion: .noStream)
            var live = store.subscribeToAll(from: .end).makeAsyncIterator()
            #expect(try await live.next() == .caughtUp(through: 3))
            _ = try await store.delete(soft, expectedVersion: .exact(2), mode: .soft)
            _ = try await store.delete(hard, expectedVersion: .any, mode: .hard)
            let events = try await live.nextEvents(2)
            let deletions = try events.map { try #require(try StreamDeletion.decode($0)) }
            #expect(deletions == [
                StreamDeletion(stream: "a-1", mode: .soft, lastVersion: 2),
                StreamDeletion(stream: "b-1", mode: .hard, lastVersion: 1),
            ])
            #expect(events.allSatisfy { $0.stream == .deletedStreams })
            #expect(try await store.read(.deletedStreams).map(\.position) == [4, 5])
            await #expect(throws: EventStoreError.self) {
                _ = try await store.delete(.deletedStreams, expectedVersion: .any, mode: .hard)
            }
        }
    }

    @Test(arguments: Backends.all)
    func deletingALockedStreamFailsWhileTheSessionHoldsIt(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("cart-1")
            let session = try await store.openSession(on: name, sessionTimeout: .seconds(60), openTimeout: .zero)
            _ = try await session.append([sample()], expectedVersion: .noStream)
            await #expect(throws: EventStoreError.self) {
                _ = try await store.delete(name, expectedVersion: .any, mode: .soft)
            }
            try await session.close()
            _ = try await store.delete(name, expectedVersion: .any, mode: .soft)
            #expect(try await store.read(name).isEmpty)
        }
    }

    @Test(arguments: Backends.all)
    func scavengeRemovesHiddenEventsAndKeepsPositions(backend: Backend) async throws {
        try await backend.withStore { store in
            let capped = try stream("capped-1")
            let truncated = try stream("trunc-1")
            let soft = try stream("soft-1")
            let hard = try stream("hard-1")
            let kept = try stream("kept-1")
            for (index, name) in [capped, truncated, soft, hard, kept].enumerated() {
                _ = try await store.append(samples(10, type: "Type\(index)"), to: name, expectedVersion: .noStream)
            }
            try await store.setMetadata(StreamMetadata(maxCount: 4), for: capped)
            try await store.setMetadata(StreamMetadata(truncateBefore: 8), for: truncated)
            _ = try await store.delete(soft, expectedVersion: .any, mode: .soft)
            _ = try await store.delete(hard, expectedVersion: .any, mode: .hard)
            let before = try await store.readAll(from: 1, limit: .max)
            let visibleBefore = try await Self.visibleReads(store, [capped, truncated, soft, hard, kept])

            let report = try await store.scavenge()
            #expect(report.eventsRemoved == 6 + 7 + 10 + 10)

            // Survivors keep their positions, and stream reads are unchanged.
            let after = try await store.readAll(from: 1, limit: .max)
            let removed = Set(before.map(\.position)).subtracting(after.map(\.position))
            #expect(removed.count == 33)
            #expect(after == before.filter { !removed.contains($0.position) })
            #expect(try await Self.visibleReads(store, [capped, truncated, soft, hard, kept]) == visibleBefore)
            // The space is gone from storage: log, stream index, id index and secondary indexes.
            #expect(try await keyCount(store, prefix: [0x04]) == after.count)
            #expect(try await streamIndexPositions(store).sorted() == after.map(\.position))
            #expect(try await keyCount(store, prefix: [0x05]) == after.count)
            // Each survivor is named once by its category's index runs and once by its type's; nothing else is.
            let survivors = after.map(\.position)
            #expect(try await secondaryIndexPositions(store, kind: 0x01).sorted() == survivors)
            #expect(try await secondaryIndexPositions(store, kind: 0x02).sorted() == survivors)
            #expect(try await store.readEvents(ofType: "Type3", from: 1, limit: 100).isEmpty)
            #expect(try await store.readCategory("capped", from: 1, limit: 100).map(\.version) == [7, 8, 9, 10])
            // A second scavenge has nothing to do; the recreated soft-deleted stream continues its versions.
            #expect(try await store.scavenge().eventsRemoved == 0)
            #expect(try await store.append(sample(), to: soft, expectedVersion: .noStream).version == 11)
            #expect(try await store.read(soft).map(\.version) == [11])
        }
    }

    static func visibleReads(_ store: KeyValueEventStore, _ names: [StreamName]) async throws -> [[RecordedEvent]] {
        var reads: [[RecordedEvent]] = []
        for name in names { reads.append(try await store.read(name)) }
        return reads
    }

    @Test(arguments: Backends.all)
    func scavengeReportsAStreamIndexEntryWithoutItsEventAsCorruption(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("dangling-1")
            _ = try await store.append(samples(6), to: name, expectedVersion: .noStream)
            try await store.setMetadata(StreamMetadata(maxCount: 2), for: name)
            // Damage: the log record at position 2 disappears while its stream index entry stays.
            _ = try await store.backend.commit(KeyValueTransaction(writes: [.delete([0x04, 0, 0, 0, 0, 0, 0, 0, 2])]))
            await #expect {
                try await store.scavenge()
            } throws: { error in
                guard case EventStoreError.corrupted(let location, _) = error else { return false }
                return location == "global position 2"
            }
        }
    }

    @Test(arguments: Backends.all)
    func scavengeKeepsStorageBoundedUnderChurn(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("ticker-1")
            try await store.setMetadata(StreamMetadata(maxCount: 20), for: name)
            // Seeded event ids: random ids give the event-id index a different shape, and the page file a footprint
            // a page or two apart, on every run; with these every run stores the same keys in the same order.
            var ids = SeededUUIDs(seed: 1)
            let rounds = 12
            var logKeysAfterScavenge: [Int] = []
            var storageAfterScavenge: [Int] = []
            for round in 0..<rounds {
                for batch in 0..<10 {
                    let events = samples(10, prefix: "\(round)-\(batch)", ids: &ids)
                    _ = try await store.append(events, to: name, expectedVersion: .any)
                }
                try await store.scavenge()
                logKeysAfterScavenge.append(try await keyCount(store, prefix: [0x04]))
                if let storageInUse = backend.storageInUse { storageAfterScavenge.append(try await storageInUse(store)) }
            }
            // Storage stops growing: each round appends 100 events but only the newest 20 remain.
            #expect(logKeysAfterScavenge == Array(repeating: 20, count: rounds))
            if storageAfterScavenge.count == rounds {
                // After two warm-up rounds the footprint stays within 10% of round three's. (Pages a checkpoint frees
                // become reusable only once no reader of an older snapshot remains, so the page file needs two
                // rounds to reach its steady state; a file that kept growing by even one page a round fails.)
                let warm = storageAfterScavenge[2]
                #expect(storageAfterScavenge[3...].allSatisfy { $0 <= warm + warm / 10 }, "\(storageAfterScavenge)")
            }
            let last = rounds * 100
            #expect(try await store.read(name).map(\.version) == Array(UInt64(last - 19)...UInt64(last)))
            #expect(try await store.readAll(from: 1, limit: .max).map(\.position) == Array(UInt64(last - 19)...UInt64(last)))
            // A subscription from the start passes over the holes scavenge left.
            var iterator = store.subscribeToAll(bufferSize: 7).makeAsyncIterator()
            #expect(try await iterator.nextEvents(20).map(\.position) == Array(UInt64(last - 19)...UInt64(last)))
            #expect(try await iterator.next() == .caughtUp(through: UInt64(last)))
        }
    }

    @Test(arguments: Backends.all)
    func scavengeRunsOnlineWhileWritersAppend(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("busy-1")
            try await store.setMetadata(StreamMetadata(maxCount: 5), for: name)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    for batch in 0..<50 {
                        _ = try await store.append(samples(4, prefix: "\(batch)"), to: name, expectedVersion: .any)
                    }
                }
                group.addTask {
                    for _ in 0..<10 {
                        try await store.scavenge()
                        await Task.yield()
                    }
                }
                group.addTask {
                    // Reads racing scavenge never report corruption and always return consecutive versions.
                    for _ in 0..<40 {
                        let versions = try await store.read(name).map(\.version)
                        #expect(versions.count <= 5)
                        #expect(zip(versions, versions.dropFirst()).allSatisfy { $0 + 1 == $1 })
                        await Task.yield()
                    }
                }
                try await group.waitForAll()
            }
            try await store.scavenge()
            #expect(try await store.read(name).map(\.version) == Array(196...200))
            #expect(try await keyCount(store, prefix: [0x04]) == 5)
        }
    }
}
