// Creating a store, writing a backup or compacting replaces whatever the new files' names (`wal`, `data.creating`,
// `data.compact`) hold instead of writing through them: a symlink there into a live store wrote into that store
// (found by the second- and fourth-round reviews, twenty-second session).

import EventStore
@testable import EventStoreKV
import Foundation
import Glibc
import Testing

@Suite("Creating a store, a backup or a compacted file through a symlink into a live store")
struct CreationSymlinkTests {
    /// The live store has just been created (or has just checkpointed with a WAL truncation): its WAL is a header
    /// alone, so `orphanWALSize` does not guard it. A directory holding only `wal -> live/wal` is opened writable:
    /// createDataFile truncates the live WAL and writes a header with its own salt before `wal.lockForWriting()`
    /// refuses. The live writer then logs and acknowledges commits under its own salt behind the foreign header;
    /// after a crash its recovery takes the WAL for a stale generation and drops them silently.
    @Test("creating a store whose wal is a symlink to a live store's wal does not write into it")
    func creationThroughSymlinkedWAL() async throws {
        let live = TemporaryDirectory("live-create-wal")
        let linked = TemporaryDirectory("linked-create-wal")
        defer {
            live.remove()
            linked.remove()
        }
        let options = smallOptions()
        let store = try await PageFileKeyValueStore.open(directory: live.path, options: options)
        let walBefore = try Data(contentsOf: URL(fileURLWithPath: live.file("wal")))
        try linked.link("wal", to: "wal", in: live)

        var refusal: (any Error)?
        do {
            let other = try await PageFileKeyValueStore.open(directory: linked.path, options: options)
            try await other.close()
        } catch {
            refusal = error
        }
        let walAfter = try Data(contentsOf: URL(fileURLWithPath: live.file("wal")))

        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))  // acknowledged
        _ = try await store.commit(KeyValueTransaction(writes: [.put([2], [2])]))  // acknowledged
        await store.closeWithoutCheckpoint()  // the process dies
        let reopened = try await PageFileKeyValueStore.open(directory: live.path, options: options)
        let keys = try await allEntries(reopened).map(\.key)
        let report = reopened.recovery
        try await reopened.close()

        #expect(refusal == nil, "creating the linked store failed: \(String(describing: refusal))")
        var link = stat()
        #expect(lstat(linked.file("wal"), &link) == 0 && link.st_mode & S_IFMT == S_IFREG, "the wal is still a link")
        #expect(walAfter == walBefore, "the refused open rewrote the live store's WAL header")
        #expect(keys == [[1], [2]], "the live store lost its acknowledged commits (recovery: \(report))")
    }

    /// The same through the transient name: `data.creating -> live/data` is opened with O_CREAT and truncated to 0
    /// by createDataFile, then renamed (as a symlink) to `data`; the live store's data file is destroyed.
    @Test("creating a store whose data.creating is a symlink to a live store's data file does not truncate it")
    func creationThroughSymlinkedDataCreating() async throws {
        let live = TemporaryDirectory("live-create-data")
        let linked = TemporaryDirectory("linked-create-data")
        defer {
            live.remove()
            linked.remove()
        }
        let options = smallOptions()
        let store = try await PageFileKeyValueStore.open(directory: live.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await store.checkpoint()
        let dataBefore = try Data(contentsOf: URL(fileURLWithPath: live.file("data")))
        try linked.link("data.creating", to: "data", in: live)

        do {
            let other = try await PageFileKeyValueStore.open(directory: linked.path, options: options)
            try await other.close()
        } catch {}
        let dataAfter = try Data(contentsOf: URL(fileURLWithPath: live.file("data")))
        try? await store.close()
        let unchanged = dataAfter == dataBefore
        #expect(
            unchanged,
            "opening the other directory rewrote the live store's data file (\(dataBefore.count) bytes before, \(dataAfter.count) after)")
    }

    /// The same for a backup (of another store) into a destination whose `wal` is a symlink to a live store's WAL
    /// that is a header alone: the backup's DirectoryLock guards the destination directory, not the file its `wal`
    /// reaches, so it truncates the live WAL and writes its own header and records there.
    @Test("a backup into a destination whose wal is a symlink to a live store's wal does not write into it")
    func backupThroughSymlinkedWAL() async throws {
        let live = TemporaryDirectory("live-backup-wal")
        let source = TemporaryDirectory("source-backup-wal")
        let destination = TemporaryDirectory("destination-backup-wal")
        defer {
            live.remove()
            source.remove()
            destination.remove()
        }
        let options = smallOptions()
        let store = try await PageFileKeyValueStore.open(directory: live.path, options: options)
        let walBefore = try Data(contentsOf: URL(fileURLWithPath: live.file("wal")))
        let other = try await PageFileKeyValueStore.open(directory: source.path, options: options)
        _ = try await other.commit(KeyValueTransaction(writes: [.put([9], [9])]))
        try destination.link("wal", to: "wal", in: live)
        do { try await other.backup(to: destination.path) } catch {}
        try await other.close()
        let walAfter = try Data(contentsOf: URL(fileURLWithPath: live.file("wal")))

        #expect(walAfter == walBefore, "the backup rewrote the live store's WAL header")
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))  // acknowledged
        await store.closeWithoutCheckpoint()  // the process dies
        var keys: [Key] = []
        do {
            let reopened = try await PageFileKeyValueStore.open(directory: live.path, options: options)
            keys = try await allEntries(reopened).map(\.key)
            try await reopened.close()
        } catch {
            Issue.record("the live store no longer opens: \(error)")
        }
        #expect(keys == [[1]], "the live store lost its acknowledged commit")
    }

    /// Compaction opened `data.compact` following a symlink and truncated and wrote it before taking any lock.
    @Test("a data.compact symlink to a live store's data file leaves that store's data intact")
    func compactionThroughSymlinkedTemporary() async throws {
        let victim = TemporaryDirectory("victim")
        let compacting = TemporaryDirectory("compacting")
        defer {
            victim.remove()
            compacting.remove()
        }
        let options = smallOptions()
        let other = try await PageFileKeyValueStore.open(directory: victim.path, options: options)
        _ = try await other.commit(KeyValueTransaction(writes: [.put([9], [9])]))
        try await other.checkpoint()
        let before = try Data(contentsOf: URL(fileURLWithPath: victim.file("data")))

        let store = try await PageFileKeyValueStore.open(directory: compacting.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        // Placed while the store is open (open removes a leftover data.compact).
        try compacting.link("data.compact", to: "data", in: victim)
        _ = try await store.compact()
        #expect(try await store.get([1])?.value == [1])
        try await store.close()

        let after = try Data(contentsOf: URL(fileURLWithPath: victim.file("data")))
        #expect(after == before, "the other store's data file went from \(before.count) to \(after.count) bytes")
        #expect(try await other.get([9])?.value == [9])
        try await other.close()
    }
}
