// The global log under real concurrency (written by a review in the twenty-fifth session, which found no defect;
// kept as a guard). Many writers (single appends, batches, session appends, appends that fail on expected version
// or on a tombstone, appends cancelled mid-flight), retention (truncation,
// soft and hard deletion, scavenge) and several readers at once: pagers over readAll and live subscriptions to all.
// What every reader saw is compared with the final log: positions strictly increase, no gap is filled later, no
// duplicate, every delivered event has the bytes, stream and version it was written with, and no event of a failed
// append is ever delivered. Seeded, fixed iteration counts; nothing races a deadline.

import EventStore
import EventStoreKV
import Foundation
import Testing

/// What the writers did: the payload and stream of every event they tried to write, and which attempts failed.
actor WriteLedger {
    struct Written: Sendable { var stream: StreamName; var data: Data; var type: String }
    var attempted: [UUID: Written] = [:]
    var failed: Set<UUID> = []
    var unexpected: [String] = []

    func attempt(_ events: [EventData], to stream: StreamName) {
        for event in events { attempted[event.id] = Written(stream: stream, data: event.data, type: event.type) }
    }
    func fail(_ events: [EventData]) { for event in events { failed.insert(event.id) } }
    func note(_ message: String) { unexpected.append(message) }
}

enum GlobalLogScenario {
    static let sentinelType = "Sentinel"

    static func event(_ stream: StreamName, writer: Int) -> EventData {
        let id = UUID()
        return EventData(id: id, type: "W\(writer)", data: Data("\(stream)|\(id)".utf8))
    }

    /// Runs one writer's seeded operations.
    static func writer(
        _ index: Int, seed: UInt64, operations: Int, store: KeyValueEventStore, streams: [StreamName],
        tombstoned: StreamName, ledger: WriteLedger
    ) async throws {
        var rng = SplitMix64(state: seed)
        let own = try StreamName("session-\(index)")
        for _ in 0..<operations {
            let stream = streams[Int(rng.next() % UInt64(streams.count))]
            let kind = rng.next() % 10
            switch kind {
            case 0, 1, 2:  // single
                let events = [event(stream, writer: index)]
                await ledger.attempt(events, to: stream)
                do { _ = try await store.append(events, to: stream, expectedVersion: .any) } catch {
                    await ledger.fail(events)
                    await ledger.note("single append to \(stream) failed: \(error)")
                }
            case 3, 4:  // batch, possibly multi-stream
                let other = streams[Int(rng.next() % UInt64(streams.count))]
                let first = (0..<Int(1 + rng.next() % 5)).map { _ in event(stream, writer: index) }
                var parts = [StreamAppend(stream: stream, expectedVersion: .any, events: first)]
                await ledger.attempt(first, to: stream)
                if other != stream, rng.next() % 2 == 0 {
                    let second = (0..<Int(1 + rng.next() % 3)).map { _ in event(other, writer: index) }
                    await ledger.attempt(second, to: other)
                    parts.append(StreamAppend(stream: other, expectedVersion: .any, events: second))
                }
                do { _ = try await store.append(parts) } catch {
                    for part in parts { await ledger.fail(part.events) }
                    await ledger.note("batch append failed: \(error)")
                }
            case 5:  // fails on expected version: must never be seen
                let events = (0..<Int(1 + rng.next() % 3)).map { _ in event(stream, writer: index) }
                await ledger.attempt(events, to: stream)
                do {
                    _ = try await store.append(events, to: stream, expectedVersion: .exact(1_000_000))
                    await ledger.note("an append expecting version 1,000,000 of \(stream) succeeded")
                } catch EventStoreError.wrongExpectedVersion {
                    await ledger.fail(events)
                }
            case 6:  // to the hard-deleted stream (once deleted): must never be seen if refused
                let events = [event(tombstoned, writer: index)]
                await ledger.attempt(events, to: tombstoned)
                do { _ = try await store.append(events, to: tombstoned, expectedVersion: .any) } catch EventStoreError.streamDeleted {
                    await ledger.fail(events)
                }
            case 7:  // session append on the writer's own stream
                let events = (0..<Int(1 + rng.next() % 3)).map { _ in event(own, writer: index) }
                await ledger.attempt(events, to: own)
                let session = try await store.openSession(
                    on: own, sessionTimeout: .seconds(60), openTimeout: .seconds(60))
                do { _ = try await session.append(events, expectedVersion: .any) } catch {
                    await ledger.fail(events)
                    await ledger.note("session append failed: \(error)")
                }
                try await session.close()
            default:
                // Cancelled mid-flight. EventStoring.append: "a caller never gets CancellationError for an append
                // that may have been written", so one that throws it must never be seen.
                let events = (0..<Int(1 + rng.next() % 4)).map { _ in event(stream, writer: index) }
                await ledger.attempt(events, to: stream)
                let yields = Int(rng.next() % 4)
                let task = Task { try await store.append(events, to: stream, expectedVersion: .any) }
                for _ in 0..<yields { await Task.yield() }
                task.cancel()
                if case .failure(let error) = await task.result {
                    await ledger.fail(events)
                    if !(error is CancellationError) { await ledger.note("cancelled append threw \(error)") }
                }
            }
        }
    }

