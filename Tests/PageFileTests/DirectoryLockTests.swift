// The directory lock is held on the file that is `<dir>/lock`. A lock file can be unlinked between an opener's
// open(2) and its flock: a failed backup removes the lock file it made, with its own flock released just after. The
// opener's flock then succeeds on a file no longer at that path, and every later opener creates a new `lock` and
// locks that one: two writers on one directory. An opener must drop such a flock and take the current file's.

import EventStore
@testable import EventStoreKV
import Foundation
import Glibc
import Testing

@Suite("Page file: the directory lock when its file is unlinked under an opener")
struct DirectoryLockTests {
    @Test("an opener whose lock file is unlinked before its flock locks the new file, so a third opener is refused")
    func unlinkedLockFileIsNotHeld() throws {
        let directory = TemporaryDirectory("lock-unlinked")
        defer { directory.remove() }
        try FileManager.default.createDirectory(atPath: directory.path, withIntermediateDirectories: true)
        // A backup's lock on the directory, made by it.
        let backup = try DirectoryLock.acquire(directory: directory.path)
        // A writer opens the lock file; before it flocks, the backup fails, removes its lock file and releases it.
        let writer = try DirectoryLock.acquire(directory: directory.path) {
            unlink(directory.file("lock"))
            backup.release()
        }
        defer { writer.release() }
        // The writer holds the lock: any other opener is refused.
        do {
            let third = try DirectoryLock.acquire(directory: directory.path)
            third.release()
            Issue.record("a third opener took the directory lock while the writer holds it")
        } catch EventStoreError.storeLocked {
        }
    }

    @Test("a refused backup into a directory holding a store leaves that store's lock file")
    func refusedBackupKeepsAStoresLockFile() async throws {
        let destination = TemporaryDirectory("backup-over-store")
        defer { destination.remove() }
        let other = try await PageFileKeyValueStore.open(directory: destination.path, options: smallOptions())
        try await other.close()
        try FileManager.default.removeItem(atPath: destination.file("lock"))  // a store copied without its lock file
        try await withStore { store, _ in
            await #expect(throws: EventStoreError.self) { try await store.backup(to: destination.path) }
            return
        }
        #expect(SystemFile.exists(destination.file("lock")), "the refused backup removed the lock file beside a store")
    }
}
