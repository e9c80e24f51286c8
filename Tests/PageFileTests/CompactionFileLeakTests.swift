// Every compaction releases the data file it replaced (found by a review, twenty-second session: each compaction
// after the first kept it open for the life of the store). The compacted file's SystemFile is registered with DirectoryLock.lockFile, but the next
// compaction unregisters `old.file` (the renamed duplicate, another object), so `===` finds nothing and the
// registered object (and its descriptor on the now unlinked file) stays in DirectoryLock.files until close().

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Compaction releases the file it replaced")
struct CompactionFileLeakTests {
    /// Descriptors of this process that reach an unlinked file under `directory`.
    private func deletedFiles(under directory: String) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return entries.compactMap { entry in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + entry)
            else { return nil }
            return target.hasPrefix(directory + "/") && target.hasSuffix("(deleted)") ? target : nil
        }
    }

    @Test("after several compactions no descriptor keeps a replaced (unlinked) data file")
    func compactionsDoNotKeepReplacedFiles() async throws {
        let directory = TemporaryDirectory("compact-leak")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        var counts: [Int] = []
        for round in 0..<4 {
            for index in 0..<50 {
                _ = try await store.commit(KeyValueTransaction(writes: [
                    .put([UInt8(round), UInt8(index)], [UInt8](repeating: UInt8(index), count: 2_000))
                ]))
            }
            try await store.compact()
            counts.append(deletedFiles(under: directory.path).count)
        }
        let keys = try await allEntries(store).count
        try await store.close()
        #expect(keys == 200)
        // Each compaction unlinks the previous data file (rename over `data`); nothing should keep it open.
        #expect(counts == [0, 0, 0, 0], "open descriptors on replaced data files after each compaction: \(counts)")
    }
}
