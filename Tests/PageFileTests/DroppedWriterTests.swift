// A writer dropped without close() leaves nothing locked: its data file and WAL flocks go with its directory lock,
// although its WAL flusher may keep the descriptors open (found by a second-round review, twenty-second session).

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("A writer dropped without close")
struct DroppedWriterTests {
    @Test("after a writer is dropped without close(), the directory opens writable again in this process")
    func reopenAfterDroppedWriter() async throws {
        let directory = TemporaryDirectory("dropped-writer")
        defer { directory.remove() }
        let options = smallOptions()
        do {
            let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
            _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
            // Dropped here, as by a caller that forgot close() or whose task threw before reaching it.
        }
        // The directory lock is gone with the store (DirectoryLock.deinit):
        let lockTaken = try? DirectoryLock.acquire(directory: directory.path)
        #expect(lockTaken != nil, "the dropped writer still holds the directory lock")
        lockTaken?.release()

        var reopened: PageFileKeyValueStore?
        do {
            reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        } catch {
            Issue.record("a writable open after the writer was dropped failed: \(error)")
        }
        if let reopened {
            let keys = try await allEntries(reopened).map(\.key)
            try await reopened.close()
            #expect(keys == [[1]])
        }
    }
}
