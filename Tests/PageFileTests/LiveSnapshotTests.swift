// Read-only snapshots beside a writer (ReadOnlySnapshot.swift, ReaderPins.swift): refresh() follows the writer's
// commits and moves to its checkpoints, a pinned snapshot keeps its pages however far the writer goes (also across
// the writer's restart), an unpinned one gets snapshotExpired and never another state's data, and a reader running
// against a writer that commits and checkpoints all the time only ever sees whole commits.

import EventStore
@testable import EventStoreKV
import Dispatch
import Foundation
import Synchronization
import Testing

// Serialized: several of these tests keep a core busy with a writer and readers, and run side by side they starve
// the cooperative pool that wall-clock lease tests elsewhere in the suite need.
@Suite("page file: read-only snapshots beside a writer", .serialized, .timeLimit(.minutes(3)))
struct LiveSnapshotTests {
    private func readOnly() -> PageFileOptions {
        var options = smallOptions()
        options.readOnly = true
        return options
    }

    private func isExpired(_ error: any Error) -> Bool {
        if case EventStoreError.snapshotExpired = error { return true }
        return false
    }

    @Test("refresh() applies the writer's later commits and tells watchers, and moves to the writer's checkpoints")
    func refreshFollowsTheWriter() async throws {
        let directory = TemporaryDirectory("snapshot-refresh")
        defer { directory.remove() }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        #expect(try await reader.refresh() == 0, "nothing new")
        let opened = try await reader.currentRevision()
        let changes = reader.changes(after: opened, prefix: [])
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([2], [2]), .delete([1])]))
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([3], Array(repeating: 3, count: 20_000))]))
        #expect(try await reader.get([2]) == nil, "a snapshot does not move by itself")
        #expect(try await reader.refresh() == 2)
        #expect(try await reader.get([1]) == nil)
        #expect(try await reader.get([2])?.value == [2])
        #expect(try await reader.get([3])?.value.count == 20_000)
        #expect(try await reader.currentRevision() == (try await writer.currentRevision()))
        var seen = changes.makeAsyncIterator()
        var first: [KeyValueChange] = []
        for _ in 0..<3 { if let change = try await seen.next() { first.append(change) } }
        #expect(first.map(\.key) == [[2], [1], [3]])
        #expect(first.map(\.kind) == [.put, .delete, .put])
        #expect(first.map(\.revision) == [opened + 1, opened + 1, opened + 2])
        #expect(try await reader.refresh() == 0)

        // A checkpoint of exactly what the snapshot holds: the store moves to it, and its watchers go on.
        try await writer.checkpoint()
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([4], [4])]))
        #expect(try await reader.refresh() == 1)
        #expect(try reader.statistics().checkpoints == (try writer.statistics().checkpoints))
        #expect(try await reader.get([3])?.value.count == 20_000)
        #expect(try await seen.next()?.key == [4])

        // A checkpoint holding a commit the snapshot never took in: the store moves to it, and its watchers end with
        // historyUnavailable, so they re-read.
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([5], [5])]))
        try await writer.checkpoint()
        _ = try await writer.commit(KeyValueTransaction(writes: [.delete([2])]))
        #expect(try await reader.refresh() == 2)
        #expect(try await reader.get([5])?.value == [5])
        #expect(try await reader.get([2]) == nil)
        #expect(try await reader.currentRevision() == (try await writer.currentRevision()))
        await #expect { _ = try await seen.next() } throws: { error in
            guard case KeyValueStoreError.historyUnavailable = error else { return false }
            return true
        }
        // A watcher from the new checkpoint on gets the commit after it.
        let checkpointRevision = try await reader.currentRevision() - 1
        var later = reader.changes(after: checkpointRevision, prefix: []).makeAsyncIterator()
        #expect(try await later.next()?.key == [2])
        try await reader.close()
        await #expect { try await writer.refresh() } throws: { error in
            guard case EventStoreError.invalidArgument = error else { return false }
            return true
        }
        try await writer.close()
    }

    @Test("a writer's checkpoints between a reader's meta and its WAL read make the open start again, not miss commits")
    func checkpointDuringOpen() async throws {
        for checkpoints in [1, 2] {
            let directory = TemporaryDirectory("snapshot-open-race")
            defer { directory.remove() }
            let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
            _ = try await writer.commit(KeyValueTransaction(writes: [.put([1], [1])]))
            try await writer.checkpoint()
            // Acknowledged before the reader opens, and only in the WAL: the checkpoint below moves it into a new
            // meta and starts a new WAL generation after the reader has read the old meta. With two, the WAL's
            // header names a checkpoint newer than that meta, which a crash recovery would call damage.
            _ = try await writer.commit(KeyValueTransaction(writes: [.put([2], [2])]))
            let reads = SharedCounter()
            var options = readOnly()
            options.faults = IOFaultPlan([], beforeRead: { path, _ in
                guard path.hasSuffix("/wal"), reads.value.add(1, ordering: .relaxed).newValue == 1 else { return }
                runToEnd {
                    for round in 1...checkpoints {
                        _ = try? await writer.commit(KeyValueTransaction(writes: [.put([3], [UInt8(round)])]))
                        try? await writer.checkpoint()
                    }
                }
            })
            let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
            #expect(reads.value.load(ordering: .relaxed) >= 2, "the open read the WAL again")
            #expect(try await reader.get([2])?.value == [2], "checkpoints: \(checkpoints)")
            #expect(try await reader.get([3])?.value == [UInt8(checkpoints)])
            try await reader.close()
            try await writer.close()
        }
    }

    @Test("an event store on a read-only snapshot reads a writer's appends after refresh(), and its subscriptions see them")
    func eventStoreBesideAWriter() async throws {
        let directory = TemporaryDirectory("snapshot-events")
        defer { directory.remove() }
        let writerEngine = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let writer = KeyValueEventStore(backend: writerEngine)
        let stream = try StreamName("order-1")
        func append(_ count: Int) async throws {
            let events = (0..<count).map { EventData(type: "Placed", data: Data("{\"n\":\($0)}".utf8)) }
            _ = try await writer.append(events, to: stream, expectedVersion: .any)
        }
        try await append(3)
        let readerEngine = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        let reader = KeyValueEventStore(backend: readerEngine)
        #expect(try await reader.read(stream).map(\.version) == [1, 2, 3])
        try await append(2)
        #expect(try await reader.lastPosition() == 3, "the snapshot does not move by itself")
        #expect(try await readerEngine.refresh() == 1)
        #expect(try await reader.read(stream).map(\.version) == [1, 2, 3, 4, 5])

        // A live subscription on the reader is woken by refresh(), like one on the writer by its commits.
        let subscription = await liveSubscription(reader, after: 5, count: 2)
        try await append(1)
        try await append(1)
        var refreshes = 0
        while try await readerEngine.refresh() == 0, refreshes < 100 {
            refreshes += 1
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(try await collect(subscription) == [6, 7])

        // A live subscription goes on across the writer's checkpoints: one holding events the reader never took in,
        // and one of exactly what it had.
        let across = await liveSubscription(reader, after: 7, count: 3)
        try await append(1)
        try await writerEngine.checkpoint()
        try await append(1)
        #expect(try await readerEngine.refresh() == 2)
        try await writerEngine.checkpoint()
        try await append(1)
        #expect(try await readerEngine.refresh() == 1)
        #expect(try await collect(across) == [8, 9, 10])
        #expect(try await reader.read(stream).map(\.version) == Array(1...10))
        try await readerEngine.close()
        try await writerEngine.close()
    }

    @Test("followWriter() keeps a reader's live subscription fed across checkpoints, and ends on cancellation or close")
    func followWriter() async throws {
        let directory = TemporaryDirectory("snapshot-follow")
        defer { directory.remove() }
        let writerEngine = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let writer = KeyValueEventStore(backend: writerEngine)
        let stream = try StreamName("order-1")
        func append() async throws {
            _ = try await writer.append([EventData(type: "Placed", data: Data("{}".utf8))], to: stream, expectedVersion: .any)
        }
        try await append()
        let readerEngine = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        let reader = KeyValueEventStore(backend: readerEngine)
        let following = Task { try await readerEngine.followWriter(checkingEvery: .milliseconds(50)) }
        let subscription = await liveSubscription(reader, after: 1, count: 3)
        try await append()
        try await writerEngine.checkpoint()
        try await append()
        try await writerEngine.checkpoint()
        try await append()
        #expect(try await collect(subscription) == [2, 3, 4], "no refresh() by the caller")
        following.cancel()
        try await following.value
        // Closing the store ends it too.
        let again = Task { try await readerEngine.followWriter(checkingEvery: .milliseconds(50)) }
        try await readerEngine.close()
        try await again.value
        await #expect { try await writerEngine.followWriter() } throws: { error in
            guard case EventStoreError.invalidArgument = error else { return false }
            return true
        }
        try await writerEngine.close()
    }

    @Test("refresh() with nothing new reads one chunk of the WAL, not the older generation's bytes the file still holds")
    func refreshReadsLittle() async throws {
        let directory = TemporaryDirectory("snapshot-refresh-cost")
        defer { directory.remove() }
        var options = PageFileOptions(pageSize: 4096, checkpointThresholdMB: 32)
        options.durability = .none
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        for index in 0..<100 {
            _ = try await writer.commit(
                KeyValueTransaction(writes: [.put(Array("key-\(index)".utf8), Array(repeating: 7, count: 100_000))]))
        }
        // The checkpoint keeps the WAL file (10 MB, under twice the threshold) for the next generation.
        try await writer.checkpoint()
        _ = try await writer.commit(KeyValueTransaction(writes: [.put(Array("small".utf8), [1])]))
        let walReads = SharedCounter()
        var readOnly = options
        readOnly.readOnly = true
        readOnly.faults = IOFaultPlan([], beforeRead: { path, count in
            if path.hasSuffix("/wal") { walReads.value.add(count, ordering: .relaxed) }
        })
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly)
        #expect(try await reader.get(Array("small".utf8))?.value == [1])
        walReads.value.store(0, ordering: .relaxed)
        #expect(try await reader.refresh() == 0)
        #expect(walReads.value.load(ordering: .relaxed) <= PageFileKeyValueStore.walChunk)
        // A record larger than a chunk is still read whole.
        _ = try await writer.commit(KeyValueTransaction(writes: [.put(Array("large".utf8), Array(repeating: 9, count: 300_000))]))
        _ = try await writer.commit(KeyValueTransaction(writes: [.put(Array("after".utf8), [2])]))
        #expect(try await reader.refresh() == 2)
        #expect(try await reader.get(Array("large".utf8))?.value == Array(repeating: 9, count: 300_000))
        #expect(try await reader.get(Array("after".utf8))?.value == [2])
        try await reader.close()
        try await writer.close()
    }

    @Test("a writer that checkpoints during every attempt to open a snapshot gets snapshotExpired after the last one")
    func openGivesUp() async throws {
        let directory = TemporaryDirectory("snapshot-open-gives-up")
        defer { directory.remove() }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        let reads = SharedCounter()
        var options = readOnly()
        options.faults = IOFaultPlan([], beforeRead: { path, _ in
            guard path.hasSuffix("/wal") else { return }
            reads.value.add(1, ordering: .relaxed)
            runToEnd { try? await writer.checkpoint() }
        })
        await #expect { try await PageFileKeyValueStore.open(directory: directory.path, options: options) } throws: {
            isExpired($0)
        }
        #expect(reads.value.load(ordering: .relaxed) == PageFileKeyValueStore.snapshotOpenAttempts)
        try await writer.close()
    }

    /// The open checked that its meta was still the newest only after it had replayed its WAL records, the longest
    /// part of an open, so a writer checkpointing more often than an open takes (a loaded machine, a large WAL) made
    /// every attempt expire. The check now comes once the bytes are read; the replay reads pages through the guard.
    @Test("checkpoints while an open replays its WAL do not overtake it: it opens on the state it read, then refreshes")
    func checkpointsDuringTheReplay() async throws {
        let directory = TemporaryDirectory("snapshot-open-replay")
        defer { directory.remove() }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let keys = (0..<300).map { Array("key-\(10_000 + $0)".utf8) }
        for chunk in stride(from: 0, to: 200, by: 50) {
            _ = try await writer.commit(KeyValueTransaction(writes: keys[chunk..<chunk + 50].map { .put($0, [1]) }))
        }
        try await writer.checkpoint()
        // These are in the WAL only: the open replays them, and reads the checkpoint's pages to do so.
        for chunk in stride(from: 200, to: 300, by: 50) {
            _ = try await writer.commit(KeyValueTransaction(writes: keys[chunk..<chunk + 50].map { .put($0, [2]) }))
        }
        let walRead = Atomic<Bool>(false)
        let checkpoints = SharedCounter()
        var options = readOnly()
        options.faults = IOFaultPlan([], beforeRead: { path, count in
            if path.hasSuffix("/wal") { walRead.store(true, ordering: .relaxed) }
            // The first page read after the WAL's (not the guard's two meta pages) is the replay's. Three checkpoints,
            // each rewriting every key, so the pages the snapshot's tree had are freed and then reused, if unpinned.
            guard path.hasSuffix("/data"), count == 4096, walRead.load(ordering: .relaxed),
                checkpoints.value.load(ordering: .relaxed) == 0
            else { return }
            runToEnd {
                for _ in 0..<3 {
                    _ = try? await writer.commit(KeyValueTransaction(writes: keys.map { .put($0, [3]) }))
                    if (try? await writer.checkpoint()) != nil { checkpoints.value.add(1, ordering: .relaxed) }
                }
            }
        })
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        #expect(checkpoints.value.load(ordering: .relaxed) == 3, "the writer checkpointed during the replay")
        // The state the open read: the checkpoint and its WAL records, none of the writer's later commits.
        let values = try await reader.scan(KeyRange(from: [], to: nil), direction: .forward, limit: 1_000)
        #expect(values.map(\.key) == keys)
        #expect(values.map(\.value) == Array(repeating: [1], count: 200) + Array(repeating: [2], count: 100))
        #expect(try await reader.refresh() > 0)
        let refreshed = try await reader.scan(KeyRange(from: [], to: nil), direction: .forward, limit: 1_000)
        #expect(refreshed.map(\.value) == Array(repeating: [3], count: 300))
        try await reader.close()
        try await writer.close()
    }

    @Test("a snapshot's statistics are its own: its checkpoint's free pages after a writer moved on, the WAL it took in")
    func statisticsOfASnapshot() async throws {
        let directory = TemporaryDirectory("snapshot-statistics")
        defer { directory.remove() }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let keys = (0..<400).map { Array("key-\(10_000 + $0)".utf8) }
        func rewrite(_ fill: UInt8) async throws {
            _ = try await writer.commit(KeyValueTransaction(writes: keys.map { .put($0, Array(repeating: fill, count: 100)) }))
            try await writer.checkpoint()
        }
        try await rewrite(1)
        try await rewrite(2)
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        let opened = try reader.statistics()
        #expect(opened.freePages > 0)
        #expect(opened.walBytes == (try writer.statistics().walBytes))
        for index: UInt8 in 2...10 {
            _ = try await writer.commit(KeyValueTransaction(writes: [.put([index], Array(repeating: index, count: 1_000))]))
        }
        #expect(try await reader.refresh() == 9)
        #expect(try reader.statistics().walBytes == (try writer.statistics().walBytes))
        #expect(reader.metrics().walBytes == writer.metrics().walBytes)
        // Two more checkpoints reuse the pages of the snapshot's free list.
        try await rewrite(3)
        try await rewrite(4)
        let later = try reader.statistics()
        #expect(later.freePages == opened.freePages)
        #expect(later.pageCount == opened.pageCount && later.checkpoints == opened.checkpoints)
        // Moved to the writer's newest checkpoint, it reports that one.
        #expect(try await reader.refresh() == 2)
        let moved = try reader.statistics()
        let written = try writer.statistics()
        #expect(moved.checkpoints == written.checkpoints && moved.pageCount == written.pageCount)
        #expect(moved.freePages == written.freePages && moved.walBytes == written.walBytes)
        try await reader.close()
        try await writer.close()
    }

    @Test("a snapshot's backup, taken beside the writer, holds its checkpoint and the WAL records it took in")
    func backupOfASnapshot() async throws {
        let directory = TemporaryDirectory("snapshot-backup")
        let copy = TemporaryDirectory("snapshot-backup-copy")
        let late = TemporaryDirectory("snapshot-backup-late")
        defer {
            directory.remove()
            copy.remove()
            late.remove()
        }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await writer.checkpoint()
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([2], Array(repeating: 2, count: 10_000))]))
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([3], [3]), .delete([1])]))
        #expect(try await reader.refresh() == 1)
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([4], [4])]))
        try await reader.backup(to: copy.path)
        let restored = try await PageFileKeyValueStore.open(directory: copy.path, options: smallOptions())
        #expect(restored.recovery.replayedTransactions == 2, "the snapshot's WAL records, replayed by the copy")
        #expect(try await restored.get([1]) == nil)
        #expect(try await restored.get([2])?.value == Array(repeating: 2, count: 10_000))
        #expect(try await restored.get([3])?.value == [3])
        #expect(try await restored.get([4]) == nil, "committed after the snapshot's last refresh")
        #expect(try await restored.verify().isClean)
        try await restored.close()

        // A writer's checkpoint since the last refresh, and a commit that overwrites the snapshot's WAL records:
        // refused, and the destination is left as it was found, so the same backup after a refresh goes into it.
        try await writer.checkpoint()
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([5], [5])]))
        await #expect { try await reader.backup(to: late.path) } throws: { isExpired($0) }
        #expect((try? FileManager.default.contentsOfDirectory(atPath: late.path))?.isEmpty ?? true)
        #expect(try await reader.refresh() == 2)
        try await reader.backup(to: late.path)
        try await reader.close()
        let restoredLate = try await PageFileKeyValueStore.open(directory: late.path, options: smallOptions())
        #expect(try await restoredLate.get([4])?.value == [4])
        #expect(try await restoredLate.get([5])?.value == [5])
        #expect(try await restoredLate.verify().isClean)
        try await restoredLate.close()
        try await writer.close()
    }

    /// How a snapshot in `pagesOfASnapshot` stands towards the writer.
    enum Pinning: String, CaseIterable, CustomTestStringConvertible {
        /// Pinned where the writer looks.
        case pinned
        /// No lock file to pin in.
        case unpinned
        /// Pinned in a lock file the writer does not look at (as with a writer of an older build).
        case unseen

        var testDescription: String { rawValue }
    }

    @Test(
        "a pinned snapshot keeps its pages while a writer checkpoints past it; otherwise it expires, never reads another state",
        arguments: Pinning.allCases)
    func pagesOfASnapshot(_ pinning: Pinning) async throws {
        let directory = TemporaryDirectory("snapshot-reuse")
        defer { directory.remove() }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let keys = Self.manyKeys
        try await rewrite(writer, with: 0xA)
        // Without the lock file (a copied store, a directory this process may not open it in) nothing is pinned. A
        // new lock file is not the one the writer holds open, so it never sees the pin there.
        if pinning != .pinned { try FileManager.default.removeItem(atPath: directory.path + "/lock") }
        if pinning == .unseen { #expect(FileManager.default.createFile(atPath: directory.path + "/lock", contents: nil)) }
        // The snapshot has read no page of the tree yet; the writer then rewrites every key twice, and its second
        // checkpoint would put the new tree into the pages the first one freed: the snapshot's.
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        try await rewrite(writer, with: 0xB)
        try await rewrite(writer, with: 0xC)

        if pinning == .pinned {
            #expect(try await reader.get(keys[1_234])?.value == Array(repeating: 0xA, count: 100))
            let all = try await reader.scan(.prefix(Array("key-".utf8)), direction: .forward, limit: .max)
            #expect(all.count == keys.count && all.allSatisfy { $0.value == Array(repeating: 0xA, count: 100) })
            #expect(try await reader.verify().isClean)
        } else {
            await #expect { _ = try await reader.get(keys[1_234]) } throws: { isExpired($0) }
            await #expect { _ = try await reader.scan(.prefix(Array("key-".utf8)), direction: .forward, limit: .max) } throws: {
                isExpired($0)
            }
            await #expect { _ = try await reader.verify() } throws: { isExpired($0) }
        }
        try await reader.close()

        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        #expect(try await reopened.get(keys[1_234])?.value == Array(repeating: 0xC, count: 100))
        #expect(try await reopened.verify().isClean)
        try await reopened.close()
        try await writer.close()
    }

    @Test("a writer that restarts does not reuse the pages a snapshot pinned before it opened")
    func pinsOutliveTheWritersRestart() async throws {
        let directory = TemporaryDirectory("snapshot-restart")
        defer { directory.remove() }
        var writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let keys = Self.manyKeys
        try await rewrite(writer, with: 0xA)
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        // The snapshot's pages are freed by this checkpoint, then written to disk as free when the writer closes.
        try await rewrite(writer, with: 0xB)
        try await writer.close()
        writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        try await rewrite(writer, with: 0xC)
        try await rewrite(writer, with: 0xD)
        let all = try await reader.scan(.prefix(Array("key-".utf8)), direction: .forward, limit: .max)
        #expect(all.count == keys.count && all.allSatisfy { $0.value == Array(repeating: 0xA, count: 100) })
        try await reader.close()
        try await writer.close()
    }

    @Test("a snapshot's pin goes when its store closes or moves on: the writer then reuses its pages")
    func pinsAreReleased() async throws {
        let directory = TemporaryDirectory("snapshot-release")
        defer { directory.remove() }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let keys = (0..<1_000).map { index in Array("key-\(10_000 + index)".utf8) }
        func rewrite(_ fill: UInt8) async throws -> UInt64 {
            _ = try await writer.commit(KeyValueTransaction(writes: keys.map { .put($0, Array(repeating: fill, count: 100)) }))
            try await writer.checkpoint()
            return try writer.statistics().pageCount
        }
        // Without readers the file settles: each checkpoint reuses what the one before the last freed.
        for fill: UInt8 in 1...3 { _ = try await rewrite(fill) }
        let settled = try await rewrite(4)
        #expect(try await rewrite(5) == settled)

        // A pinned snapshot makes every checkpoint take new pages.
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        let openedAt = try reader.statistics().checkpoints
        #expect(writer.lock?.oldestPinnedEpoch() == openedAt)
        #expect(try writer.statistics().oldestPinnedCheckpoint == openedAt)
        let pinned = [try await rewrite(6), try await rewrite(7), try await rewrite(8)]
        #expect(pinned[2] > pinned[0], "\(pinned)")
        // Moving the snapshot to the newest checkpoint moves its pin: the old snapshot's goes with it.
        #expect(try await reader.refresh() > 0)
        let movedTo = try reader.statistics().checkpoints
        #expect(movedTo > openedAt)
        #expect(writer.lock?.oldestPinnedEpoch() == movedTo)
        // Closing the store takes the pin away, and the file settles again.
        try await reader.close()
        #expect(writer.lock?.oldestPinnedEpoch() == nil)
        #expect(try writer.statistics().oldestPinnedCheckpoint == nil)
        for fill: UInt8 in 9...10 { _ = try await rewrite(fill) }
        let closed = try await rewrite(11)
        #expect(try await rewrite(12) == closed)
        try await writer.close()
    }

    @Test("the writer finds the oldest of several pins, in this process or another")
    func oldestPin() throws {
        let directory = TemporaryDirectory("snapshot-pins")
        defer { directory.remove() }
        try FileManager.default.createDirectory(atPath: directory.path, withIntermediateDirectories: true)
        let lock = try DirectoryLock.acquire(directory: directory.path)
        defer { lock.release() }
        #expect(lock.oldestPinnedEpoch() == nil)
        var pins = [9, 3, 5, 3].map { ReaderPin.take(directory: directory.path, epoch: $0) }
        #expect(pins.allSatisfy { $0 != nil })
        #expect(lock.oldestPinnedEpoch() == 3)
        #expect(pins[0]?.oldestOtherPinnedEpoch == 3 && pins[1]?.oldestOtherPinnedEpoch == 3)
        pins[1] = nil
        #expect(lock.oldestPinnedEpoch() == 3, "another reader still pins 3")
        pins[3] = nil
        #expect(lock.oldestPinnedEpoch() == 5)
        #expect(pins[2]?.oldestOtherPinnedEpoch == 9, "a reader does not see its own pin")
        pins.removeAll()
        #expect(lock.oldestPinnedEpoch() == nil)
    }

    @Test(
        "readers beside a writer that commits, overwrites and checkpoints all the time see only whole commits",
        arguments: [true, false])
    func readersBesideABusyWriter(pinned: Bool) async throws {
        let directory = TemporaryDirectory("snapshot-busy")
        defer { directory.remove() }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        if !pinned { try FileManager.default.removeItem(atPath: directory.path + "/lock") }
        // Commit i writes item i, rewrites item i - 200 (its old overflow page is freed, and reused two checkpoints
        // later) and sets the counter to i: a consistent state holds items 1...counter, exactly those up to
        // counter - 200 rewritten.
        let prefilled = 200
        let commits = 700
        for batch in stride(from: 1, through: prefilled, by: 100) {
            let writes = (batch..<(batch + 100)).map { KeyWrite.put(itemKey($0), item($0, rewritten: false)) }
            _ = try await writer.commit(KeyValueTransaction(writes: writes + [.put(Array("n".utf8), bytes(of: batch + 99))]))
        }
        try await writer.checkpoint()
        // The two sides pace each other, so neither outruns the other however loaded the machine is: the writer runs
        // at most 20 commits ahead of each pass the readers complete, and a reader waits for 5 new commits after
        // each pass (or for the writer's end).
        let passes = SharedCounter()
        let written = SharedCounter()
        let writerEnded = SharedCounter()
        let writing = Task {
            defer { writerEnded.value.store(1, ordering: .relaxed) }
            for index in (prefilled + 1)...commits {
                while (index - prefilled) > passes.value.load(ordering: .relaxed) * 20 + 20 {
                    try await Task.sleep(for: .milliseconds(1))
                }
                _ = try await writer.commit(
                    KeyValueTransaction(writes: [
                        .put(Array("n".utf8), bytes(of: index)),
                        .put(itemKey(index), item(index, rewritten: false)),
                        .put(itemKey(index - prefilled), item(index - prefilled, rewritten: true)),
                    ]))
                written.value.add(1, ordering: .relaxed)
                if index % 50 == 0 { try await writer.checkpoint() }
            }
        }
        var refreshed = 0
        var expired = 0
        var lastSeen = 0
        // Even rounds refresh after every pass, across the writer's checkpoints; odd rounds keep reading one
        // snapshot while the writer goes on (an unpinned one until the writer has reused its pages). Bounded: a
        // writer that fails stops the counter, and the loop must not outlive it.
        for round in 0..<20_000 where lastSeen < commits {
            let reader: PageFileKeyValueStore
            do {
                reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
            } catch let error where isExpired(error) {
                expired += 1
                continue
            }
            var snapshotSeen = -1
            do {
                for _ in 0..<(round % 2 == 0 ? 4 : 1_000) {
                    let counter = try await reader.get(Array("n".utf8)).map { integer($0.value) } ?? 0
                    let items = try await reader.scan(.prefix(Array("item-".utf8)), direction: .forward, limit: .max)
                    #expect(items.count == counter, "items \(items.count), counter \(counter)")
                    for (offset, entry) in items.enumerated() {
                        let index = integer(Array(entry.key.dropFirst(5)))
                        #expect(index == offset + 1)
                        #expect(entry.value == item(index, rewritten: index + prefilled <= counter), "item \(index) of \(counter)")
                    }
                    #expect(counter >= lastSeen, "a later snapshot never goes back")
                    lastSeen = counter
                    passes.value.add(1, ordering: .relaxed)
                    if counter == commits { break }
                    let seen = written.value.load(ordering: .relaxed)
                    while written.value.load(ordering: .relaxed) < seen + 5, writerEnded.value.load(ordering: .relaxed) == 0 {
                        try await Task.sleep(for: .milliseconds(1))
                    }
                    if round % 2 == 0 {
                        if try await reader.refresh() > 0 { refreshed += 1 }
                    } else {
                        #expect(snapshotSeen == -1 || counter == snapshotSeen, "a snapshot does not move")
                        snapshotSeen = counter
                    }
                }
            } catch let error where isExpired(error) {
                expired += 1
            }
            try await reader.close()
        }
        try await writing.value
        try await writer.close()
        #expect(lastSeen == commits)
        #expect(refreshed > 0, "refreshed \(refreshed)")
        // Pinned snapshots never expire; unpinned ones do once the writer reuses their pages.
        #expect(pinned ? expired == 0 : expired > 0, "expired \(expired)")
    }

    @Test("a pinned snapshot's backup never copies pages a writer rewrote, even where the pin was not honoured")
    func backupOfAnUnhonouredPin() async throws {
        let directory = TemporaryDirectory("snapshot-backup-unseen")
        let copy = TemporaryDirectory("snapshot-backup-unseen-copy")
        defer {
            directory.remove()
            copy.remove()
        }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        try await rewrite(writer, with: 0xA)
        // As in pagesOfASnapshot(.unseen): the pin goes into a lock file the writer does not look at.
        try FileManager.default.removeItem(atPath: directory.path + "/lock")
        #expect(FileManager.default.createFile(atPath: directory.path + "/lock", contents: nil))
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        try await rewrite(writer, with: 0xB)
        try await rewrite(writer, with: 0xC)
        await #expect { try await reader.backup(to: copy.path) } throws: { isExpired($0) }
        #expect(!FileManager.default.fileExists(atPath: copy.path + "/data"))
        try await reader.close()
        try await writer.close()
    }

    @Test("a damaged page of a snapshot whose pin the writer honours is corrupted, naming the page, not an expiry")
    func damageUnderAPin() async throws {
        let directory = TemporaryDirectory("snapshot-pinned-damage")
        defer { directory.remove() }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let keys = Self.manyKeys
        try await rewrite(writer, with: 0xA)
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        let root = reader.writer.state.meta.root
        // The writer moves on; the pin keeps the snapshot's pages, its old root among them, as they were.
        try await rewrite(writer, with: 0xB)
        try await rewrite(writer, with: 0xC)
        // Damage to the snapshot's root page, which only the snapshot still uses.
        let data = try #require(FileHandle(forWritingAtPath: directory.path + "/data"))
        try data.seek(toOffset: root * UInt64(reader.pageSize) + 200)
        try data.write(contentsOf: Data(repeating: 0x5A, count: 16))
        try data.close()
        await #expect { _ = try await reader.get(keys[1_234]) } throws: { error in
            guard case EventStoreError.corrupted(let location, _) = error else { return false }
            return location.hasSuffix("page \(root)")
        }
        let report = try await reader.verify()
        #expect(report.problems.contains { $0.contains("page \(root)") }, "\(report.problems)")
        try await reader.close()
        try await writer.close()
    }

    @Test("pages an earlier writer reused under a pin it did not honour are an expiry, also once an honouring writer holds the store")
    func reuseBeforeAnHonouringWriter() async throws {
        let directory = TemporaryDirectory("snapshot-honour-later")
        let copy = TemporaryDirectory("snapshot-honour-later-copy")
        defer {
            directory.remove()
            copy.remove()
        }
        let first = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let big = (0..<200).map { Array("big-\(10_000 + $0)".utf8) }
        _ = try await first.commit(KeyValueTransaction(writes: big.map { .put($0, Array(repeating: 7, count: 9_000)) }))
        try await first.checkpoint()
        // As in pagesOfASnapshot(.unseen): the pin goes into a lock file this writer does not look at, as a writer of
        // an older build looks at none.
        try FileManager.default.removeItem(atPath: directory.path + "/lock")
        #expect(FileManager.default.createFile(atPath: directory.path + "/lock", contents: nil))
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        for key in big { _ = try await reader.get(key) }  // the tree's pages are cached now; the values are not
        // The writer frees the overflow pages, reuses them for leaves and free-list pages, and exits.
        _ = try await first.commit(KeyValueTransaction(writes: big.map { .put($0, [1]) }))
        try await first.checkpoint()
        for batch in 0..<20 {
            let writes = (0..<100).map { KeyWrite.put(Array("new-\(batch)-\(10_000 + $0)".utf8), Array(repeating: 3, count: 60)) }
            _ = try await first.commit(KeyValueTransaction(writes: writes))
        }
        try await first.checkpoint()
        try await first.checkpoint()
        try await first.close()
        // A writer that honours pins holds the store now, but it opened after the snapshot's checkpoint: it cannot
        // vouch for what happened before.
        let second = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        var outcomes: [String: Int] = [:]
        for key in big {
            do {
                _ = try await reader.get(key)
                outcomes["value", default: 0] += 1
            } catch let error where isExpired(error) {
                outcomes["expired", default: 0] += 1
            } catch {
                outcomes["\(error)", default: 0] += 1
            }
        }
        #expect(outcomes["expired", default: 0] > 0)
        #expect(outcomes.keys.allSatisfy { $0 == "value" || $0 == "expired" }, "\(outcomes)")
        await #expect { try await reader.backup(to: copy.path) } throws: { isExpired($0) }
        await #expect { _ = try await reader.verify() } throws: { isExpired($0) }
        try await reader.close()
        try await second.close()
    }

    @Test("a snapshot's cache counters run from its open, across refresh() to the writer's checkpoints")
    func cacheCountersAcrossRefresh() async throws {
        let directory = TemporaryDirectory("snapshot-cache-counters")
        defer { directory.remove() }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let keys = (0..<300).map { Array("key-\(10_000 + $0)".utf8) }
        _ = try await writer.commit(KeyValueTransaction(writes: keys.map { .put($0, Array(repeating: 1, count: 100)) }))
        try await writer.checkpoint()
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        for key in keys { _ = try await reader.get(key) }
        let before = reader.metrics()
        #expect(before.cacheHits > 0 && before.cacheMisses > 0)
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await writer.checkpoint()
        #expect(try await reader.refresh() == 1)
        for key in keys.prefix(10) { _ = try await reader.get(key) }
        let after = reader.metrics()
        #expect(after.cacheHits >= before.cacheHits && after.cacheMisses > before.cacheMisses, "\(before) \(after)")
        #expect(try reader.statistics().cacheHits == after.cacheHits)
        try await reader.close()
        try await writer.close()
    }

    @Test("statistics() while refresh() moves to a checkpoint report one snapshot: never one's WAL with another's revision")
    func statisticsDuringRefresh() async throws {
        let directory = TemporaryDirectory("snapshot-statistics-race")
        defer { directory.remove() }
        var options = smallOptions()
        options.durability = .none
        options.checkpointThresholdMB = 64
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([0], [0])]))
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly())
        let before = try reader.statistics()
        try await writer.checkpoint()
        for index in 0..<2_000 {
            _ = try await writer.commit(KeyValueTransaction(writes: [.put(Array("k-\(index)".utf8), [1, 2, 3])]))
        }
        // A thread samples statistics() for as long as the refresh takes (replaying 2,000 records), pausing between
        // samples so that it does not take a core from the tests running beside it.
        let stop = SharedCounter()
        let samples = Locked<[PageFileStatistics]>([])
        let sampler = Thread {
            while stop.value.load(ordering: .relaxed) == 0 {
                if let statistics = try? reader.statistics() { samples.withLock { $0.append(statistics) } }
                usleep(20)
            }
            stop.value.store(2, ordering: .relaxed)
        }
        sampler.start()
        #expect(try await reader.refresh() == 2_000)
        let after = try reader.statistics()
        stop.value.store(1, ordering: .relaxed)
        while stop.value.load(ordering: .relaxed) != 2 { try await Task.sleep(for: .milliseconds(1)) }
        let mixed = samples.withLock { $0 }.filter { sample in
            let facts = [sample.checkpoints, sample.walBytes, sample.revision, sample.pageCount]
            return facts != [before.checkpoints, before.walBytes, before.revision, before.pageCount]
                && facts != [after.checkpoints, after.walBytes, after.revision, after.pageCount]
        }
        #expect(mixed.isEmpty, "\(mixed.count) samples mix two snapshots, the first: \(String(describing: mixed.first))")
        try await reader.close()
        try await writer.close()
    }

    /// 2,000 keys: their tree spans many pages of the small test stores.
    private static let manyKeys = (0..<2_000).map { index in Array("key-\(10_000 + index)".utf8) }

    /// Writes every key of `manyKeys` with 100 bytes of `fill`, in commits of 100, then checkpoints: the writer's
    /// whole tree is new, in pages the checkpoint before the last one freed.
    private func rewrite(_ writer: PageFileKeyValueStore, with fill: UInt8) async throws {
        for batch in stride(from: 0, to: Self.manyKeys.count, by: 100) {
            let writes = Self.manyKeys[batch..<(batch + 100)].map { KeyWrite.put($0, Array(repeating: fill, count: 100)) }
            _ = try await writer.commit(KeyValueTransaction(writes: writes))
        }
        try await writer.checkpoint()
    }

    /// Subscribes `reader` to the log after `position` and returns once the subscription has read the history:
    /// what it delivers from then on comes live. The task collects the next `count` positions.
    private func liveSubscription(_ reader: KeyValueEventStore, after position: UInt64, count: Int) async
        -> Task<[UInt64], any Error>
    {
        let (caughtUp, signal) = AsyncStream<Void>.makeStream()
        let task = Task {
            defer { signal.finish() }
            var positions: [UInt64] = []
            for try await message in reader.subscribeToAll(from: .after(position)) {
                switch message {
                case .caughtUp: signal.yield()
                case .event(let event):
                    positions.append(event.position)
                    if positions.count == count { return positions }
                }
            }
            return positions
        }
        var waiting = caughtUp.makeAsyncIterator()
        _ = await waiting.next()
        return task
    }

    /// What `subscription` collects. Bounded: a subscription that is never woken is cancelled instead of hanging
    /// the suite.
    private func collect(_ subscription: Task<[UInt64], any Error>) async throws -> [UInt64] {
        let deadline = Task {
            try await Task.sleep(for: .seconds(20))
            subscription.cancel()
        }
        defer { deadline.cancel() }
        return try await subscription.value
    }

    private func itemKey(_ index: Int) -> [UInt8] { Array("item-".utf8) + bytes(of: index) }

    /// 1,500 bytes: an overflow page of its own.
    private func item(_ index: Int, rewritten: Bool) -> [UInt8] {
        Array(repeating: UInt8(index % 251), count: 1_499) + [rewritten ? 1 : 0]
    }

    private func bytes(of value: Int) -> [UInt8] { withUnsafeBytes(of: UInt64(value).bigEndian) { Array($0) } }

    private func integer(_ bytes: [UInt8]) -> Int { bytes.reduce(0) { $0 << 8 | Int($1) } }
}

/// A counter tasks and threads share: the readers' passes, the reads of a file.
private final class SharedCounter: Sendable {
    let value = Atomic<Int>(0)
}

/// Runs the writer's `action` to its end from a read hook. The hook runs on the reader's own thread (the open and
/// refresh() run off the cooperative pool), so waiting there blocks no task the action needs.
private func runToEnd(_ action: @escaping @Sendable () async -> Void) {
    let done = DispatchSemaphore(value: 0)
    Task {
        await action()
        done.signal()
    }
    done.wait()
}
