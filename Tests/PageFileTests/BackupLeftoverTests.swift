// A backup into a directory that holds leftovers: a destination's wal is never overwritten, but what a backup that
// died before its rename leaves behind is taken over, and a refused backup leaves no file of its own.
//
// 1. A backup writes its copy as `data.creating`, then the copy's wal (a header alone for a writable store), then
//    renames `data.creating` to `data`. A process that dies between the wal and the rename leaves exactly what a
//    crashed store creation leaves (a header-sized wal beside `data.creating`), which open() takes over, and so
//    does the same backup run again into the same destination.
// 2. A refusal comes after the destination's lock file was created; it removes it ("A backup that fails leaves no
//    file of its own in destination").

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Page file: backup leftovers and refusals")
struct BackupLeftoverTests {
    @Test("a backup that died before its rename (data.creating and a header-sized wal) can be run again into the same place")
    func backupRerunAfterCrashBeforeRename() async throws {
        let destination = TemporaryDirectory("backup-crash-rerun")
        defer { destination.remove() }
        try await withStore { store, _ in
            _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [42])]))
            try await store.backup(to: destination.path)
            // The state a kill between the wal's sync and the rename leaves: the whole copy, not yet renamed.
            try FileManager.default.moveItem(atPath: destination.file("data"), toPath: destination.file("data.creating"))
            let walSize = try FileManager.default.attributesOfItem(atPath: destination.file("wal"))[.size] as? Int
            #expect(walSize == WriteAheadLog.headerSize, "a writable store's backup writes a header-only wal")

            var thrown: (any Error)?
            do {
                try await store.backup(to: destination.path)
            } catch {
                thrown = error
            }
            #expect(thrown == nil, "re-running the backup into the same place was refused: \(String(describing: thrown))")
        }
        // The destination, whatever the backup did, opens as the copy (open itself takes such leftovers over).
        if SystemFile.exists(destination.file("data")) {
            let copy = try await PageFileKeyValueStore.open(directory: destination.path, options: smallOptions())
            let key: Key = [1]
            #expect(try await copy.get(key)?.value == [42])
            try await copy.close()
        }
    }

    @Test("a backup refused for a destination's wal leaves no file of its own there (no lock file)")
    func refusedBackupLeavesNoLockFile() async throws {
        let destination = TemporaryDirectory("backup-refused-lock")
        defer { destination.remove() }
        try FileManager.default.createDirectory(atPath: destination.path, withIntermediateDirectories: true)
        // Longer than a WAL header: it may hold records, so it is never overwritten.
        let foreign = Data(String(repeating: "records of another store; ", count: 4).utf8)
        try foreign.write(to: URL(fileURLWithPath: destination.file("wal")))
        try await withStore { store, _ in
            _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
            await #expect(throws: EventStoreError.self) { try await store.backup(to: destination.path) }
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: destination.path).sorted()
        #expect(files == ["wal"], "the refused backup left \(files) in the destination")
    }
}
