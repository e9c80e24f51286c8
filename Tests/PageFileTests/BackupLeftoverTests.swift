// A backup into a directory that holds the leftovers of a backup that died before its rename.
//
// A backup writes its copy as `data.creating`, then the copy's wal (a header alone for a writable store), then
// renames `data.creating` to `data`. A process that dies between the wal and the rename leaves exactly what a crashed
// store creation leaves (a header-sized wal beside `data.creating`), which open() takes over, and so does the same
// backup run again into the same destination. (A destination's longer wal is refused, and a refused backup leaves no
// file of its own: StoreFilesBadInputTests.)

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Page file: a backup run again over a crashed one's leftovers")
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
}
