// A writer dropped without close() leaves nothing locked: its data file and WAL flocks go with its directory lock,
// (found by a second-round review, twenty-second session); and its WAL flusher thread ends, releasing the WAL, the
// data file and the page cache it held through the pipeline (twenty-fourth session: before, the thread waited for
// ever, and every store dropped without close() kept a thread and two descriptors for the life of the process).

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

    @Test("a store dropped without close() ends its flusher thread and closes its WAL and data file")
    func droppedStoreReleasesItsFiles() async throws {
        let directory = TemporaryDirectory("dropped-files")
        defer { directory.remove() }
        for readOnly in [false, true] {
            weak var pipeline: GroupCommit?
            weak var wal: SystemFile?
            weak var data: SystemFile?
            do {
                var options = smallOptions()
                options.readOnly = readOnly
                let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
                if !readOnly { _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])])) }
                pipeline = store.pipeline
                wal = store.wal
                data = store.writer.state.reader.file
                // Dropped here, as by a caller whose task threw or was cancelled before close().
            }
            // The flusher thread ends once told to, and lets go of the pipeline; the bound only ends a failing run.
            let clock = ContinuousClock()
            let deadline = clock.now.advanced(by: .seconds(60))
            while pipeline != nil && clock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
            #expect(pipeline == nil, "the flusher thread of a dropped store (readOnly: \(readOnly)) is still running")
            #expect(wal == nil, "the WAL of a dropped store (readOnly: \(readOnly)) is still open")
            #expect(data == nil, "the data file of a dropped store (readOnly: \(readOnly)) is still open")
        }
    }
}
