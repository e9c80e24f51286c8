// Stream index runs under review (eighth session): a model-based test of random appends, retries, deletions,
// metadata changes and scavenges against what reads must return; subscriptions across runs; and two defects, each of
// which failed before its fix:
// - a backward read positions on the run holding its start version, then scans down from it in a second scan: a
//   scavenge between the two could shorten that run past the start, and counting its versions underflowed (a trap);
// - an idempotent retry whose event-id entry named a position near UInt64.max overflowed building its result.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

/// An in-memory backend that runs `hook` once, just before the first backward scan of the stream index: what
/// another process (appending, scavenging) may commit between a backward read's two index scans.
final class BackwardScanInterleavingStore: KeyValueStore {
    let inner = InMemoryKeyValueStore()
    let hook = Locked<(@Sendable () async throws -> Void)?>(nil)

    func get(_ key: Key) async throws -> KeyValueEntry? { try await inner.get(key) }
    func get(_ keys: [Key]) async throws -> [KeyValueEntry?] { try await inner.get(keys) }
    func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws -> [KeyValueEntry] {
        if direction == .backward, range.lowerBound.first == 0x03,
            let run = hook.withLock({ hook -> (@Sendable () async throws -> Void)? in
                defer { hook = nil }
                return hook
            })
        {
            try await run()
        }
        return try await inner.scan(range, direction: direction, limit: limit)
    }
    func commit(_ transaction: KeyValueTransaction) async throws -> UInt64 { try await inner.commit(transaction) }
    func update<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value> { try await inner.update(body) }
    func currentRevision() async throws -> UInt64 { try await inner.currentRevision() }
    func changes(after revision: UInt64, prefix: Key) -> AsyncThrowingStream<KeyValueChange, any Error> {
        inner.changes(after: revision, prefix: prefix)
    }
    func close() async throws { try await inner.close() }
}

@Suite("Stream index runs: a model, races with scavenge, subscriptions")
struct StreamIndexRunReviewTests {
    /// A stream keeping its last 50 events (maxCount 50), written as one batch of 100: after a scavenge its one run
    /// holds versions 51...100. A backward read from version 60 finds that run holding 60; before its backward scan,
    /// another writer appends 10 events and a scavenger (as a background job would) trims the run to 61...100.
    @Test("a backward read racing an append and a scavenge under maxCount does not trap")
    func backwardReadRacingScavenge() async {
        await #expect(processExitsWith: .success) {
            let backend = BackwardScanInterleavingStore()
            let store = KeyValueEventStore(backend: backend)
            let stream = try StreamName("kept-50")
            _ = try await store.append(makeEvents(100), to: stream, expectedVersion: .noStream)
            try await store.setMetadata(StreamMetadata(maxCount: 50), for: stream)
            #expect(try await store.scavenge(stream) == 50)
            backend.hook.withLock {
                $0 = {
                    let other = KeyValueEventStore(backend: backend.inner)
                    _ = try await other.append(makeEvents(10), to: stream, expectedVersion: .exact(100))
                    _ = try await other.scavenge(stream)
                }
            }
            // Versions 51...60 were visible when the read began; they are gone by the time it scans.
            let events = try await store.read(stream, from: .version(60), direction: .backward, limit: 5)
            #expect(events.isEmpty)
        }
    }
}


/// A seeded generator, so a failing sequence can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// What reads of one stream must return, kept by the test from the appends' own results.
struct ModelStream {
    struct Event: Equatable, CustomStringConvertible {
        var version: UInt64
        var position: UInt64
        var label: String
        var recordedAt = Date(timeIntervalSince1970: 0)
        var description: String { "v\(version)@\(position)" }
        static func == (a: Event, b: Event) -> Bool {
            (a.version, a.position, a.label) == (b.version, b.position, b.label)
        }
    }
    var events: [Event] = []
    var version: UInt64 = 0
    var hiddenThrough: UInt64 = 0
    var deleted = false
    var metadata = StreamMetadata()
    /// Versions below this were removed by scavenge.
    var removedBelow: UInt64 = 1

