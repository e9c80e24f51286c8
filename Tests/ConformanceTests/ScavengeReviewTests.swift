// Review of scavenge: a damaged index must not make it delete live events, and its cost is not quadratic.
import EventStore
@testable import EventStoreKV
import Foundation
import KeyValueTestSupport
import Testing

@Suite("Scavenge review")
struct ScavengeReviewTests {
    @Test("scavenge never removes another stream's visible events on the word of a damaged stream index run",
          arguments: Backends.all)
    func scavengeTrustsDamagedRun(backend: Backend) async throws {
        try await backend.withStore { store in
            let (gone, kept) = (try StreamName("gone-1"), try StreamName("kept-1"))
            _ = try await store.append(makeEvents(3, label: "g"), to: gone, expectedVersion: .noStream)  // positions 1...3
            _ = try await store.append(makeEvents(3, label: "k"), to: kept, expectedVersion: .noStream)  // positions 4...6
            _ = try await store.delete(gone, expectedVersion: .exact(3), mode: .soft)
            // Damage: gone-1's only run now names positions 4...6, which hold kept-1's events.
            _ = try await store.backend.commit(KeyValueTransaction(writes: [
                .put(KeyLayout.streamIndex(gone, version: 3), StreamIndexRun.value(lastPosition: 6, count: 3)),
            ]))
            // Scavenge reports the damage where it is, as reads do, and does not act on it.
            await #expect {
                try await store.scavenge()
            } throws: { error in
                guard case EventStoreError.corrupted(let location, _) = error else { return false }
                return location == "global position 4"
            }
            #expect(try await store.readAll(from: 1, limit: 3).map(\.stream) == [gone, gone, gone], "nothing committed")
            let survivors = try await store.readAll(from: 1, limit: 100).filter { $0.stream == kept }
            #expect(survivors.map(\.version) == [1, 2, 3], "kept-1's acknowledged events in the log after scavenge")
            #expect(try await store.read(kept).map(\.version) == [1, 2, 3])
        }
    }
}

/// Counts the scans of the category and type indexes (`0x0A`) and the entries they visit, while `counting` is set.
final class IndexScanCounter: ForwardingKeyValueStore, @unchecked Sendable {
    let counting = Locked(false)
    let work = Locked((scans: 0, entries: 0))

    override func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws -> [KeyValueEntry] {
        let entries = try await super.scan(range, direction: direction, limit: limit)
        count(range) { $0.entries += entries.count }
        return entries
    }

    override func scan(
        _ range: KeyRange, direction: ScanDirection, limit: Int, visiting visit: (BorrowedEntry) throws -> Bool
    ) async throws -> Int {
        var visited = 0
        let result = try await super.scan(range, direction: direction, limit: limit) { entry in
            visited += 1
            return try visit(entry)
        }
        count(range) { $0.entries += visited }
        return result
    }

    private func count(_ range: KeyRange, _ add: (inout (scans: Int, entries: Int)) -> Void) {
        guard range.lowerBound.first == 0x0A, counting.withLock({ $0 }) else { return }
        work.withLock {
            $0.scans += 1
            add(&$0)
        }
    }
}

@Suite("Scavenge review: work")
struct ScavengeWorkReviewTests {
    /// Scavenges `store` (on `counter`), checking it removes `expected` events; returns the index scan work.
    func scavengeWork(_ store: KeyValueEventStore, _ counter: IndexScanCounter, expected: Int) async throws
        -> (scans: Int, entries: Int)
    {
        counter.counting.withLock { $0 = true }
        let report = try await store.scavenge()
        counter.counting.withLock { $0 = false }
        #expect(report.eventsRemoved == expected)
        return counter.work.withLock { $0 }
    }

    @Test("scavenging interleaved streams visits index entries in proportion to the events removed, not the log")
    func interleavedStreams() async throws {
        let counter = IndexScanCounter(InMemoryKeyValueStore())
        let store = KeyValueEventStore(backend: counter)
        let (streams, events) = (100, 20)
        let names = try (0..<streams).map { try StreamName("account-\($0)") }
        for _ in 0..<events {
            for name in names { _ = try await store.append([makeEvent("x")], to: name, expectedVersion: .any) }
        }
        for name in names { try await store.setMetadata(StreamMetadata(maxCount: 1), for: name) }
        let removed = streams * (events - 1)
        let work = try await scavengeWork(store, counter, expected: removed)
        print("interleaved: \(removed) events removed, \(work.scans) index scans visiting \(work.entries) entries")
        #expect(work.entries <= 8 * removed, "\(work.entries) index entries visited for \(removed) events removed")
        #expect(work.scans <= 4 * removed)
    }

    @Test("scavenging one large append visits index entries in proportion to the events removed")
    func oneLargeAppend() async throws {
        let counter = IndexScanCounter(InMemoryKeyValueStore())
        let store = KeyValueEventStore(backend: counter)
        let name = try StreamName("big-1")
        let total = 20_000
        _ = try await store.append((0..<total).map { _ in makeEvent("x") }, to: name, expectedVersion: .noStream)
        _ = try await store.append(makeEvents(1), to: name, expectedVersion: .any)
        try await store.setMetadata(StreamMetadata(maxCount: 1), for: name)
        let work = try await scavengeWork(store, counter, expected: total)
        print("one append: \(total) events removed, \(work.scans) index scans visiting \(work.entries) entries")
        #expect(work.entries <= 8 * total / KeyValueEventStore.scavengeBatchSize + 8)
    }

    @Test("trimming an index run keeps the stretches between the positions removed")
    func remainingStretches() {
        #expect(KeyValueEventStore.remaining(of: 1...10, without: [1, 4, 5, 10]) == [2...3, 6...9])
        #expect(KeyValueEventStore.remaining(of: 1...10, without: [3]) == [1...2, 4...10])
        #expect(KeyValueEventStore.remaining(of: 5...5, without: [5]).isEmpty)
        let top = UInt64.max
        #expect(KeyValueEventStore.remaining(of: (top - 2)...top, without: [top]) == [(top - 2)...(top - 1)])
    }

    @Test("trimming an index run computes its remaining ranges from the positions removed, never enumerating it")
    func hugeIndexRun() async throws {
        let store = KeyValueEventStore.inMemory()
        let name = try StreamName("huge-1")
        _ = try await store.append(makeEvents(3), to: name, expectedVersion: .noStream)  // positions 1...3
        // The category run of positions 1...3 replaced by one naming 1...2^32 - 1 (as if billions more followed).
        let prefix = KeyLayout.secondaryIndexPrefix(.category, name.category)
        let last: UInt64 = (1 << 32) - 1
        _ = try await store.backend.commit(KeyValueTransaction(writes: [
            .delete(KeyLayout.appending(3, to: prefix)),
            .put(KeyLayout.appending(last, to: prefix), IndexRun.encode(count: Int(last))),
        ]))
        try await store.setMetadata(StreamMetadata(maxCount: 1), for: name)
        #expect(try await store.scavenge().eventsRemoved == 2)
        let runs = try await store.backend.scan(.prefix(prefix), direction: .forward, limit: 10)
        #expect(runs.map(\.key) == [KeyLayout.appending(last, to: prefix)])
        #expect(runs.first.map(\.value) == IndexRun.encode(count: Int(last) - 2), "the run now names 3...2^32 - 1")
    }
}
