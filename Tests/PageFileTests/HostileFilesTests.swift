// A damaged newest meta page at an unchanged checkpoint LSN, and store files that are symlinks into a live store or
// are not regular files. Found by a review of the page file's maintenance paths (twenty-second session).

import EventStore
@testable import EventStoreKV
import Foundation
import Glibc
import Synchronization
import Testing

@Suite("Hostile files and a damaged newest meta")
struct HostileFilesTests {
    /// Two checkpoints in a row with no commit between them (checkpoint(), verify(), backup(), compact() and close()
    /// each checkpoint unconditionally) leave both meta slots at the same checkpoint LSN. Commits acknowledged after
    /// them live only in the WAL generation of the newer meta, whose header then starts at exactly the older meta's
    /// checkpoint LSN + 1. If the newer meta is damaged, recovery falls back to the older one, takes the WAL for a
    /// stale generation (different salt, first LSN not past it) and drops those commits, silently, then its recovery
    /// checkpoint makes the loss permanent. Due: `corrupted`, as when the header's first LSN is past the older meta's.
    @Test("a damaged newest meta at the same checkpoint LSN as the older one does not silently drop acknowledged commits")
    func damagedNewestMetaAtSameLSN() async throws {
        let directory = TemporaryDirectory("newest-meta-same-lsn")
        defer { directory.remove() }
        let options = smallOptions()
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await store.checkpoint()  // epoch 1, slot 1, checkpoint LSN 1
        try await store.checkpoint()  // epoch 2, slot 0, checkpoint LSN 1 again: the durable state
        _ = try await store.commit(KeyValueTransaction(writes: [.put([2], [2])]))  // acknowledged, in the WAL only
        _ = try await store.commit(KeyValueTransaction(writes: [.put([3], [3])]))  // acknowledged, in the WAL only
        await store.closeWithoutCheckpoint()

        let url = URL(fileURLWithPath: directory.file("data"))
        var data = [UInt8](try Data(contentsOf: url))
        data[200] ^= 0x01  // inside meta page 0 (epoch 2), so its checksum fails
        try Data(data).write(to: url)

        var reopened: PageFileKeyValueStore?
        do {
            reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        } catch EventStoreError.corrupted {
            return  // the loss is reported: what is due
        }
        let store2 = try #require(reopened)
        let keys = try await allEntries(store2).map(\.key)
        let report = store2.recovery
        try await store2.close()
        #expect(
            keys == [[1], [2], [3]],
            "acknowledged commits 2 and 3 were dropped without an error (recovery: \(report))")
    }

    /// The same with nothing but ordinary opens and closes: close() checkpoints unconditionally, so a store opened and
    /// closed without a commit (or the admin tool's `compact`, which checkpoints, compacts and closes) leaves both meta
    /// slots at one checkpoint LSN; the commits of the next open are then lost with its newest meta page.
    @Test("after an open and close without commits, a damaged newest meta does not silently drop the next commits")
    func damagedNewestMetaAfterIdleOpen() async throws {
        let directory = TemporaryDirectory("newest-meta-idle-open")
        defer { directory.remove() }
        let options = smallOptions()
        var store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await store.close()  // checkpoint at LSN 1
        store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        try await store.close()  // another checkpoint at LSN 1, no commit in between
        store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([2], [2])]))  // acknowledged, in the WAL only
        await store.closeWithoutCheckpoint()  // the process dies

        let newest = try #require(try newestMeta(of: directory))
        let url = URL(fileURLWithPath: directory.file("data"))
        var data = [UInt8](try Data(contentsOf: url))
        data[Int(newest.epoch % 2) * 4096 + 200] ^= 0x01  // the newest meta page's checksum fails
        try Data(data).write(to: url)

        let reopened: PageFileKeyValueStore
        do {
            reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        } catch EventStoreError.corrupted {
            return  // the loss is reported: what is due
        }
        let keys = try await allEntries(reopened).map(\.key)
        try await reopened.close()
        #expect(keys == [[1], [2]], "acknowledged commit 2 was dropped without an error")
    }

    /// The writer's lock is a flock on `<dir>/lock`, but the data file is opened through whatever `<dir>/data` names.
    /// A directory whose `data` is a symlink to a live store's data file (as `cp -a` or `rsync -a` leave a "copy" of a
    /// store whose data file was moved to another disk and linked back) therefore opens writable beside that store's
    /// writer: its recovery checkpoint (its own WAL is another generation) writes a meta page with its own WAL salt
    /// into the live store's file. When the live store next recovers, its own WAL no longer matches the newest meta
    /// and its acknowledged commits are dropped. bbolt and SQLite lock the database file itself, so this cannot
    /// happen there. Due: the open refuses (`storeLocked`, or a typed error naming the symlinked file), and the live
    /// store keeps every acknowledged commit.
    @Test("a directory whose data file is a symlink to a live store's data file does not open writable into it")
    func symlinkedDataFileOfALiveStore() async throws {
        let live = TemporaryDirectory("live")
        let linked = TemporaryDirectory("linked")
        defer {
            live.remove()
            linked.remove()
        }
        let options = smallOptions()
        let store = try await PageFileKeyValueStore.open(directory: live.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await store.checkpoint()
        _ = try await store.commit(KeyValueTransaction(writes: [.put([2], [2])]))  // acknowledged, in the WAL

        try linked.link("data", to: "data", in: live)
        var opened: PageFileKeyValueStore?
        var refusal: (any Error)?
        do {
            opened = try await PageFileKeyValueStore.open(directory: linked.path, options: options)
        } catch {
            refusal = error
        }
        if let other = opened { try await other.close() }
        // The live store's process dies (or loses power) before its next checkpoint.
        await store.closeWithoutCheckpoint()

        let reopened = try await PageFileKeyValueStore.open(directory: live.path, options: options)
        let keys = try await allEntries(reopened).map(\.key)
        try await reopened.close()
        #expect(refusal != nil, "the symlinked directory opened writable beside the live store's writer")
        #expect(keys == [[1], [2]], "the live store lost its acknowledged commit 2")
    }

    /// A read-only open (every read-only command of the admin tool: info, verify, backup) opens the directory's
    /// `lock` file with a blocking O_RDONLY to pin its snapshot (ReaderPin.take). Where `lock` is a FIFO, open(2)
    /// waits for a writer to open the FIFO, which never comes: the open hangs for ever instead of reading unpinned
    /// or failing with a typed error naming the file. (The same holds for a FIFO named `data` or `wal`: both are
    /// opened with a blocking O_RDONLY too.)
    ///
    /// The open runs on a thread of its own; the watchdog below only decides when a hang is reported (a correct open
    /// returns in milliseconds), and then unblocks the hung open by opening the FIFO's other end.
    @Test("a read-only open of a directory whose lock file is a FIFO does not hang")
    func fifoLockFileDoesNotHangAReadOnlyOpen() async throws {
        let directory = TemporaryDirectory("fifo-lock")
        defer { directory.remove() }
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await writer.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await writer.close()
        try FileManager.default.removeItem(atPath: directory.file("lock"))
        #expect(mkfifo(directory.file("lock"), 0o600) == 0)

        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<String>("")
        let opened = Mutex<PageFileKeyValueStore?>(nil)
        var options = smallOptions()
        options.readOnly = true
        let readOnly = options
        Thread {
            var result: String
            do {
                let store = try PageFileKeyValueStore.open(directory: directory.path, options: readOnly)
                opened.withLock { $0 = store }
                result = "opened"
            } catch {
                result = "\(error)"
            }
            outcome.withLock { $0 = result }
            done.signal()
        }.start()
        let ended = done.wait(timeout: .now() + .seconds(30)) == .success
        if !ended {
            // Unblock the hung open(2): a writer on the FIFO lets it return (and its close gives the reader EOF).
            let unblock = open(directory.file("lock"), O_WRONLY | O_NONBLOCK)
            if unblock >= 0 { close(unblock) }
            done.wait()
        }
        if let store = opened.withLock({ $0 }) { try await store.close() }
        #expect(ended, "the read-only open was still blocked in open(2) on the FIFO after 30 s")
        #expect(!outcome.withLock { $0 }.isEmpty)
    }

    /// The same for the WAL: a directory whose `wal` names a live store's WAL would take it for a stale generation
    /// and write its own header over it.
    @Test("a directory whose wal is a symlink to a live store's wal does not open writable")
    func symlinkedWALOfALiveStore() async throws {
        let live = TemporaryDirectory("live-wal")
        let linked = TemporaryDirectory("linked-wal")
        defer {
            live.remove()
            linked.remove()
        }
        let options = smallOptions()
        let store = try await PageFileKeyValueStore.open(directory: live.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        let other = try await PageFileKeyValueStore.open(directory: linked.path, options: options)
        try await other.close()
        try linked.link("wal", to: "wal", in: live)
        await #expect {
            try await PageFileKeyValueStore.open(directory: linked.path, options: options)
        } throws: { error in
            guard case EventStoreError.storeLocked(let path, _) = error else { return false }
            return path == linked.file("wal")
        }
        await store.closeWithoutCheckpoint()
        let reopened = try await PageFileKeyValueStore.open(directory: live.path, options: options)
        #expect(try await reopened.get([1])?.value == [1])
        try await reopened.close()
    }

    /// A FIFO (or any file that is not a regular file) named `data` or `wal` is refused naming it, without waiting
    /// for the FIFO's other end, in a read-only and a writable open.
    @Test("a FIFO in place of the data file or the wal is refused as not a regular file", arguments: ["data", "wal"])
    func fifoStoreFile(name: String) async throws {
        let directory = TemporaryDirectory("fifo-\(name)")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await store.close()
        try FileManager.default.removeItem(atPath: directory.file(name))
        #expect(mkfifo(directory.file(name), 0o600) == 0)
        var readOnly = smallOptions()
        readOnly.readOnly = true
        for options in [readOnly, smallOptions()] {
            await #expect {
                try await PageFileKeyValueStore.open(directory: directory.path, options: options)
            } throws: { error in
                guard case EventStoreError.incompatibleStore(let path, let reason) = error else { return false }
                return path == directory.file(name) && reason == "not a regular file"
            }
        }
    }

    /// Compaction renames a new file over `data`: the writer's lock must move with it, or a directory linking to
    /// `data` could open writable into the compacted file.
    @Test("after compaction, a directory whose data file is a symlink to the live store's still does not open")
    func symlinkedDataFileAfterCompaction() async throws {
        let live = TemporaryDirectory("live-compacted")
        let linked = TemporaryDirectory("linked-compacted")
        defer {
            live.remove()
            linked.remove()
        }
        let options = smallOptions()
        let store = try await PageFileKeyValueStore.open(directory: live.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        _ = try await store.compact()
        try linked.link("data", to: "data", in: live)
        await #expect {
            try await PageFileKeyValueStore.open(directory: linked.path, options: options)
        } throws: { error in
            guard case EventStoreError.storeLocked(let path, _) = error else { return false }
            return path == linked.file("data")
        }
        try await store.close()
        #expect(try await PageFileKeyValueStore.open(directory: live.path, options: options).get([1])?.value == [1])
    }

    /// A WAL extended far past its records (a sparse tail) was read whole at open, asking for its size in memory.
    /// Its tail is not read now: the store opens writable with its commits, and the next checkpoint trims the file.
    @Test("a wal with a 16 GiB sparse tail opens writable with its commits, and a checkpoint trims it")
    func sparseWALTailOpensWritable() async throws {
        let directory = TemporaryDirectory("sparse-wal")
        defer { directory.remove() }
        let options = smallOptions()
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        await store.closeWithoutCheckpoint()
        #expect(truncate(directory.file("wal"), 16 << 30) == 0)

        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        #expect(try await reopened.get([1])?.value == [1])
        _ = try await reopened.commit(KeyValueTransaction(writes: [.put([2], [2])]))
        try await reopened.checkpoint()
        let size = try FileManager.default.attributesOfItem(atPath: directory.file("wal"))[.size] as? UInt64
        #expect((size ?? .max) < 1 << 30)
        try await reopened.close()
    }
}
