// Concurrent snapshot writers on one stream: every change is one transaction conditioned on the index, so none is
// lost and the index always matches the records.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Snapshots: concurrent writers")
struct ConcurrencyTests {
    @Test("concurrent snapshot writers on one stream lose no index entries", arguments: SnapshotBackends.all)
    func concurrentSavesLoseNothing(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            try await Fixtures.fill(stream, in: store, events: 64)
            let snapshots = repository.snapshots

            try await withThrowingTaskGroup(of: Void.self) { group in
                for version: UInt64 in 1...64 {
                    group.addTask {
                        try await snapshots.save(Data("state \(version)".utf8), schemaVersion: 1, of: stream, at: version)
                    }
                }
                try await group.waitForAll()
            }

            #expect(try await repository.snapshotVersions(of: stream) == Array(1...64))
            try await repository.expectIndexMatchesRecords(stream)
            for version: UInt64 in [1, 17, 64] {
                let snapshot = try await snapshots.snapshot(of: stream, at: version)
                #expect(snapshot?.data == Data("state \(version)".utf8))
            }
        }
    }

    @Test("concurrent saves with a retention keep exactly the newest snapshots", arguments: SnapshotBackends.all)
    func concurrentSavesWithRetention(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            try await Fixtures.fill(stream, in: store, events: 48)
            let snapshots = repository.snapshots

            try await withThrowingTaskGroup(of: Void.self) { group in
                for version in (1...48 as ClosedRange<UInt64>).shuffled() {
                    group.addTask {
                        try await snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: version, keepingLast: 5)
                    }
                }
                try await group.waitForAll()
            }

            #expect(try await repository.snapshotVersions(of: stream) == [44, 45, 46, 47, 48])
            try await repository.expectIndexMatchesRecords(stream)
        }
    }

    @Test("concurrent saves and deletes on one stream apply every change", arguments: SnapshotBackends.all)
    func concurrentSavesAndDeletes(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            try await Fixtures.fill(stream, in: store, events: 64)
            let snapshots = repository.snapshots
            for version: UInt64 in 33...64 {
                try await snapshots.save(Data([2]), schemaVersion: 1, of: stream, at: version)
            }

            try await withThrowingTaskGroup(of: Bool.self) { group in
                for version: UInt64 in 1...32 {
                    group.addTask {
                        try await snapshots.save(Data([1]), schemaVersion: 1, of: stream, at: version)
                        return true
                    }
                    group.addTask { try await snapshots.delete(snapshotOf: stream, at: version + 32) }
                }
                for try await succeeded in group { #expect(succeeded) }
            }

            #expect(try await repository.snapshotVersions(of: stream) == Array(1...32))
            try await repository.expectIndexMatchesRecords(stream)
        }
    }

    @Test("concurrent snapshot-all runs on one stream leave a complete index", arguments: SnapshotBackends.all)
    func concurrentSnapshotAll(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store)
            try await Fixtures.fill(stream, in: store, events: 60)

            let intervals: [UInt64] = [3, 4, 5, 6]
            try await withThrowingTaskGroup(of: [UInt64].self) { group in
                for interval in intervals {
                    group.addTask { try await repository.snapshotAll(of: stream, every: interval) }
                }
                for try await _ in group {}
            }

            let expected = (1...60 as ClosedRange<UInt64>).filter { version in
                intervals.contains { version % $0 == 0 }
            }
            #expect(try await repository.snapshotVersions(of: stream) == expected)
            try await repository.expectIndexMatchesRecords(stream)
        }
    }

    @Test("loads racing with pruning never report a missing snapshot as corruption", arguments: SnapshotBackends.all)
    func loadsDuringPruning(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let count: UInt64 = 300
            try await Fixtures.fill(stream, in: store, events: count)
            let states = (1...count).reduce(into: [Ledger()]) { states, version in
                var next = states[states.count - 1]
                next.apply(Fixtures.event(number: version))
                states.append(next)
            }
            let repository = try Fixtures.repository(store)
            let snapshots = repository.snapshots
            let encoded = try states.map { try repository.schema.encode($0) }

            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    // Each save removes the previous snapshot: a reader that chose it must start again, not fail.
                    for version in 1...count {
                        try await snapshots.save(
                            encoded[Int(version)], schemaVersion: 1, of: stream, at: version, keepingLast: 1)
                    }
                }
                for _ in 0..<2 {
                    group.addTask {
                        for _ in 0..<150 {
                            let loaded = try await repository.load(stream)
                            #expect(loaded.state == states[Int(loaded.version)])
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await repository.snapshotVersions(of: stream) == [count])
        }
    }
}