    /// Truncates, soft-deletes, hard-deletes once and scavenges, seeded.
    static func retention(
        seed: UInt64, rounds: Int, store: KeyValueEventStore, streams: [StreamName], tombstoned: StreamName,
        ledger: WriteLedger
    ) async throws {
        var rng = SplitMix64(state: seed)
        for round in 0..<rounds {
            let stream = streams[Int(rng.next() % UInt64(streams.count))]
            switch rng.next() % 3 {
            case 0:
                let version = try await store.version(of: stream)
                if version > 2 {
                    _ = try await store.setMetadata(StreamMetadata(truncateBefore: version - 1), for: stream)
                }
            case 1:
                do { _ = try await store.delete(stream, expectedVersion: .any, mode: .soft) } catch EventStoreError
                    .streamNotFound
                {}
            default:
                _ = try await store.setMetadata(StreamMetadata(maxCount: 2), for: stream)
            }
            if round == rounds / 3 {
                do { _ = try await store.delete(tombstoned, expectedVersion: .any, mode: .hard) } catch {
                    await ledger.note("hard delete failed: \(error)")
                }
            }
            _ = try await store.scavenge()
            await Task.yield()
        }
    }

    /// Pages through the global log until the sentinel, `limit` events at a time.
    static func pager(store: KeyValueEventStore, limit: Int) async throws -> [RecordedEvent] {
        var seen: [RecordedEvent] = []
        var next: UInt64 = 1
        while true {
            let page = try await store.readAll(from: next, limit: limit)
            seen += page
            if let last = page.last { next = last.position + 1 }
            if page.contains(where: { $0.type == sentinelType }) { return seen }
            await Task.yield()
        }
    }

    /// Pages through the category (or, with `type`, the event type) index until the sentinel's position is passed.
    static func indexPager(store: KeyValueEventStore, category: String?, type: String?, limit: Int) async throws
        -> [RecordedEvent]
    {
        var seen: [RecordedEvent] = []
        var next: UInt64 = 1
        while true {
            let page: [RecordedEvent]
            if let category {
                page = try await store.readCategory(category, from: next, limit: limit)
            } else {
                page = try await store.readEvents(ofType: type!, from: next, limit: limit)
            }
            seen += page
            if let last = page.last { next = last.position + 1 }
            if page.contains(where: { $0.type == sentinelType }) { return seen }
            await Task.yield()
        }
    }

    /// Pages forward through `stream` until its sentinel.
    static func streamPager(store: KeyValueEventStore, stream: StreamName, limit: Int) async throws -> [RecordedEvent] {
        var seen: [RecordedEvent] = []
        var next: UInt64 = 1
        while true {
            let page = try await store.read(stream, from: .version(next), direction: .forward, limit: limit)
            seen += page
            if let last = page.last { next = last.version + 1 }
            if page.contains(where: { $0.type == sentinelType }) { return seen }
            await Task.yield()
        }
    }

    /// Reads `stream` backward in pages, pass after pass, until a pass starts at the sentinel; returns every pass
    /// reversed into forward order.
    static func backwardPasses(store: KeyValueEventStore, stream: StreamName, limit: Int) async throws
        -> [[RecordedEvent]]
    {
        var passes: [[RecordedEvent]] = []
        while true {
            var pass: [RecordedEvent] = []
            var start = ReadStart.end
            while true {
                let page = try await store.read(stream, from: start, direction: .backward, limit: limit)
                pass += page
                guard let last = page.last, last.version > 1, page.count == limit else { break }
                start = .version(last.version - 1)
                await Task.yield()
            }
            passes.append(pass.reversed())
            if pass.first?.type == sentinelType { return passes }
            await Task.yield()
        }
    }

    /// Follows a stream subscription until the sentinel.
    static func streamSubscriber(_ subscription: StreamSubscription) async throws -> [RecordedEvent] {
        var seen: [RecordedEvent] = []
        for try await message in subscription {
            guard let event = message.event else { continue }
            seen.append(event)
            if event.type == sentinelType { return seen }
        }
        return seen
    }

