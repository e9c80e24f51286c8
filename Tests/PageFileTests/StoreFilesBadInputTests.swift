// Bad input at the page-file store's open and backup: a directory that holds store files of its own
// must not have them overwritten or removed, and out-of-range options are refused with invalidArgument.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Page file: store files found in a directory, and options out of range")
struct StoreFilesBadInputTests {
    /// A WAL whose data file is missing: its records are the only copy of the commits since the last checkpoint.
    @Test("a writable open of a directory holding a wal but no data file refuses it and leaves the wal as it was")
    func orphanWALIsNotTruncated() async throws {
        let directory = TemporaryDirectory("orphan-wal")
        defer { directory.remove() }
        // A store with commits only in its WAL (no checkpoint since creation), whose data file then goes missing.
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        for index in 0..<10 { _ = try await store.commit(KeyValueTransaction(writes: [.put([UInt8(index)], [1, 2, 3])])) }
        await store.closeWithoutCheckpoint()
        try FileManager.default.removeItem(atPath: directory.file("data"))
        let walBefore = try Data(contentsOf: URL(fileURLWithPath: directory.file("wal")))
        #expect(walBefore.count > WriteAheadLog.headerSize)

        var thrown: (any Error)?
        do {
            let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
            try await reopened.close()
        } catch {
            thrown = error
        }
        let walAfter = try Data(contentsOf: URL(fileURLWithPath: directory.file("wal")))
        // A Bool, not the Data: Swift Testing would diff two MiB-sized values byte by byte.
        let unchanged = walAfter == walBefore
        #expect(unchanged, "the wal (\(walBefore.count) bytes) was rewritten to \(walAfter.count) bytes")
        guard case .incompatibleStore? = thrown as? EventStoreError else {
            Issue.record("expected incompatibleStore, got \(String(describing: thrown))")
            return
        }
    }

    /// Creating a store writes its wal's header alone before the data file appears: a crash there leaves a wal of a
    /// header (or less) and `data.creating`, and the next open must create the store as if nothing were there.
    @Test("a store whose creation crashed before its data file appeared (a header-sized wal) is created at the next open")
    func creationCrashLeftovers() async throws {
        let directory = TemporaryDirectory("creation-crash")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        await store.closeWithoutCheckpoint()
        let header = [UInt8](try Data(contentsOf: URL(fileURLWithPath: directory.file("wal"))).prefix(WriteAheadLog.headerSize))
        try FileManager.default.moveItem(atPath: directory.file("data"), toPath: directory.file("data.creating"))
        for length in [0, WriteAheadLog.headerSize / 2, WriteAheadLog.headerSize] {
            try Data(header.prefix(length)).write(to: URL(fileURLWithPath: directory.file("wal")))
            let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
            _ = try await reopened.commit(KeyValueTransaction(writes: [.put([1], [1])]))
            try await reopened.close()
            try FileManager.default.removeItem(atPath: directory.file("data"))
        }
    }

    @Test("a backup into a directory holding a wal but no data file is refused, and leaves that wal and no file of its own")
    func backupKeepsForeignWAL() async throws {
        let destination = TemporaryDirectory("backup-foreign-wal")
        defer { destination.remove() }
        try FileManager.default.createDirectory(atPath: destination.path, withIntermediateDirectories: true)
        // Longer than a WAL header: it may hold records, so it is never overwritten.
        let foreign = Data(String(repeating: "records of another store; ", count: 4).utf8)
        try foreign.write(to: URL(fileURLWithPath: destination.file("wal")))
        try await withStore { store, _ in
            _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
            await #expect {
                try await store.backup(to: destination.path)
            } throws: { error in
                guard case EventStoreError.invalidArgument = error else { return false }
                return true
            }
        }
        let after = try? Data(contentsOf: URL(fileURLWithPath: destination.file("wal")))
        let kept = after == foreign
        #expect(kept, "the destination's wal was replaced (\(String(describing: after?.count)) bytes)")
        // Nor the lock file the backup made before it refused ("a backup that fails leaves no file of its own").
        let files = try FileManager.default.contentsOfDirectory(atPath: destination.path).sorted()
        #expect(files == ["wal"], "the refused backup left \(files) in the destination")
    }

    @Test("a watch buffer limit of 0 or less is refused at open like the other out-of-range options", arguments: [0, -1])
    func watchBufferLimitIsValidated(limit: Int) async throws {
        let directory = TemporaryDirectory("watch-limit")
        defer { directory.remove() }
        var options = smallOptions()
        options.watchBufferLimit = limit
        var thrown: (any Error)?
        do {
            let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
            try await store.close()
        } catch {
            thrown = error
        }
        guard case .invalidArgument? = thrown as? EventStoreError else {
            Issue.record("watchBufferLimit \(limit) was accepted (\(String(describing: thrown)))")
            return
        }
    }
}
