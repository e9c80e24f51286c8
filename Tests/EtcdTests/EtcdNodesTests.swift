// Several app nodes on one etcd cluster, in one process: each node is its own EtcdKeyValueStore (own connection
// pool, own writer lock) and KeyValueEventStore on one fresh namespace. What a user running 2-4 nodes relies on:
// gapless positions in commit order, subscriptions that see the other nodes' appends once and in order, session
// fencing across nodes, idempotent re-sends on another node, shared checkpoints, metadata and deletion (written by
// the twenty-first session's multi-node reviewer, who found them all holding, and kept).

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

@Suite(
    "etcd: several nodes in one process", .enabled(if: EtcdTestCluster.isConfigured, EtcdTestCluster.skipReason),
    .serialized, .timeLimit(.minutes(4)))
struct EtcdNodesTests {
    struct Nodes {
        let namespace: String
        let backends: [EtcdKeyValueStore]
        let stores: [KeyValueEventStore]

        init(_ label: String, count: Int = 2, clock: (@Sendable () -> Date)? = nil) throws {
            let namespace = EtcdTestCluster.uniqueNamespace(label)
            let backends = try (0..<count).map { _ in try EtcdTestCluster.makeStore(namespace: namespace) }
            self.namespace = namespace
            self.backends = backends
            self.stores = backends.enumerated().map { index, backend in
                KeyValueEventStore(backend: backend, holderName: "node-\(index)", clock: clock ?? { Date() })
            }
        }

        func tearDown() async throws {
            try await backends[0].removeAllKeys()
            for store in stores { try? await store.close() }
        }
    }