    /// Checks what a reader of one stream saw: versions and positions strictly increase, the stream, bytes and
    /// places are those written, and no event of a failed append.
    static func checkStream(
        _ name: String, _ seen: [RecordedEvent], stream: StreamName, final: [UInt64: RecordedEvent], ledger: WriteLedger
    ) async -> [String] {
        var problems: [String] = []
        let attempted = await ledger.attempted
        let failed = await ledger.failed
        var previous: (version: UInt64, position: UInt64) = (0, 0)
        for event in seen {
            if event.stream != stream { problems.append("\(name): event of \(event.stream) in a read of \(stream)") }
            if event.version <= previous.version || event.position <= previous.position {
                problems.append(
                    "\(name): \(event.version)@\(event.position) after \(previous.version)@\(previous.position)")
            }
            previous = (event.version, event.position)
            if event.type == sentinelType { continue }
            if failed.contains(event.id) { problems.append("\(name): failed append's event at \(event.position)") }
            if let written = attempted[event.id] {
                if written.stream != event.stream || written.data != event.data {
                    problems.append("\(name): wrong bytes at version \(event.version)")
                }
            } else {
                problems.append("\(name): unknown event \(event.id)")
            }
            if let stored = final[event.position], stored.id != event.id || stored.version != event.version {
                problems.append("\(name): version \(event.version) at \(event.position), the log holds \(stored.version)")
            }
        }
        return problems
    }

    /// Follows a subscription to all until the sentinel.
    static func subscriber(_ subscription: AllSubscription) async throws -> [RecordedEvent] {
        var seen: [RecordedEvent] = []
        for try await message in subscription {
            guard let event = message.event else { continue }
            seen.append(event)
            if event.type == sentinelType { return seen }
        }
        return seen
    }

    /// Follows a subscription until the sentinel, returning also the first caught-up position (where `.end` began).
    static func lateSubscriber(_ subscription: AllSubscription) async throws -> (UInt64?, [RecordedEvent]) {
        var seen: [RecordedEvent] = []
        var firstCaughtUp: UInt64?
        for try await message in subscription {
            switch message {
            case .caughtUp(let through):
                if firstCaughtUp == nil && seen.isEmpty { firstCaughtUp = through }
            case .event(let event):
                seen.append(event)
                if event.type == sentinelType { return (firstCaughtUp, seen) }
            }
        }
        return (firstCaughtUp, seen)
    }

    /// Checks what one reader saw against the final log and the ledger.
    static func check(
        _ name: String, _ seen: [RecordedEvent], from start: UInt64, final: [UInt64: RecordedEvent],
        ledger: WriteLedger, filter: SubscriptionFilter = .all
    ) async -> [String] {
        var problems: [String] = []
        let attempted = await ledger.attempted
        let failed = await ledger.failed
        var previous: UInt64 = 0
        var delivered = Set<UInt64>()
        for event in seen {
            if !filter.matches(event) { problems.append("\(name): delivered \(event.stream) past its filter") }
            if event.position <= previous {
                problems.append("\(name): position \(event.position) after \(previous)")
            }
            previous = max(previous, event.position)
            delivered.insert(event.position)
            if event.type == sentinelType || event.stream.isSystem { continue }
            if failed.contains(event.id) {
                problems.append("\(name): event \(event.id) of a failed append delivered at \(event.position)")
            }
            if let written = attempted[event.id] {
                if written.stream != event.stream || written.data != event.data || written.type != event.type {
                    problems.append("\(name): event \(event.id) at \(event.position) has wrong stream/bytes")
                }
            } else {
                problems.append("\(name): unknown event \(event.id) at \(event.position) in \(event.stream)")
            }
            if let stored = final[event.position] {
                if stored.id != event.id || stored.stream != event.stream || stored.version != event.version
                    || stored.data != event.data
                {
                    problems.append(
                        "\(name): position \(event.position) delivered as \(event.stream)@\(event.version) "
                            + "but the log holds \(stored.stream)@\(stored.version)")
                }
            }
        }
        // No gap filled later: every surviving event at or below the last delivered position was delivered.
        for (position, event) in final
        where position >= start && position <= previous && !delivered.contains(position) && filter.matches(event) {
            problems.append("\(name): missed position \(position) (\(event.stream)@\(event.version)) below \(previous)")
        }
        return problems
    }

