// Found by the nineteenth session's review of readers against page reuse (failed before its fix): statistics() on a
// writable store read the newest meta from disk and walked its free list without registering as a reader, so two
// checkpoints between the two reads could reuse the list's pages, and it reported 0 free pages (a `try?` also turned
// a damaged free list into "0 free pages"). It now registers as a reader of the published checkpoint for the walk.

import Dispatch
import EventStore
import Foundation
import Synchronization
import Testing

@testable import EventStoreKV

@Suite("Page file: statistics() as a reader", .serialized, .timeLimit(.minutes(5)))
struct StatisticsReaderTests {
    static let keys = (0..<2_000).map { index in Array("key-\(10_000 + index)".utf8) }

    static func rewrite(_ writer: PageFileKeyValueStore, with fill: UInt8, size: Int = 100) async throws {
        for batch in stride(from: 0, to: keys.count, by: 100) {
            let writes = keys[batch..<(batch + 100)].map { KeyWrite.put($0, Array(repeating: fill, count: size)) }
            _ = try await writer.commit(KeyValueTransaction(writes: writes))
        }
        try await writer.checkpoint()
    }

    @Test("statistics() reports the free pages of the meta it read, even when the writer checkpoints meanwhile")
    func freeListIsNotReusedUnderStatistics() async throws {
        let directory = TemporaryDirectory("statistics-reader")
        defer { directory.remove() }
        // 0: off; 1: armed (the next read of both meta slots starts the race); 2: the meta was read; 3: done.
        let stage = Atomic<Int>(0)
        let writerBox = Locked<PageFileKeyValueStore?>(nil)
        var options = smallOptions()
        let pageSize = options.pageSize
        options.faults = IOFaultPlan([], beforeRead: { path, count in
            guard path.hasSuffix("/data") else { return }
            if count == 2 * pageSize, stage.compareExchange(expected: 1, desired: 2, ordering: .relaxed).exchanged {
                return
            }
            // The first page statistics() reads after the meta is the head of that meta's free list. The writer
            // rewrites everything twice first: its second checkpoint may reuse what the first freed, that list.
            guard count == pageSize, stage.compareExchange(expected: 2, desired: 3, ordering: .relaxed).exchanged,
                let writer = writerBox.withLock({ $0 })
            else { return }
            let done = DispatchSemaphore(value: 0)
            Task.detached {
                // The second, with larger values, needs every free page: the list's own among them.
                try? await Self.rewrite(writer, with: 0xB)
                try? await Self.rewrite(writer, with: 0xC, size: 600)
                done.signal()
            }
            done.wait()
        })
        let writer = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        writerBox.withLock { $0 = writer }
        for fill: UInt8 in [1, 2, 3, 4] { try await Self.rewrite(writer, with: fill) }
        let before = try writer.statistics()
        #expect(before.freePages > 0, "the meta has a free list")
        stage.store(1, ordering: .relaxed)
        // Off the cooperative pool: the read hook waits there for the writer, whose work needs the pool.
        let raced = try await Offload.run { try writer.statistics() }
        #expect(stage.load(ordering: .relaxed) == 3, "the writer ran between the meta read and the free-list read")
        #expect(raced.checkpoints == before.checkpoints)
        #expect(raced.pageCount == before.pageCount)
        #expect(raced.freePages == before.freePages, "free pages of checkpoint \(raced.checkpoints)")
        try await writer.close()
    }
}