    @Test("a live log subscription on node A sees every append of A and B once, in position order")
    func logSubscriptionAcrossNodes() async throws {
        let nodes = try Nodes("nodes-logsub")
        let (a, b) = (nodes.stores[0], nodes.stores[1])
        _ = try await a.append([EventData(type: "Seed", data: Data())], to: StreamName("seed"), expectedVersion: .any)
        let sentinel = UUID()
        let consumer = Task { () throws -> [RecordedEvent] in
            var seen: [RecordedEvent] = []
            for try await message in a.subscribeToAll(from: .start, bufferSize: 7) {
                if case .event(let event) = message {
                    seen.append(event)
                    if event.id == sentinel { break }
                }
            }
            return seen
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, node) in [a, b, a, b].enumerated() {
                group.addTask {
                    for round in 0..<15 {
                        let stream = try StreamName("s-\(index)-\(round % 3)")
                        _ = try await node.append(
                            [EventData(type: "E", data: Data([UInt8(index)])), EventData(type: "E", data: Data())],
                            to: stream, expectedVersion: .any)
                    }
                }
            }
            try await group.waitForAll()
        }
        _ = try await b.append(
            [EventData(id: sentinel, type: "Sentinel", data: Data())], to: StreamName("end"),
            expectedVersion: .any)
        let seen = try await consumer.value
        let log = try await b.readAll(from: 1, limit: .max)
        #expect(seen.map(\.position) == log.map(\.position))
        #expect(log.map(\.position) == Array(1...UInt64(log.count)))
        #expect(log.count == 122)
        try await nodes.tearDown()
    }

    @Test("a live stream subscription on node A sees node B's appends to the stream once, in version order")
    func streamSubscriptionAcrossNodes() async throws {
        let nodes = try Nodes("nodes-streamsub")
        let (a, b) = (nodes.stores[0], nodes.stores[1])
        let stream = try StreamName("shared")
        _ = try await b.append([EventData(type: "E", data: Data())], to: stream, expectedVersion: .noStream)
        let total = 1 + 40
        let consumer = Task { () throws -> [UInt64] in
            var versions: [UInt64] = []
            for try await message in a.subscribe(to: stream, from: .start, bufferSize: 3) {
                if case .event(let event) = message {
                    versions.append(event.version)
                    if versions.count == total || event.type == "Last" { break }
                }
            }
            return versions
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for node in [a, b] {
                group.addTask {
                    for _ in 0..<20 {
                        _ = try await node.append(
                            [EventData(type: "E", data: Data())], to: stream, expectedVersion: .any)
                        // other streams too, so the doorbell rings for appends that are not this stream's
                        _ = try await node.append(
                            [EventData(type: "O", data: Data())], to: StreamName("other"), expectedVersion: .any)
                    }
                }
            }
            try await group.waitForAll()
        }
        _ = try await b.append([EventData(type: "Last", data: Data())], to: stream, expectedVersion: .any)
        let versions = try await consumer.value
        #expect(versions == Array(1...UInt64(versions.count)))
        #expect(versions.count >= total)
        try await nodes.tearDown()
    }

    @Test("after node A's session lease expires, node B takes the stream and A's later writes are refused")
    func sessionFencingAcrossNodes() async throws {
        let nodes = try Nodes("nodes-fence")
        let (a, b) = (nodes.stores[0], nodes.stores[1])
        let stream = try StreamName("locked")
        // Long enough that the refusals below come well within it, even on a loaded machine.
        let sessionA = try await a.openSession(on: stream, sessionTimeout: .seconds(5), openTimeout: .zero)
        _ = try await sessionA.append([EventData(type: "A", data: Data())], expectedVersion: .noStream)
        // B is refused while A holds the stream.
        await #expect(throws: EventStoreError.self) {
            _ = try await b.append([EventData(type: "B", data: Data())], to: stream, expectedVersion: .any)
        }
        await #expect(throws: EventStoreError.self) {
            _ = try await b.delete(stream, expectedVersion: .any, mode: .soft)
        }
        // B waits (polling state) until A's lease has run out on the server, then holds the stream.
        let sessionB = try await b.openSession(on: stream, sessionTimeout: .seconds(60), openTimeout: .seconds(60))
        _ = try await sessionB.append([EventData(type: "B", data: Data())], expectedVersion: .exact(1))
        do {
            _ = try await sessionA.append([EventData(type: "A", data: Data())], expectedVersion: .any)
            Issue.record("A appended after losing its lease")
        } catch EventStoreError.sessionExpired {}
        do {
            try await sessionA.renew()
            Issue.record("A renewed after losing its lease")
        } catch EventStoreError.sessionExpired {}
        do {
            try await sessionA.saveCheckpoint(1, for: "c")
            Issue.record("A saved a checkpoint after losing its lease")
        } catch EventStoreError.sessionExpired {}
        try await sessionA.close()
        _ = try await sessionB.append([EventData(type: "B", data: Data())], expectedVersion: .exact(2))
        let events = try await a.read(stream)
        #expect(events.map(\.type) == ["A", "B", "B"])
        try await sessionB.close()
        try await nodes.tearDown()
    }

    @Test("an append re-sent on node B after node A's reply was lost returns the original result")
    func idempotentRetryOnOtherNode() async throws {
        let nodes = try Nodes("nodes-idem")
        let (a, b) = (nodes.stores[0], nodes.stores[1])
        let stream = try StreamName("orders-1")
        let events = (0..<3).map { EventData(type: "E", data: Data([UInt8($0)])) }
        let original = try await a.append(events, to: stream, expectedVersion: .noStream)
        _ = try await b.append([EventData(type: "X", data: Data())], to: StreamName("other"), expectedVersion: .any)
        _ = try await a.append([EventData(type: "E", data: Data())], to: stream, expectedVersion: .exact(3))
        let retried = try await b.append(events, to: stream, expectedVersion: .noStream)
        #expect(retried == original)
        let prefix = try await b.append(Array(events.prefix(2)), to: stream, expectedVersion: .noStream)
        #expect(prefix.version == 2)
        #expect(try await a.read(stream).count == 4)
        try await nodes.tearDown()
    }

    @Test("metadata, deletion and checkpoints written by node A are seen by node B at once")
    func metadataDeletionCheckpointsAcrossNodes() async throws {
        let nodes = try Nodes("nodes-meta")
        let (a, b) = (nodes.stores[0], nodes.stores[1])
        let stream = try StreamName("trimmed")
        _ = try await a.append(
            (0..<5).map { _ in EventData(type: "E", data: Data()) }, to: stream, expectedVersion: .any)
        try await a.setMetadata(StreamMetadata(maxCount: 2), for: stream)
        #expect(try await b.read(stream).map(\.version) == [4, 5])
        #expect(try await b.metadata(of: stream).maxCount == 2)
        try await a.saveCheckpoint(3, for: "proj")
        #expect(try await b.checkpoint(of: "proj") == 3)
        _ = try await a.delete(stream, expectedVersion: .any, mode: .hard)
        #expect(try await b.read(stream).isEmpty)
        do {
            _ = try await b.append([EventData(type: "E", data: Data())], to: stream, expectedVersion: .any)
            Issue.record("appended to a hard-deleted stream")
        } catch EventStoreError.streamDeleted {}
        try await nodes.tearDown()
    }

    @Test("an exclusive projection handed from node A to node B handles every event once")
    func exclusiveProjectionHandover() async throws {
        let nodes = try Nodes("nodes-exclusive")
        let (a, b) = (nodes.stores[0], nodes.stores[1])
        for index in 0..<10 {
            _ = try await (index % 2 == 0 ? a : b).append(
                [EventData(type: "E", data: Data())], to: StreamName("s\(index % 3)"), expectedVersion: .any)
        }
        let handledA = Locked<[UInt64]>([])
        let handledB = Locked<[UInt64]>([])
        let projectionA = CheckpointedProjection(
            store: a, consumer: "totals", checkpointEvery: 3, exclusivity: .exclusive(lease: .seconds(4)))
        let projectionB = CheckpointedProjection(
            store: b, consumer: "totals", checkpointEvery: 3, exclusivity: .exclusive(lease: .seconds(4)))
        let runA = Task { try await projectionA.run { event in handledA.withLock { $0.append(event.position) } } }
        // Wait (polling state) until A holds the lease and has handled the first events.
        while handledA.withLock({ $0.count }) < 10 { try await Task.sleep(for: .milliseconds(20)) }
        let runB = Task {
            try await projectionB.run(until: .whenCaughtUp) { event in handledB.withLock { $0.append(event.position) } }
        }
        for index in 0..<10 {
            _ = try await (index % 2 == 0 ? b : a).append(
                [EventData(type: "E", data: Data())], to: StreamName("s\(index % 3)"), expectedVersion: .any)
        }
        while handledA.withLock({ $0.count }) < 20 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(handledB.withLock { $0 }.isEmpty)
        runA.cancel()
        let savedA = try await runA.value
        _ = try await a.append([EventData(type: "E", data: Data())], to: StreamName("late"), expectedVersion: .any)
        let savedB = try await runB.value
        let all = handledA.withLock { $0 } + handledB.withLock { $0 }
        #expect(savedA == 20)
        #expect(savedB == 21)
        #expect(all == Array(1...21))
        try await nodes.tearDown()
    }

    @Test("the same events appended at once on two nodes are written once, and both get the original result")
    func sameEventsOnTwoNodesAtOnce() async throws {
        let nodes = try Nodes("nodes-dupe")
        let (a, b) = (nodes.stores[0], nodes.stores[1])
        for round in 0..<20 {
            let stream = try StreamName("twice-\(round)")
            let events = (0..<3).map { EventData(type: "E", data: Data([UInt8($0)])) }
            async let first = a.append(events, to: stream, expectedVersion: .noStream)
            let second = try await b.append(events, to: stream, expectedVersion: .noStream)
            let one = try await first
            #expect(one == second)
            #expect(try await a.read(stream).count == 3)
        }
        #expect(try await b.lastPosition() == 60)
        try await nodes.tearDown()
    }

    @Test("three nodes contending for one session never interleave: each holder's appends are contiguous")
    func sessionContention() async throws {
        let nodes = try Nodes("nodes-contend", count: 3)
        let stream = try StreamName("contended")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, node) in nodes.stores.enumerated() {
                group.addTask {
                    for _ in 0..<4 {
                        let session = try await node.openSession(
                            on: stream, sessionTimeout: .seconds(30), openTimeout: .seconds(120))
                        let start = try await node.version(of: stream)
                        for step in 0..<3 {
                            _ = try await session.append(
                                [EventData(type: "N\(index)", data: Data())],
                                expectedVersion: .exact(start + UInt64(step)))
                        }
                        try await session.close()
                    }
                }
            }
            try await group.waitForAll()
        }
        let events = try await nodes.stores[0].read(stream)
        #expect(events.count == 36)
        for run in 0..<12 {
            let types = Set(events[(run * 3)..<(run * 3 + 3)].map(\.type))
            #expect(types.count == 1)
        }
        try await nodes.tearDown()
    }

    @Test("four nodes, four tasks each, appending at once: gapless positions, contiguous streams")
    func heavyContention() async throws {
        let nodes = try Nodes("nodes-heavy", count: 4)
        let clock = ContinuousClock()
        let started = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, node) in nodes.stores.enumerated() {
                for task in 0..<4 {
                    group.addTask {
                        for round in 0..<25 {
                            _ = try await node.append(
                                [EventData(type: "E", data: Data([UInt8(index), UInt8(task), UInt8(round)]))],
                                to: StreamName("hot-\(round % 2)"), expectedVersion: .any)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        print("heavy contention took \(clock.now - started)")
        let log = try await nodes.stores[1].readAll(from: 1, limit: .max)
        #expect(log.map(\.position) == Array(1...400))
        try await nodes.tearDown()
    }

    @Test("twenty live stream subscriptions on node A all see node B's appends; cancelling them ends them")
    func manySubscriptions() async throws {
        let nodes = try Nodes("nodes-many")
        let (a, b) = (nodes.stores[0], nodes.stores[1])
        let streams = try (0..<20).map { try StreamName("many-\($0)") }
        let consumers = streams.map { stream in
            Task { () throws -> Int in
                var count = 0
                for try await message in a.subscribe(to: stream, from: .start) {
                    if case .event = message {
                        count += 1
                        if count == 3 { break }
                    }
                }
                return count
            }
        }
        for round in 0..<3 {
            for stream in streams {
                _ = try await b.append([EventData(type: "E\(round)", data: Data())], to: stream, expectedVersion: .any)
            }
        }
        for consumer in consumers { #expect(try await consumer.value == 3) }
        // A live subscription waiting for events ends when its task is cancelled.
        let waiting = Task { () throws -> Int in
            var count = 0
            for try await message in a.subscribeToAll(from: .end) { if case .event = message { count += 1 } }
            return count
        }
        _ = try await b.append([EventData(type: "X", data: Data())], to: streams[0], expectedVersion: .any)
        waiting.cancel()
        _ = try await waiting.value
        try await nodes.tearDown()
    }

    /// A subscriber on one node, writers on another, and a third scavenging a capped stream meanwhile: the live log
    /// subscription delivers exactly the positions readAll returns, none skipped by its one jump over scavenged
    /// positions (twenty-first session's review of that jump).
    @Test("a log subscription on one node skips no event while another appends and a third scavenges")
    func subscriptionBesideScavenge() async throws {
        let nodes = try Nodes("nodes-scavenge", count: 3)
        let (writer, reader, scavenger) = (nodes.stores[0], nodes.stores[1], nodes.stores[2])
        let hidden = try StreamName("hidden-1")
        _ = try await writer.append([EventData(type: "E", data: Data())], to: hidden, expectedVersion: .noStream)
        try await writer.setMetadata(StreamMetadata(maxCount: 1), for: hidden)
        let (writers, perWriter) = (4, 60)
        let done = try StreamName("done-1")
        let subscriber = Task { () throws -> [UInt64] in
            var kept: [UInt64] = []
            for try await message in reader.subscribeToAll(bufferSize: 3) {
                guard case .event(let event) = message else { continue }
                if event.stream == done { break }
                if event.stream != hidden { kept.append(event.position) }
            }
            return kept
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<writers {
                group.addTask {
                    for round in 0..<perWriter {
                        _ = try await writer.append(
                            [EventData(type: "E", data: Data())], to: try StreamName("kept-\(index)"),
                            expectedVersion: .any)
                        _ = try await scavenger.append(
                            [EventData(type: "E", data: Data()), EventData(type: "E", data: Data())], to: hidden,
                            expectedVersion: .any)
                        if round % 7 == 0 { _ = try await scavenger.scavenge() }
                    }
                }
            }
            try await group.waitForAll()
        }
        _ = try await writer.append([EventData(type: "E", data: Data())], to: done, expectedVersion: .any)
        let kept = try await subscriber.value
        let all = try await reader.readAll(from: 1, limit: 100_000)
        #expect(kept == all.filter { $0.stream != hidden && $0.stream != done }.map(\.position))
        #expect(kept.count == writers * perWriter)
        try await nodes.tearDown()
    }

    /// Two nodes each read the metadata and change a different rule, at once: the version lets one through.
    @Test("of two nodes' read-modify-writes of one stream's metadata at the same version, exactly one is written")
    func metadataReadModifyWrites() async throws {
        let nodes = try Nodes("nodes-metadata")
        let (a, b) = (nodes.stores[0], nodes.stores[1])
        let stream = try StreamName("acct-1")
        try await a.setMetadata(StreamMetadata(maxCount: 10), for: stream)
        for round in 0..<5 {
            let seenA = try await a.versionedMetadata(of: stream)
            let seenB = try await b.versionedMetadata(of: stream)
            #expect(seenA.version == seenB.version)
            async let first = Self.change(a, stream, from: seenA) { $0.maxAge = .seconds(60 + round) }
            async let second = Self.change(b, stream, from: seenB) { $0.truncateBefore = UInt64(round + 2) }
            let outcomes = try await [first, second]
            #expect(outcomes.filter { $0 }.count == 1, "round \(round): \(outcomes)")
            #expect(try await b.versionedMetadata(of: stream).version == seenA.version + 1)
        }
        try await nodes.tearDown()
    }

    /// Sets `stream`'s metadata to `seen`'s changed by `edit`, at `seen`'s version; false if another change won.
    private static func change(
        _ store: KeyValueEventStore, _ stream: StreamName, from seen: VersionedStreamMetadata,
        _ edit: (inout StreamMetadata) -> Void
    ) async throws -> Bool {
        var rules = seen.metadata
        edit(&rules)
        do {
            try await store.setMetadata(rules, for: stream, expectedVersion: .exact(seen.version))
            return true
        } catch EventStoreError.wrongExpectedMetadataVersion {
            return false
        }
    }
}