    static func run(
        backend: Backend, seed: UInt64, maintain: Bool = false,
        writingStore: (@Sendable (KeyValueEventStore) async throws -> KeyValueEventStore)? = nil
    ) async throws {
        try await backend.withStore { store in
            let writing = try await writingStore?(store) ?? store
            let streams = try (0..<6).map { try StreamName("acct-\($0)") }
            let tombstoned = try StreamName("doomed-0")
            let ledger = WriteLedger()
            let writers = 4
            let operations = Int(ProcessInfo.processInfo.environment["EVENTSTORE_GLOBAL_LOG_OPERATIONS"] ?? "") ?? 50
            // Subscriptions and pagers start before any write.
            let subscriptions = [
                store.subscribeToAll(from: .start, bufferSize: 1),
                store.subscribeToAll(from: .start, bufferSize: 7),
                store.subscribeToAll(from: .start, bufferSize: 256),
            ]
            let readers = Task {
                try await withThrowingTaskGroup(of: (String, [RecordedEvent]).self) { group in
                    for (index, subscription) in subscriptions.enumerated() {
                        group.addTask { ("subscription \(index)", try await subscriber(subscription)) }
                    }
                    for limit in [1, 5, 64] {
                        group.addTask { ("pager \(limit)", try await pager(store: store, limit: limit)) }
                    }
                    for limit in [1, 3] {
                        group.addTask {
                            ("stream pager \(limit)", try await streamPager(store: store, stream: streams[0], limit: limit))
                        }
                    }
                    for limit in [1, 4] {
                        group.addTask {
                            let passes = try await backwardPasses(store: store, stream: streams[0], limit: limit)
                            for (index, pass) in passes.enumerated() {
                                for problem in await checkStream(
                                    "backward \(limit) pass \(index)", pass, stream: streams[0], final: [:], ledger: ledger)
                                {
                                    await ledger.note(problem)
                                }
                            }
                            return ("stream backward \(limit)", passes.last ?? [])
                        }
                    }
                    let streamSubscription = store.subscribe(to: streams[0], from: .start, bufferSize: 2)
                    group.addTask { ("stream subscription", try await streamSubscriber(streamSubscription)) }
                    for limit in [2, 50] {
                        group.addTask {
                            var events = try await indexPager(store: store, category: "acct", type: nil, limit: limit)
                            events.removeAll { $0.stream.category != "acct" }
                            return ("category pager \(limit)", events)
                        }
                    }
                    var all: [(String, [RecordedEvent])] = []
                    for try await result in group { all.append(result) }
                    return all
                }
            }
            let sentinelFilter = SubscriptionFilter(streamPrefixes: ["acct-", "sentinel"])
            let late = Task {
                while try await store.lastPosition() < 60 { await Task.yield() }
                let middle = try await store.lastPosition() / 2
                let subscriptions: [(String, AllSubscription, UInt64?, SubscriptionFilter)] = [
                    ("late start", store.subscribeToAll(from: .start, bufferSize: 3), 1, .all),
                    ("late end", store.subscribeToAll(from: .end, bufferSize: 2), nil, .all),
                    ("late after \(middle)", store.subscribeToAll(from: .after(middle), bufferSize: 5), middle + 1, .all),
                    ("late filtered", store.subscribeToAll(from: .start, filter: sentinelFilter, bufferSize: 4), 1,
                        sentinelFilter),
                ]
                return try await withThrowingTaskGroup(of: (String, UInt64, SubscriptionFilter, [RecordedEvent]).self) {
                    group in
                    for (name, subscription, start, filter) in subscriptions {
                        group.addTask {
                            let (caughtUp, events) = try await lateSubscriber(subscription)
                            return (name, start ?? ((caughtUp ?? .max - 1) + 1), filter, events)
                        }
                    }
                    var all: [(String, UInt64, SubscriptionFilter, [RecordedEvent])] = []
                    for try await result in group { all.append(result) }
                    return all
                }
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<writers {
                    group.addTask {
                        try await writer(
                            index, seed: seed &+ UInt64(index), operations: operations, store: writing, streams: streams,
                            tombstoned: tombstoned, ledger: ledger)
                    }
                }
                group.addTask {
                    try await retention(
                        seed: seed &* 31, rounds: 20, store: writing, streams: Array(streams.prefix(3)),
                        tombstoned: tombstoned, ledger: ledger)
                }
                if maintain, let engine = store.backend as? PageFileKeyValueStore {
                    group.addTask {
                        for round in 0..<40 {
                            if round % 4 == 3 { _ = try await engine.compact() } else { try await engine.checkpoint() }
                            await Task.yield()
                        }
                    }
                }
                try await group.waitForAll()
            }
            _ = try await store.append(
                [EventData(type: sentinelType, data: Data())], to: streams[0], expectedVersion: .any)
            _ = try await store.append(
                [EventData(type: sentinelType, data: Data())], to: try StreamName("acct-sentinel"), expectedVersion: .any)
            let seen = try await readers.value
            let log = try await store.readAll(from: 1, limit: .max)
            var final: [UInt64: RecordedEvent] = [:]
            for event in log { final[event.position] = event }
            var problems = await check("final log", log, from: 1, final: final, ledger: ledger)
            for (name, events) in seen where name.hasPrefix("stream") {
                problems += await checkStream(name, events, stream: streams[0], final: final, ledger: ledger)
            }
            for (name, events) in seen where !name.hasPrefix("stream") {
                let filter = name.hasPrefix("category") ? SubscriptionFilter.streamPrefix("acct-") : .all
                problems += await check(name, events, from: 1, final: final, ledger: ledger, filter: filter)
            }
            let lateSeen = try await late.value
            for (name, start, filter, events) in lateSeen {
                problems += await check(name, events, from: start, final: final, ledger: ledger, filter: filter)
            }
            problems += await ledger.unexpected
            if ProcessInfo.processInfo.environment["EVENTSTORE_GLOBAL_LOG_VERBOSE"] != nil {
                print("global log: \(backend.name) seed \(seed): log \(log.count) events, head \(try await store.lastPosition()), failed \(await ledger.failed.count), readers \(seen.map { "\($0.0)=\($0.1.count)" }) late \(lateSeen.map { "\($0.0) from \($0.1)=\($0.3.count)" })")
            }
            #expect(problems.isEmpty, "\(problems.prefix(20).joined(separator: "\n"))")
        }
    }
}