    var visibleVersion: UInt64 { deleted ? 0 : version }

    /// The lowest version readers see; with `deleted`, everything is hidden.
    var floor: UInt64 {
        if deleted { return version + 1 }
        var first = hiddenThrough + 1
        if let truncateBefore = metadata.truncateBefore { first = max(first, truncateBefore) }
        if let maxCount = metadata.maxCount, version >= maxCount { first = max(first, version - maxCount + 1) }
        return first
    }

    func hidden(_ event: Event, now: Date) -> Bool {
        if event.version < floor { return true }
        if let maxAge = metadata.maxAge, event.recordedAt < now.addingTimeInterval(-maxAge.timeInterval) { return true }
        return false
    }

    func visible(now: Date) -> [Event] {
        events.filter { $0.version >= removedBelow && !hidden($0, now: now) }
    }

    /// The first version scavenge keeps: it removes the leading hidden events.
    func scavengeStop(now: Date) -> UInt64 {
        events.first { $0.version >= removedBelow && !hidden($0, now: now) }?.version ?? (version + 1)
    }

    func read(from start: ReadStart, _ direction: ReadDirection, limit: Int, now: Date) -> [Event] {
        guard !deleted else { return [] }
        let visible = self.visible(now: now)
        switch (direction, start) {
        case (.forward, .start): return Array(visible.prefix(limit))
        case (.forward, .end): return []
        case (.forward, .version(let version)): return Array(visible.filter { $0.version >= version }.prefix(limit))
        case (.backward, .start): return Array(visible.filter { $0.version <= 1 }.reversed().prefix(limit))
        case (.backward, .end): return Array(visible.reversed().prefix(limit))
        case (.backward, .version(let version)):
            return Array(visible.filter { $0.version <= version }.reversed().prefix(limit))
        }
    }
}

extension StreamIndexRunReviewTests {
    struct Batch {
        var stream: Int
        var events: [EventData]
        var result: AppendResult
        var expected: ExpectedVersion
    }

    static func randomSize(_ rng: inout SplitMix64) -> Int {
        switch Int.random(in: 0..<20, using: &rng) {
        case 0: return 0
        case 1: return Int.random(in: 100...300, using: &rng)
        case 2...5: return 1
        default: return Int.random(in: 2...12, using: &rng)
        }
    }

