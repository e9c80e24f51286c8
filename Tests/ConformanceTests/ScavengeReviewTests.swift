// Review of scavenge: a damaged index must not make it delete live events, a read racing it returns consecutive
// versions, its cost is not quadratic, and what it removes under maxAge.
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

    @Test("scavenge removes expired events up to the first unexpired one; one behind a fresher event stays hidden",
          arguments: Backends.all)
    func scavengeLeavesHiddenExpiredEvents(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try StreamName("aged-1")
            let behind = KeyValueEventStore(backend: store.backend, clock: { Date().addingTimeInterval(-7_200) })
            _ = try await store.append([makeEvent("fresh")], to: name, expectedVersion: .noStream)
            _ = try await behind.append([makeEvent("stale")], to: name, expectedVersion: .exact(1))
            try await store.setMetadata(StreamMetadata(maxAge: .seconds(3_600)), for: name)
            #expect(try await store.read(name).map(\.version) == [1])
            let report = try await store.scavenge()
            // Version 2 expired but lies behind the fresh version 1: it stays stored (StreamMetadata's doc) ...
            #expect(report.eventsRemoved == 0)
            #expect(try await store.readAll(from: 1, limit: 10).filter { $0.stream == name }.map(\.version) == [1, 2])
            // ... and hidden from stream reads, both ways, until version 1 expires too and a scavenge removes both.
            #expect(try await store.read(name).map(\.version) == [1])
            #expect(try await store.readBackward(name).map(\.version) == [1])
            let later = KeyValueEventStore(backend: store.backend, clock: { Date().addingTimeInterval(7_200) })
            #expect(try await later.scavenge().eventsRemoved == 2)
            #expect(try await store.readAll(from: 1, limit: 10).filter { $0.stream == name }.isEmpty)
        }
    }
}

/// Runs `action` once, just before the `trigger`-th scan of the stream index (`0x03`).
final class StreamIndexScanHook: ForwardingKeyValueStore, @unchecked Sendable {
    // `@unchecked Sendable`: `scans` and `action` are Locked (pthread mutex); `trigger` is immutable.
    let scans = Locked(0)
    let trigger: Int
    let action: Locked<(@Sendable () async throws -> Void)?>
    init(_ inner: any KeyValueStore, trigger: Int, action: @escaping @Sendable () async throws -> Void) {
        self.trigger = trigger
        self.action = Locked(action)
        super.init(inner)
    }
    override func scan(
        _ range: KeyRange, direction: ScanDirection, limit: Int, visiting visit: (BorrowedEntry) throws -> Bool
    ) async throws -> Int {
        if range.lowerBound.first == 0x03 {
            let count = scans.withLock { $0 += 1; return $0 }
            if count == trigger, let action = action.withLock({ let taken = $0; $0 = nil; return taken }) {
                try await action()
            }
        }
        return try await super.scan(range, direction: direction, limit: limit, visiting: visit)
    }
}