extension GlobalLogScenario {
    /// A read-only store following a writer that commits, checkpoints, scavenges and compacts: its pagers and
    /// subscriptions must see a prefix of the writer's log, in order, never torn.
    static func runFollower(seed: UInt64, compacting: Bool, tinyWatch: Bool = false) async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("eventstore-globallog-follow-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = PageFileOptions(pageSize: 4096, cacheSizeMB: 1, checkpointThresholdMB: 1)
        let writerEngine = try await PageFileKeyValueStore.open(directory: directory, options: options)
        let store = KeyValueEventStore(backend: writerEngine)
        options.readOnly = true
        if tinyWatch {
            options.historyLimit = 1
            options.watchBufferLimit = 1
        }
        let readerEngine = try await PageFileKeyValueStore.open(directory: directory, options: options)
        let reader = KeyValueEventStore(backend: readerEngine)
        let following = Task { try await readerEngine.followWriter(checkingEvery: .milliseconds(1)) }
        let streams = try (0..<6).map { try StreamName("acct-\($0)") }
        let tombstoned = try StreamName("doomed-0")
        let ledger = WriteLedger()
        let operations = Int(ProcessInfo.processInfo.environment["EVENTSTORE_GLOBAL_LOG_OPERATIONS"] ?? "") ?? 50
        let subscriptions = [
            reader.subscribeToAll(from: .start, bufferSize: 1), reader.subscribeToAll(from: .start, bufferSize: 64),
        ]
        let readers = Task {
            try await withThrowingTaskGroup(of: (String, [RecordedEvent]).self) { group in
                for (index, subscription) in subscriptions.enumerated() {
                    group.addTask { ("follower subscription \(index)", try await subscriber(subscription)) }
                }
                for limit in [3, 64] {
                    group.addTask { ("follower pager \(limit)", try await pager(store: reader, limit: limit)) }
                }
                var all: [(String, [RecordedEvent])] = []
                for try await result in group { all.append(result) }
                return all
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<4 {
                group.addTask {
                    try await writer(
                        index, seed: seed &+ UInt64(index), operations: operations, store: store, streams: streams,
                        tombstoned: tombstoned, ledger: ledger)
                }
            }
            group.addTask {
                try await retention(
                    seed: seed &* 31, rounds: 20, store: store, streams: Array(streams.prefix(3)),
                    tombstoned: tombstoned, ledger: ledger)
            }
            group.addTask {
                for round in 0..<30 {
                    if compacting && round % 5 == 4 { _ = try await writerEngine.compact() } else {
                        try await writerEngine.checkpoint()
                    }
                    await Task.yield()
                }
            }
            try await group.waitForAll()
        }
        _ = try await store.append(
            [EventData(type: sentinelType, data: Data())], to: try StreamName("sentinel"), expectedVersion: .any)
        let seen: [(String, [RecordedEvent])]
        do {
            seen = try await readers.value
        } catch {
            following.cancel()
            try? await reader.close()
            try? await store.close()
            throw error
        }
        following.cancel()
        _ = try? await following.value
        let log = try await store.readAll(from: 1, limit: .max)
        var final: [UInt64: RecordedEvent] = [:]
        for event in log { final[event.position] = event }
        var problems: [String] = []
        for (name, events) in seen {
            problems += await check(name, events, from: 1, final: final, ledger: ledger)
        }
        problems += await ledger.unexpected
        if ProcessInfo.processInfo.environment["EVENTSTORE_GLOBAL_LOG_VERBOSE"] != nil {
            print("global log: follower seed \(seed): log \(log.count), readers \(seen.map { "\($0.0)=\($0.1.count)" })")
        }
        try await reader.close()
        try await store.close()
        #expect(problems.isEmpty, "\(problems.prefix(20).joined(separator: "\n"))")
    }
}

extension Backend {
    /// Backends whose change feeds keep one change of history and buffer one change per watcher, so that live
    /// subscriptions keep losing their watch (overflow, history gone) and must re-read.
    static let tinyWatch: [Backend] = [
        Backend(name: "in-memory, tiny watch") { limits in
            let store = KeyValueEventStore(
                backend: InMemoryKeyValueStore(historyLimit: 1, watchBufferLimit: 1), limits: limits)
            return TestStore(store: store) { try? await store.close() }
        },
        Backend(name: "page-file, tiny watch") { limits in
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("eventstore-globallog-\(UUID().uuidString)").path
            var options = PageFileOptions()
            options.historyLimit = 1
            options.watchBufferLimit = 1
            let store = KeyValueEventStore(
                backend: try await PageFileKeyValueStore.open(directory: directory, options: options), limits: limits)
            return TestStore(store: store) {
                try? await store.close()
                try? FileManager.default.removeItem(atPath: directory)
            }
        },
    ]
}

@Suite("Global log under concurrency")
struct GlobalLogConcurrencyTests {
    @Test("readers and live subscriptions see the global log as committed, under writers and retention",
        arguments: Backends.all, [UInt64(1), 2, 3])
    func concurrentGlobalLog(backend: Backend, seed: UInt64) async throws {
        try await GlobalLogScenario.run(backend: backend, seed: seed)
    }