    static func check(
        _ store: KeyValueEventStore, _ names: [StreamName], _ model: [ModelStream], _ rng: inout SplitMix64,
        step: Int, seed: UInt64, now: Date
    ) async throws -> Bool {
        for (index, name) in names.enumerated() {
            let stream = model[index]
            #expect(try await store.version(of: name) == stream.visibleVersion, "seed \(seed) step \(step)")
            for _ in 0..<6 {
                let starts: [ReadStart] = [.start, .end, .version(UInt64.random(in: 0...(stream.version + 2), using: &rng))]
                let start = starts.randomElement(using: &rng)!
                let direction: ReadDirection = Bool.random(using: &rng) ? .forward : .backward
                let limit = Bool.random(using: &rng) ? Int.max : Int.random(in: 1...20, using: &rng)
                let chunk = [1, 2, 3, 4, 5, 6, 7, 4_096].randomElement(using: &rng)!
                let reader = KeyValueEventStore(backend: store.backend, readBatchSize: chunk, clock: store.clock)
                let read = try await reader.read(name, from: start, direction: direction, limit: limit).map {
                    ModelStream.Event(version: $0.version, position: $0.position, label: $0.label)
                }
                let expected = stream.read(from: start, direction, limit: limit, now: now)
                #expect(
                    read == expected,
                    "seed \(seed) step \(step): \(name) from \(start) \(direction) limit \(limit) chunk \(chunk)")
                if read != expected { return false }
            }
        }
        // The global log holds exactly the events not scavenged.
        let all = try await store.readAll(from: 1, limit: .max)
        for (index, name) in names.enumerated() {
            let logged = all.filter { $0.stream == name }.map(\.position)
            let kept = model[index].events.filter { $0.version >= model[index].removedBelow }.map(\.position)
            #expect(logged == kept, "seed \(seed) step \(step): global log of \(name)")
            if logged != kept { return false }
        }
        return true
    }

    static func runModel(_ unclocked: KeyValueEventStore, seed: UInt64, steps: Int) async throws {
        let clock = Locked(Date(timeIntervalSince1970: 1_000_000))
        let store = KeyValueEventStore(backend: unclocked.backend, clock: { clock.withLock { $0 } })
        var rng = SplitMix64(state: seed)
        let names = try (0..<3).map { try StreamName("model\($0)-\(seed)") }
        var model = [ModelStream](repeating: ModelStream(), count: names.count)
        var batches: [Batch] = []
        var labelCounter = 0
        func events(_ count: Int) -> [EventData] {
            defer { labelCounter += count }
            return (0..<count).map { makeEvent("l\(labelCounter + $0)") }
        }
        func record(_ index: Int, _ sent: [EventData], _ result: AppendResult, _ expected: ExpectedVersion) {
            let first = model[index].version + 1
            for (offset, position) in result.positions.enumerated() {
                model[index].events.append(
                    ModelStream.Event(
                        version: first + UInt64(offset), position: position,
                        label: String(decoding: sent[offset].data, as: UTF8.self), recordedAt: clock.withLock { $0 }))
            }
            if !sent.isEmpty {
                model[index].version += UInt64(sent.count)
                model[index].deleted = false
                batches.append(Batch(stream: index, events: sent, result: result, expected: expected))
            }
        }
        for step in 0..<steps {
            clock.withLock { $0 += TimeInterval(Int.random(in: 0...3, using: &rng)) }
            let now = clock.withLock { $0 }
            let index = Int.random(in: 0..<names.count, using: &rng)
            let name = names[index]
            let action = Int.random(in: 0..<100, using: &rng)
            let tracing = ProcessInfo.processInfo.environment["MODEL_TRACE"] == "\(seed)"
            if tracing { print("step \(step) stream \(index) action \(action) model \(model.map { ($0.version, $0.hiddenThrough, $0.deleted, $0.metadata, $0.removedBelow, $0.floor) })") }
            switch action {
            case 0..<40:
                let sent = events(randomSize(&rng))
                let expected: ExpectedVersion = Bool.random(using: &rng) ? .any : .exact(model[index].visibleVersion)
                let result = try await store.append(sent, to: name, expectedVersion: expected)
                #expect(
                    result.version == (sent.isEmpty ? model[index].visibleVersion : model[index].version + UInt64(sent.count)),
                    "seed \(seed) step \(step)")
                record(index, sent, result, expected)
            case 40..<50:
                // A multi-stream append: each part its own run.
                let other = (index + 1 + Int.random(in: 0..<(names.count - 1), using: &rng)) % names.count
                let parts = [index, other].map { ($0, events(max(1, randomSize(&rng)))) }
                let results = try await store.append(parts.map {
                    StreamAppend(stream: names[$0.0], expectedVersion: .exact(model[$0.0].visibleVersion), events: $0.1)
                })
                let expectations = parts.map { ExpectedVersion.exact(model[$0.0].visibleVersion) }
                for ((part, result), expected) in zip(zip(parts, results), expectations) {
                    record(part.0, part.1, result, expected)
                }
            case 50..<65:
                // An idempotent retry of a contiguous slice of an earlier batch none of whose events was scavenged.
                guard let batch = batches.randomElement(using: &rng) else { continue }
                let stream = model[batch.stream]
                let firstVersion = batch.result.version - UInt64(batch.events.count) + 1
                guard firstVersion >= stream.removedBelow else { continue }
                // A prefix states the original expectation; any other slice states .any.
                let prefix = Bool.random(using: &rng)
                let lower = prefix ? 0 : Int.random(in: 0..<batch.events.count, using: &rng)
                let upper = Int.random(in: (lower + 1)...batch.events.count, using: &rng)
                let slice = Array(batch.events[lower..<upper])
                let first = batch.result.positions.lowerBound + UInt64(lower)
                let expected = AppendResult(
                    version: firstVersion + UInt64(upper - 1), positions: first..<(first + UInt64(slice.count)))
                do {
                    let result = try await store.append(
                        slice, to: names[batch.stream], expectedVersion: prefix ? batch.expected : .any)
                    #expect(result == expected, "seed \(seed) step \(step): retry of \(lower)..<\(upper)")
                } catch {
                    Issue.record("seed \(seed) step \(step): retry of \(lower)..<\(upper) of \(batch.events.count): \(error)")
                    return
                }
            case 63..<65:
                // Rewrite the stream's index as stores before runs wrote it: one 8-byte entry per version.
                let prefix = KeyLayout.streamIndexPrefix(name)
                var writes: [KeyWrite] = []
                for entry in try await store.backend.scan(.prefix(prefix), direction: .forward, limit: .max) {
                    let run = try StreamIndexRun.decode(entry, versionOffset: prefix.count, location: "test")
                    guard run.count > 1, Bool.random(using: &rng) else { continue }
                    writes.append(.delete(entry.key))
                    for version in run.versions {
                        writes.append(
                            .put(KeyLayout.streamIndex(name, version: version), PositionValue.encode(run.position(of: version))))
                    }
                }
                if !writes.isEmpty { _ = try await store.backend.commit(KeyValueTransaction(writes: writes)) }
            case 65..<72:
                guard model[index].visibleVersion > 0 else { continue }
                _ = try await store.delete(name, expectedVersion: .exact(model[index].visibleVersion), mode: .soft)
                model[index].deleted = true
                model[index].hiddenThrough = model[index].version
            case 72..<85:
                var metadata = StreamMetadata()
                switch Int.random(in: 0..<6, using: &rng) {
                case 0: break
                case 4: metadata.maxAge = .seconds(Int.random(in: 1...40, using: &rng))
                case 5:
                    metadata.maxAge = .seconds(Int.random(in: 1...40, using: &rng))
                    metadata.maxCount = UInt64.random(in: 1...60, using: &rng)
                case 1: metadata.truncateBefore = UInt64.random(in: 1...(model[index].version + 3), using: &rng)
                case 2: metadata.maxCount = UInt64.random(in: 1...30, using: &rng)
                default:
                    metadata.truncateBefore = UInt64.random(in: 1...(model[index].version + 3), using: &rng)
                    metadata.maxCount = UInt64.random(in: 1...200, using: &rng)
                }
                try await store.setMetadata(metadata, for: name)
                model[index].metadata = metadata
            default:
                var expectedRemoved = 0
                for stream in model.indices {
                    let stop = model[stream].scavengeStop(now: now)
                    expectedRemoved += model[stream].events.filter {
                        $0.version < stop && $0.version >= model[stream].removedBelow
                    }.count
                }
                let removed: Int
                if Bool.random(using: &rng) {
                    removed = try await store.scavenge().eventsRemoved
                } else {
                    // Two scavenges at once: together they remove each hidden event once.
                    async let first = store.scavenge()
                    async let second = KeyValueEventStore(backend: store.backend, clock: store.clock).scavenge()
                    removed = try await first.eventsRemoved + second.eventsRemoved
                }
                #expect(removed == expectedRemoved, "seed \(seed) step \(step): scavenge")
                for stream in model.indices {
                    model[stream].removedBelow = max(model[stream].removedBelow, model[stream].scavengeStop(now: now))
                }
            }
            guard try await check(store, names, model, &rng, step: step, seed: seed, now: now) else { return }
        }
    }

    @Test("random appends, retries, deletions, metadata and scavenges read as the model says", arguments: Backends.all)
    func modelBased(backend: Backend) async throws {
        let many = ProcessInfo.processInfo.environment["MODEL_SEEDS"].flatMap { UInt64($0) }
        // A networked backend pays every step's round trips in real time: one shorter sequence there.
        let seeds: [UInt64] = backend.name == "in-memory"
            ? Array(1...(many ?? 12)) : backend.workloadDivisor > 1 ? [101] : [101, 102, 103]
        let steps = backend.name == "in-memory" ? 250 : backend.workloadDivisor > 1 ? 50 : 120
        for seed in seeds {
            try await backend.withStore { store in
                try await Self.runModel(store, seed: seed, steps: steps)
            }
        }
    }
}