@Suite("Scavenge review: a read racing scavenge")
struct TornReadReviewTests {
    @Test("a stream read racing appends and a scavenge returns consecutive versions")
    func forwardReadHasNoHoleInTheMiddle() async throws {
        let inner = InMemoryKeyValueStore()
        let writer = KeyValueEventStore(backend: inner)
        let name = try StreamName("torn-1")
        _ = try await writer.append(makeEvents(5), to: name, expectedVersion: .noStream)
        try await writer.setMetadata(StreamMetadata(maxCount: 3), for: name)  // visible: 3, 4, 5
        // Before the reader's second batch, two appends move the window to 5...7 and a scavenge removes 1...4.
        let hooked = StreamIndexScanHook(inner, trigger: 2) {
            _ = try await writer.append(makeEvents(2, label: "late"), to: name, expectedVersion: .exact(5))
            try await writer.scavenge()
        }
        let reader = KeyValueEventStore(backend: hooked, readBatchSize: 1)
        let versions = try await reader.read(name).map(\.version)
        // Either the stream as it was (3, 4, 5) or a consecutive part of it; never 3 then 5.
        #expect(zip(versions, versions.dropFirst()).allSatisfy { $0 + 1 == $1 }, "read returned versions \(versions)")
    }
    /// A stream of five events under maxCount 3 (visible: 3, 4, 5), read by a reader with one event per batch through
    /// a store that, just before the reader's `trigger`-th stream-index scan, appends `appended` events and scavenges.
    func racingRead(
        trigger: Int, appended: Int,
        _ read: @escaping @Sendable (KeyValueEventStore, StreamName) async throws -> [UInt64]
    ) async throws -> [UInt64] {
        let inner = InMemoryKeyValueStore()
        let writer = KeyValueEventStore(backend: inner)
        let name = try StreamName("torn-1")
        _ = try await writer.append(makeEvents(5), to: name, expectedVersion: .noStream)
        try await writer.setMetadata(StreamMetadata(maxCount: 3), for: name)
        let hooked = StreamIndexScanHook(inner, trigger: trigger) {
            _ = try await writer.append(makeEvents(appended, label: "late"), to: name, expectedVersion: .exact(5))
            try await writer.scavenge()
        }
        return try await read(KeyValueEventStore(backend: hooked, readBatchSize: 1), name)
    }

    @Test("a visiting stream read racing appends and a scavenge lends consecutive versions")
    func visitingReadHasNoHoleInTheMiddle() async throws {
        let versions = try await racingRead(trigger: 2, appended: 2) { store, name in
            var seen: [UInt64] = []
            try await store.read(name, from: .start, direction: .forward, limit: .max) { event in
                seen.append(event.version)
                return true
            }
            return seen
        }
        #expect(versions == [3], "visited versions \(versions)")
    }

    @Test("a backward stream read racing appends and a scavenge returns consecutive versions")
    func backwardReadHasNoHoleInTheMiddle() async throws {
        // Backward, the first batch takes two scans (the run holding version 5, then the runs below it).
        let versions = try await racingRead(trigger: 3, appended: 2) { store, name in
            try await store.readBackward(name).map(\.version)
        }
        #expect(versions == [5], "read returned versions \(versions)")
    }

    @Test("a stream subscription whose read stops at a scavenged version reads on, not reporting itself caught up")
    func subscriptionReadsPastAStop() async throws {
        let inner = InMemoryKeyValueStore()
        let writer = KeyValueEventStore(backend: inner)
        let name = try StreamName("torn-2")
        _ = try await writer.append(makeEvents(5), to: name, expectedVersion: .noStream)
        // After the reader's first batch (version 1), retention hides 1...2 and a scavenge removes them: nothing
        // rings the subscription's doorbell (no event is appended).
        let hooked = StreamIndexScanHook(inner, trigger: 2) {
            try await writer.setMetadata(StreamMetadata(truncateBefore: 3), for: name)
            try await writer.scavenge()
        }
        let reader = KeyValueEventStore(backend: hooked, readBatchSize: 1)
        var versions: [UInt64] = []
        for try await message in reader.subscribe(to: name) {
            switch message {
            case .event(let event): versions.append(event.version)
            case .caughtUp(let through):
                #expect(through == 5)
                #expect(versions == [1, 3, 4, 5])
                return
            }
        }
    }

    @Test("a stream read that finds every version it computed scavenged reads the stream as it is now",
          arguments: [ReadDirection.forward, .backward])
    func readStartingInAScavengedRangeRecomputes(direction: ReadDirection) async throws {
        // Three appends move the window to 6...8 and a scavenge removes 1...5, before the reader's first scan.
        let versions = try await racingRead(trigger: 1, appended: 3) { store, name in
            try await store.read(name, from: direction == .forward ? .start : .end, direction: direction, limit: .max)
                .map(\.version)
        }
        #expect(versions == (direction == .forward ? [6, 7, 8] : [8, 7, 6]), "read returned versions \(versions)")
    }
}