    @Test("subscriptions whose watches keep overflowing still see the global log as committed",
        arguments: Backend.tinyWatch, [UInt64(4), 5])
    func tinyWatch(backend: Backend, seed: UInt64) async throws {
        try await GlobalLogScenario.run(backend: backend, seed: seed)
    }

    @Test("readers in the writer's process see the global log as committed while it checkpoints and compacts",
        arguments: [UInt64(6), 7, 8])
    func checkpointingWriter(seed: UInt64) async throws {
        let backend = Backend(name: "page-file, small") { limits in
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("eventstore-globallog-\(UUID().uuidString)").path
            let options = PageFileOptions(pageSize: 4096, cacheSizeMB: 1, checkpointThresholdMB: 1)
            let store = KeyValueEventStore(
                backend: try await PageFileKeyValueStore.open(directory: directory, options: options), limits: limits)
            return TestStore(store: store) {
                try? await store.close()
                try? FileManager.default.removeItem(atPath: directory)
            }
        }
        try await GlobalLogScenario.run(backend: backend, seed: seed, maintain: true)
    }

    @Test(
        "on etcd, readers of one node see the global log that writers of another node commit",
        .enabled(if: Backend.etcd != nil, "needs ETCD_ENDPOINTS (a cluster: scripts/etcd-cluster.sh)"),
        arguments: [UInt64(41), 42])
    func etcdTwoNodes(seed: UInt64) async throws {
        guard let list = ProcessInfo.processInfo.environment["ETCD_ENDPOINTS"], !list.isEmpty else { return }
        let namespace = Array("globallog/\(UUID().uuidString)/".utf8)
        let configuration = EtcdConfiguration(
            endpoints: try EtcdConfiguration.endpoints(parsing: list), namespace: namespace,
            maximumTransactionOperations: 10_000, maximumRequestBytes: 10 << 20)
        let backend = Backend(name: "etcd, node A") { limits in
            let engine = try EtcdKeyValueStore(configuration: configuration)
            let store = KeyValueEventStore(backend: engine, limits: limits)
            return TestStore(store: store) {
                try? await engine.removeAllKeys()
                try? await store.close()
            }
        }
        let nodeB = Locked<KeyValueEventStore?>(nil)
        try await GlobalLogScenario.run(backend: backend, seed: seed, writingStore: { _ in
            let store = KeyValueEventStore(backend: try EtcdKeyValueStore(configuration: configuration))
            nodeB.withLock { $0 = store }
            return store
        })
        try await nodeB.withLock { $0 }?.close()
    }

    @Test("a read-only store following a writer sees a prefix of its global log", arguments: [UInt64(1), 2, 3])
    func followerSeesPrefix(seed: UInt64) async throws {
        try await GlobalLogScenario.runFollower(seed: seed, compacting: false)
    }

    @Test("a read-only follower whose watches keep overflowing sees a prefix of the writer's log",
        arguments: [UInt64(21), 22])
    func followerTinyWatch(seed: UInt64) async throws {
        try await GlobalLogScenario.runFollower(seed: seed, compacting: true, tinyWatch: true)
    }

