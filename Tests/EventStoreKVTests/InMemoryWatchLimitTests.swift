// PageFileOptions.validate refuses watchBufferLimit < 1, since a limit of 0 dropped every watcher later. The
// in-memory backend takes the same limit in its init, which cannot throw: a limit below 1 counts as 1, so a watcher
// that starts in the past (one pending change) is not dropped before it has taken anything.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

@Suite("In-memory store: the watch buffer limit")
struct InMemoryWatchLimitTests {
    @Test("an in-memory store built with watchBufferLimit 0 does not drop a watcher before it has held one change")
    func zeroWatchBufferLimit() async throws {
        let backend = InMemoryKeyValueStore(watchBufferLimit: 0)
        _ = try await backend.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        var iterator = backend.changes(after: 0, prefix: []).makeAsyncIterator()
        do {
            let first = try await iterator.next()
            #expect(first?.key == [1])
        } catch {
            Issue.record("the watcher was dropped before it held a single change: \(error)")
        }
        try await backend.close()
    }
}