/// Counts the scans of the category and type indexes (`0x0A`) and the entries they visit, while `counting` is set.
final class IndexScanCounter: ForwardingKeyValueStore, @unchecked Sendable {
    // `@unchecked Sendable`: `counting` and `work` are Locked (pthread mutex); nothing else is stored.
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

@Suite("Scavenge review: scavenged prefixes and index runs, after the fixes")
struct ScavengeFinalReviewTests {
    @Test("reads within visible bounds whose oldest versions were scavenged return consecutive stored versions",
          arguments: Backends.all)
    func readsOverAScavengedPrefix(backend: Backend) async throws {
        try await backend.withStore { store in
            let name = try stream("prefix-1")
            _ = try await store.append(samples(10), to: name, expectedVersion: .noStream)
            try await store.setMetadata(StreamMetadata(maxCount: 3), for: name)
            #expect(try await store.scavenge().eventsRemoved == 7)
            try await store.setMetadata(StreamMetadata(), for: name)  // versions 1...7 visible again, but gone
            #expect(try await store.read(name, from: .start, limit: 2).map(\.version) == [8, 9])
            #expect(try await store.read(name, from: .version(5), limit: 10).map(\.version) == [8, 9, 10])
            #expect(try await store.readBackward(name).map(\.version) == [10, 9, 8])
            #expect(try await store.readBackward(name, from: .version(9), limit: 1).map(\.version) == [9])
            #expect(try await store.readBackward(name, from: .version(7)).isEmpty)
            #expect(try await store.readBackward(name, from: .start).isEmpty)
            var seen: [UInt64] = []
            for try await message in store.subscribe(to: name, bufferSize: 2) {
                if case .event(let event) = message { seen.append(event.version) } else { break }
            }
            #expect(seen == [8, 9, 10])
        }
    }

    @Test("scavenge rewrites category and type runs exactly, with other streams' runs interleaved",
          arguments: Backends.all, [UInt64(1), 2, 3, 4, 5, 6])
    func scavengeIndexRunsMatchTheLog(backend: Backend, seed: UInt64) async throws {
        try await backend.withStore { store in
            var random = SplitMix64(state: seed)
            let (a, b, c) = (try stream("cat-a"), try stream("cat-b"), try stream("dog-c"))
            var versions: [StreamName: UInt64] = [a: 0, b: 0, c: 0]
            // Sparse: one-event appends of cat-a between many others, so scavenge seeks rather than scans.
            let sparse = seed > 3
            for _ in 0..<((sparse ? 600 : 120) / backend.workloadDivisor) {
                let target = (sparse ? [a, b, b, b, c, c, c] : [a, a, b, c]).randomElement(using: &random) ?? a
                let count = Int.random(in: 1...(target == a ? (sparse ? 1 : 6) : 3), using: &random)
                let events = (0..<count).map { _ in sample(["X", "Y"].randomElement(using: &random) ?? "X") }
                let current = versions[target] ?? 0
                let expected: ExpectedVersion = current == 0 ? .noStream : .exact(current)
                versions[target] = try await store.append(events, to: target, expectedVersion: expected).version
            }
            let (lastOfA, lastOfB) = (versions[a] ?? 0, versions[b] ?? 0)
            for step in 0..<3 {
                let keep = UInt64.random(in: 0...(lastOfA / 2), using: &random)
                try await store.setMetadata(
                    step == 2 ? StreamMetadata(truncateBefore: lastOfA + 1) : StreamMetadata(maxCount: keep + 1), for: a)
                _ = try await store.scavenge()
                let log = try await store.readAll(from: 1, limit: 100_000)
                for category in ["cat", "dog"] {
                    #expect(try await store.readCategory(category, from: 1, limit: 100_000).map(\.position)
                        == log.filter { $0.stream.category == category }.map(\.position), "seed \(seed) step \(step)")
                }
                for type in ["X", "Y"] {
                    #expect(try await store.readEvents(ofType: type, from: 1, limit: 100_000).map(\.position)
                        == log.filter { $0.type == type }.map(\.position), "seed \(seed) step \(step)")
                }
                #expect(try await store.read(b).count == Int(lastOfB))
            }
        }
    }
}