    @Test("a read-only store following a compacting writer sees a prefix of its global log", arguments: [UInt64(1), 2])
    func followerSeesPrefixAcrossCompaction(seed: UInt64) async throws {
        try await GlobalLogScenario.runFollower(seed: seed, compacting: true)
    }
}

@Suite("Global log: a follower reading large records")
struct GlobalLogFollowerLargeRecordTests {
    @Test("a read-only store following a writer of large events reads each one whole", arguments: [UInt64(7), 8])
    func largeRecords(seed: UInt64) async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("eventstore-globallog-large-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = PageFileOptions(pageSize: 4096, cacheSizeMB: 1, checkpointThresholdMB: 1)
        let writerEngine = try await PageFileKeyValueStore.open(directory: directory, options: options)
        let store = KeyValueEventStore(backend: writerEngine)
        options.readOnly = true
        let readerEngine = try await PageFileKeyValueStore.open(directory: directory, options: options)
        let reader = KeyValueEventStore(backend: readerEngine)
        let following = Task { try await readerEngine.followWriter(checkingEvery: .milliseconds(1)) }
        let pager = Task { try await GlobalLogScenario.pager(store: reader, limit: 2) }
        let subscription = Task { try await GlobalLogScenario.subscriber(reader.subscribeToAll(from: .start, bufferSize: 2)) }
        var rng = SplitMix64(state: seed)
        var written: [UUID: Data] = [:]
        try await withThrowingTaskGroup(of: [(UUID, Data)].self) { group in
            for writer in 0..<3 {
                var local = SplitMix64(state: rng.next())
                group.addTask {
                    var mine: [(UUID, Data)] = []
                    for _ in 0..<25 {
                        let count = Int(1 + local.next() % 3)
                        let events = (0..<count).map { _ -> EventData in
                            let size = Int(local.next() % 150_000)
                            let byte = UInt8(truncatingIfNeeded: local.next())
                            return EventData(type: "Big", data: Data(repeating: byte, count: size))
                        }
                        _ = try await store.append(events, to: try StreamName("big-\(writer)"), expectedVersion: .any)
                        mine += events.map { ($0.id, $0.data) }
                    }
                    return mine
                }
            }
            for try await mine in group { for (id, data) in mine { written[id] = data } }
        }
        _ = try await store.append(
            [EventData(type: GlobalLogScenario.sentinelType, data: Data())], to: try StreamName("sentinel"),
            expectedVersion: .any)
        let paged = try await pager.value
        let followed = try await subscription.value
        following.cancel()
        _ = try? await following.value
        let final = try await store.readAll(from: 1, limit: .max)
        var problems: [String] = []
        for (name, seen) in [("pager", paged), ("subscription", followed)] {
            if seen.map(\.position) != final.map(\.position) {
                problems.append("\(name) saw positions \(seen.map(\.position).prefix(50)) of \(final.count)")
            }
            for event in seen where event.type != GlobalLogScenario.sentinelType && written[event.id] != event.data {
                problems.append("\(name): wrong bytes at \(event.position)")
            }
        }
        try await reader.close()
        try await store.close()
        #expect(problems.isEmpty, "\(problems.prefix(10).joined(separator: "\n"))")
    }
}

/// What one projection run handled, shared with its task.
actor HandledLog {
    var runs: [[RecordedEvent]] = []
    func start() { runs.append([]) }
    func add(_ event: RecordedEvent) { runs[runs.count - 1].append(event) }
}

@Suite("Global log: checkpointed projections under writers")
struct GlobalLogProjectionReviewTests {
    @Test("projections restarted and cancelled under writers never checkpoint past an unhandled event",
        arguments: [Backend.inMemory, Backend.pageFile], [UInt64(11), 12])
    func projections(backend: Backend, seed: UInt64) async throws {
        try await backend.withStore { store in
            let streams = try (0..<4).map { try StreamName("acct-\($0)") }
            let ledger = WriteLedger()
            let filter = SubscriptionFilter.streamPrefix("acct-1", "acct-2", "sentinel")
            let handled = HandledLog()
            let consumer = Task {
                var rng = SplitMix64(state: seed &* 7)
                var checkpoints: [UInt64] = []
                while true {
                    await handled.start()
                    let projection = CheckpointedProjection(
                        store: store, consumer: "global-log", checkpointEvery: Int(1 + rng.next() % 4), filter: filter,
                        bufferSize: Int(1 + rng.next() % 8))
                    let yields = Int(rng.next() % 40)
                    let run = Task {
                        try await projection.run(until: .whenCaughtUp) { event in await handled.add(event) }
                    }
                    if rng.next() % 2 == 0 {
                        for _ in 0..<yields { await Task.yield() }
                        run.cancel()
                    }
                    let saved = try await run.value
                    checkpoints.append(saved)
                    let runs = await handled.runs
                    if runs.last!.contains(where: { $0.type == GlobalLogScenario.sentinelType }) {
                        return (checkpoints, runs)
                    }
                    await Task.yield()
                }
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<3 {
                    group.addTask {
                        try await GlobalLogScenario.writer(
                            index, seed: seed &+ UInt64(index), operations: 60, store: store, streams: streams,
                            tombstoned: try StreamName("doomed-0"), ledger: ledger)
                    }
                }
                try await group.waitForAll()
            }
            _ = try await store.append(
                [EventData(type: GlobalLogScenario.sentinelType, data: Data())], to: try StreamName("sentinel"),
                expectedVersion: .any)
            let (checkpoints, runs) = try await consumer.value
            let log = try await store.readAll(from: 1, limit: .max)
            var problems: [String] = []
            var handledPositions = Set<UInt64>()
            var resumeAfter: UInt64 = 0
            for (index, run) in runs.enumerated() {
                var previous: UInt64 = resumeAfter
                for event in run {
                    if event.position <= previous {
                        problems.append("run \(index): \(event.position) after \(previous) (resumed after \(resumeAfter))")
                    }
                    if !filter.matches(event) { problems.append("run \(index): \(event.stream) past the filter") }
                    previous = event.position
                    handledPositions.insert(event.position)
                }
                if index < checkpoints.count {
                    let saved = checkpoints[index]
                    // Every matching event up to the checkpoint was handled by this run or an earlier one.
                    for event in log where event.position <= saved && filter.matches(event)
                        && !handledPositions.contains(event.position)
                    {
                        problems.append("run \(index) checkpointed \(saved) past unhandled \(event.position)")
                    }
                    resumeAfter = saved
                }
            }
            problems += await ledger.unexpected
            #expect(problems.isEmpty, "\(problems.prefix(20).joined(separator: "\n"))")
        }
    }
}

@Suite("Global log: a follower across writer restarts")
struct GlobalLogFollowerRestartTests {
    @Test("a read-only store following a writer that closes and reopens sees its log, once, in order",
        arguments: [UInt64(31), 32])
    func writerRestarts(seed: UInt64) async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("eventstore-globallog-restart-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var options = PageFileOptions(pageSize: 4096, cacheSizeMB: 1, checkpointThresholdMB: 1)
        var writerEngine = try await PageFileKeyValueStore.open(directory: directory, options: options)
        var store = KeyValueEventStore(backend: writerEngine)
        var readOnly = options
        readOnly.readOnly = true
        let readerEngine = try await PageFileKeyValueStore.open(directory: directory, options: readOnly)
        let reader = KeyValueEventStore(backend: readerEngine)
        let following = Task { try await readerEngine.followWriter(checkingEvery: .milliseconds(1)) }
        let pager = Task { try await GlobalLogScenario.pager(store: reader, limit: 4) }
        let subscription = Task {
            try await GlobalLogScenario.subscriber(reader.subscribeToAll(from: .start, bufferSize: 3))
        }
        var rng = SplitMix64(state: seed)
        for round in 0..<12 {
            for _ in 0..<Int(5 + rng.next() % 20) {
                let events = (0..<Int(1 + rng.next() % 4)).map { _ in
                    EventData(type: "R\(round)", data: Data(repeating: UInt8(truncatingIfNeeded: rng.next()), count: Int(rng.next() % 3000)))
                }
                _ = try await store.append(events, to: try StreamName("s-\(rng.next() % 3)"), expectedVersion: .any)
            }
            switch rng.next() % 3 {
            case 0: try await writerEngine.checkpoint()
            case 1: _ = try await writerEngine.compact()
            default: break
            }
            try await store.close()
            writerEngine = try await PageFileKeyValueStore.open(directory: directory, options: options)
            store = KeyValueEventStore(backend: writerEngine)
        }
        _ = try await store.append(
            [EventData(type: GlobalLogScenario.sentinelType, data: Data())], to: try StreamName("sentinel"),
            expectedVersion: .any)
        let paged = try await pager.value
        let followed = try await subscription.value
        following.cancel()
        _ = try? await following.value
        let final = try await store.readAll(from: 1, limit: .max)
        for (name, seen) in [("pager", paged), ("subscription", followed)] {
            #expect(seen.map(\.position) == final.map(\.position), "\(name)")
            #expect(seen.map(\.id) == final.map(\.id), "\(name)")
            #expect(seen.map(\.data) == final.map(\.data), "\(name)")
        }
        try await reader.close()
        try await store.close()
        options.readOnly = false
    }
}
