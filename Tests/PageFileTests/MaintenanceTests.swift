// Maintenance while the store stays open: hot backup during concurrent writes, and compaction.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Maintenance")
struct MaintenanceTests {
    private func key(_ index: Int) -> Key {
        var key: Key = [4]
        key.appendBigEndian(UInt64(index))
        return key
    }

    @Test("a hot backup taken while writes continue opens as a consistent store")
    func hotBackup() async throws {
        try await withStore { store, _ in
            for index in 0..<300 {
                _ = try await store.commit(KeyValueTransaction(writes: [.put(key(index), [UInt8](repeating: 1, count: 200))]))
            }
            let writer = Task {
                var index = 300
                while !Task.isCancelled, index < 3_000 {
                    _ = try await store.commit(KeyValueTransaction(writes: [.put(key(index), [UInt8](repeating: 2, count: 200)), .put([9], Array("\(index)".utf8))]))
                    index += 1
                }
                return index
            }
            let destination = TemporaryDirectory("backup")
            defer { destination.remove() }
            try await store.backup(to: destination.path)
            writer.cancel()
            let written = try await writer.value

            let copy = try await PageFileKeyValueStore.open(directory: destination.path, options: smallOptions())
            let entries = try await allEntries(copy)
            let logKeys = entries.map(\.key).filter { $0.first == 4 }
            #expect(logKeys.count >= 300 && logKeys.count <= written)
            #expect(logKeys == (0..<logKeys.count).map(key), "the backup is not a prefix of the commits")
            if logKeys.count > 300 {
                #expect(try await copy.get([9])?.value == Array("\(logKeys.count - 1)".utf8))
            }
            #expect(try await copy.verify().isClean)
            try await copy.close()

            await #expect { try await store.backup(to: destination.path) } throws: { error in
                guard case EventStoreError.invalidArgument = error else { return false }
                return true
            }
        }
    }

    @Test("compact() shrinks a store with many freed pages and keeps every key, while reads go on")
    func compaction() async throws {
        try await withStore { store, directory in
            for batch in 0..<20 {
                let writes = (0..<50).map { index -> KeyWrite in
                    .put(key(batch * 50 + index), [UInt8](repeating: UInt8(index), count: index % 10 == 0 ? 5_000 : 300))
                }
                _ = try await store.commit(KeyValueTransaction(writes: writes))
            }
            try await store.checkpoint()
            for batch in 0..<18 {
                _ = try await store.commit(KeyValueTransaction(writes: (0..<50).map { .delete(key(batch * 50 + $0)) }))
            }
            try await store.checkpoint()
            let before = try await allEntries(store)
            let reader = Task { try await allEntries(store) }
            let report = try await store.compact()
            #expect(try await reader.value == before)
            #expect(report.pagesAfter * 3 < report.pagesBefore, "\(report)")
            #expect(try await allEntries(store) == before)
            let verified = try await store.verify()
            #expect(verified.isClean, "\(verified.problems)")
            let size = try FileManager.default.attributesOfItem(atPath: directory.file("data"))[.size] as? Int ?? 0
            #expect(UInt64(size) <= report.pagesAfter * 4096 + 4096)

            _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
            try await store.close()
            let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
            #expect(try await allEntries(reopened).count == before.count + 1)
            try await reopened.close()
        }
    }
}
