// Deferred durability with a delay meaning "never" (.seconds(Int64.max), or more), found by the eleventh session's
// third review: the flusher waited on a deadline past 2262, which Foundation's NSCondition traps on, and a delay
// past Int64 seconds trapped converting it. The flusher now waits at most an hour at a time.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Deferred durability with an endless delay")
struct DeferredDelayLimitTests {
    static let endless: [Duration] = [.seconds(Int64.max), .seconds(Int64.max) * 4]

    @Test("commits are acknowledged, read back, and survive close and reopen", arguments: endless)
    func endlessDelay(delay: Duration) async throws {
        let directory = TemporaryDirectory("deferred-endless")
        defer { directory.remove() }
        let options = PageFileOptions(durability: .deferred(maximumDelay: delay))
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        // Long enough for the flusher to wait on the sync deadline after the commit.
        try await Task.sleep(for: .milliseconds(200))
        _ = try await store.commit(KeyValueTransaction(writes: [.put([2], [2])]))
        #expect(try await store.get([2])?.value == [2])
        try await store.close()
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path)
        #expect(try await reopened.get([1])?.value == [1])
        #expect(try await reopened.get([2])?.value == [2])
        try await reopened.close()
    }
}