extension StreamIndexRunReviewTests {
    /// The same race without any hook: one task appends batches of 10 to a stream keeping its last 12 events and
    /// scavenges after each (which trims the previous batch's run to its last 2 versions); readers read backward from
    /// 5 versions below the head meanwhile, inside the last run.
    @Test("backward reads while appends and scavenges run under maxCount do not trap")
    func backwardReadsUnderConcurrentScavenge() async {
        await #expect(processExitsWith: .success) {
            let store = KeyValueEventStore.inMemory()
            let stream = try StreamName("kept-12")
            try await store.setMetadata(StreamMetadata(maxCount: 12), for: stream)
            _ = try await store.append(makeEvents(10), to: stream, expectedVersion: .noStream)
            let done = Locked(false)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    defer { done.withLock { $0 = true } }
                    for _ in 0..<1_000 {
                        _ = try await store.append(makeEvents(10), to: stream, expectedVersion: .any)
                        _ = try await store.scavenge(stream)
                    }
                }
                for _ in 0..<2 {
                    group.addTask {
                        let reader = KeyValueEventStore(backend: store.backend, readBatchSize: 3)
                        while !done.withLock({ $0 }) {
                            let version = try await store.version(of: stream)
                            let events = try await reader.read(
                                stream, from: .version(version - 5), direction: .backward, limit: 4)
                            let versions = events.map(\.version)
                            if versions != versions.sorted(by: >) { exit(3) }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
    }
}


extension StreamIndexRunReviewTests {
    @Test("stream subscriptions deliver every version once across runs, catch-up then live", arguments: Backends.all)
    func subscriptionAcrossRuns(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("sub-runs")
            var rng = SplitMix64(state: 7)
            let sizes = (0..<40).map { _ in Int.random(in: 1...12, using: &rng) }
            let total = UInt64(sizes.reduce(0, +))
            // Half the batches before subscribing, half while it runs.
            for size in sizes.prefix(20) { _ = try await store.append(makeEvents(size), to: stream, expectedVersion: .any) }
            for bufferSize in [1, 2, 3, 5, 7] {
                let subscription = store.subscribe(to: stream, from: .version(3), bufferSize: bufferSize)
                let writer = Task {
                    for size in sizes.suffix(20) where bufferSize == 1 {
                        _ = try await store.append(makeEvents(size), to: stream, expectedVersion: .any)
                    }
                }
                var versions: [UInt64] = []
                for try await message in subscription {
                    if case .event(let event) = message {
                        versions.append(event.version)
                        if event.version == total { break }
                    }
                }
                try await writer.value
                #expect(versions == Array(3...total), "buffer \(bufferSize)")
            }
        }
    }
}

extension StreamIndexRunReviewTests {
    /// Damaged bytes: the event-id index names the last global position, and a record of this stream's version 1
    /// sits there. A retry of that event must be a typed error (or a result), not a trap on `firstPosition + count`.
    @Test("a retry whose event-id entry names position UInt64.max is a typed error, not a trap")
    func retryAtLastPosition() async {
        await #expect(processExitsWith: .success) {
            let store = KeyValueEventStore.inMemory()
            let stream = try StreamName("damaged-id")
            let event = makeEvent("x")
            _ = try await store.append([event], to: stream, expectedVersion: .noStream)
            guard let record = try await store.backend.get(KeyLayout.log(1))?.value else { exit(2) }
            _ = try await store.backend.commit(KeyValueTransaction(writes: [
                .put(KeyLayout.log(.max), record), .put(KeyLayout.eventID(event.id), PositionValue.encode(.max)),
            ]))
            do { _ = try await store.append([event], to: stream, expectedVersion: .noStream) } catch EventStoreError.corrupted {}
        }
    }
}
