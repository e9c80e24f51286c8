// Conformance: expected versions, atomic batches, concurrency, gapless positions.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Conformance: appends")
struct AppendConformanceTests {
    @Test("expected version .any appends to new and existing streams", arguments: Backends.all)
    func expectedAny(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let first = try await store.append(makeEvents(2), to: stream, expectedVersion: .any)
            #expect(first.version == 2)
            #expect(first.positions == 1..<3)
            let second = try await store.append(makeEvents(1), to: stream, expectedVersion: .any)
            #expect(second.version == 3)
            #expect(second.positions == 3..<4)
            #expect(try await store.version(of: stream) == 3)
        }
    }

    @Test("expected version .noStream succeeds only on a new stream", arguments: Backends.all)
    func expectedNoStream(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            #expect(try await store.append(makeEvents(1), to: stream, expectedVersion: .noStream).version == 1)
            do {
                _ = try await store.append(makeEvents(1), to: stream, expectedVersion: .noStream)
                Issue.record("appending with .noStream to an existing stream must fail")
            } catch EventStoreError.wrongExpectedVersion(let failed, let expected, let actual) {
                #expect(failed == stream)
                #expect(expected == .noStream)
                #expect(actual == 1)
            }
            #expect(try await store.version(of: stream) == 1)
        }
    }

    @Test("expected version .streamExists fails on a new stream and succeeds on an existing one", arguments: Backends.all)
    func expectedStreamExists(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            do {
                _ = try await store.append(makeEvents(1), to: stream, expectedVersion: .streamExists)
                Issue.record("appending with .streamExists to a new stream must fail")
            } catch EventStoreError.wrongExpectedVersion(_, let expected, let actual) {
                #expect(expected == .streamExists)
                #expect(actual == 0)
            }
            #expect(try await store.version(of: stream) == 0)
            _ = try await store.append(makeEvents(1), to: stream, expectedVersion: .noStream)
            #expect(try await store.append(makeEvents(1), to: stream, expectedVersion: .streamExists).version == 2)
        }
    }

    @Test("expected version .exact matches only the current version", arguments: Backends.all)
    func expectedExact(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            do {
                _ = try await store.append(makeEvents(1), to: stream, expectedVersion: .exact(1))
                Issue.record("exact(1) on a new stream must fail")
            } catch EventStoreError.wrongExpectedVersion(_, _, let actual) {
                #expect(actual == 0)
            }
            #expect(try await store.append(makeEvents(3), to: stream, expectedVersion: .exact(0)).version == 3)
            for wrong: UInt64 in [0, 2, 4] {
                do {
                    _ = try await store.append(makeEvents(1), to: stream, expectedVersion: .exact(wrong))
                    Issue.record("exact(\(wrong)) on a stream at 3 must fail")
                } catch EventStoreError.wrongExpectedVersion(let failed, let expected, let actual) {
                    #expect(failed == stream)
                    #expect(expected == .exact(wrong))
                    #expect(actual == 3)
                }
            }
            #expect(try await store.append(makeEvents(1), to: stream, expectedVersion: .exact(3)).version == 4)
        }
    }

    @Test("a failed atomic batch writes nothing to the stream or the global log", arguments: Backends.all)
    func failedBatchWritesNothing(backend: Backend) async throws {
        try await backend.withStore(limits: EventStoreLimits(maximumEventSize: 1_000)) { store in
            let stream = try uniqueStream()
            let other = try uniqueStream("other")
            _ = try await store.append(makeEvents(2), to: stream, expectedVersion: .noStream)
            _ = try await store.append(makeEvents(1), to: other, expectedVersion: .noStream)
            let logBefore = try await store.readAll(from: 1, limit: .max)

            // A wrong expected version on the second stream of a multi-stream append.
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append([
                    StreamAppend(stream: stream, expectedVersion: .exact(2), events: makeEvents(5)),
                    StreamAppend(stream: other, expectedVersion: .exact(7), events: makeEvents(5)),
                ])
            }
            // An oversized event at the end of a batch.
            var batch = makeEvents(4)
            batch.append(EventData(type: "Big", data: Data(count: 5_000)))
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append(batch, to: stream, expectedVersion: .exact(2))
            }
            // A recorded event id in the middle of a batch.
            let recorded = try await store.read(other)[0].id
            let withDuplicate = makeEvents(2) + [makeEvent("dup", id: recorded)] + makeEvents(2)
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append(withDuplicate, to: stream, expectedVersion: .exact(2))
            }

            #expect(try await store.version(of: stream) == 2)
            #expect(try await store.read(stream).count == 2)
            #expect(try await store.version(of: other) == 1)
            #expect(try await store.readAll(from: 1, limit: .max) == logBefore)
            #expect(try await store.lastPosition() == 3)
        }
    }

    @Test("a multi-stream append is atomic when one expected version fails", arguments: Backends.all)
    func multiStreamAtomic(backend: Backend) async throws {
        try await backend.withStore { store in
            let a = try uniqueStream("a")
            let b = try uniqueStream("b")
            let results = try await store.append([
                StreamAppend(stream: a, expectedVersion: .noStream, events: makeEvents(2)),
                StreamAppend(stream: b, expectedVersion: .noStream, events: makeEvents(3)),
            ])
            #expect(results.map(\.version) == [2, 3])
            #expect(results.map(\.positions) == [1..<3, 3..<6])
            do {
                _ = try await store.append([
                    StreamAppend(stream: a, expectedVersion: .exact(2), events: makeEvents(1)),
                    StreamAppend(stream: b, expectedVersion: .exact(2), events: makeEvents(1)),
                ])
                Issue.record("the append must fail on b's expected version")
            } catch EventStoreError.wrongExpectedVersion(let stream, _, let actual) {
                #expect(stream == b)
                #expect(actual == 3)
            }
            #expect(try await store.version(of: a) == 2)
            #expect(try await store.lastPosition() == 5)
        }
    }

    @Test("100 concurrent tasks racing with exact versions: exactly one wins each version", arguments: Backends.all)
    func concurrentExactVersionRace(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let rounds = 10
            let winners = try await withThrowingTaskGroup(of: [(UInt64, UUID)].self) { group in
                for task in 0..<100 {
                    group.addTask {
                        var won: [(UInt64, UUID)] = []
                        for round in 0..<rounds {
                            let event = makeEvent("t\(task)r\(round)")
                            do {
                                let result = try await store.append(
                                    [event], to: stream, expectedVersion: .exact(UInt64(round)))
                                won.append((result.version, event.id))
                            } catch EventStoreError.wrongExpectedVersion {
                                continue
                            }
                        }
                        return won
                    }
                }
                var all: [(UInt64, UUID)] = []
                for try await won in group { all.append(contentsOf: won) }
                return all
            }
            #expect(winners.count == rounds)
            #expect(Set(winners.map(\.0)) == Set((1...UInt64(rounds)).map { $0 }))
            let events = try await store.read(stream)
            #expect(events.map(\.version) == Array(1...UInt64(rounds)))
            let winnerByVersion = Dictionary(uniqueKeysWithValues: winners)
            for event in events { #expect(winnerByVersion[event.version] == event.id) }
            #expect(try await store.lastPosition() == UInt64(rounds))
        }
    }

    @Test("concurrent tasks x 10 appends with retries: nothing lost, nothing duplicated", arguments: Backends.all)
    func concurrentRetryingAppends(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            // Every retry re-reads: the work grows with the square of the writers, so a networked backend runs fewer.
            let writers = backend.retryingWriters
            let ids = try await withThrowingTaskGroup(of: [UUID].self) { group in
                for task in 0..<writers {
                    group.addTask {
                        var mine: [UUID] = []
                        for index in 0..<10 {
                            let event = makeEvent("t\(task)i\(index)")
                            while true {
                                let version = try await store.version(of: stream)
                                do {
                                    _ = try await store.append([event], to: stream, expectedVersion: .exact(version))
                                    break
                                } catch EventStoreError.wrongExpectedVersion {
                                    await Task.yield()
                                }
                            }
                            mine.append(event.id)
                        }
                        return mine
                    }
                }
                var all: [UUID] = []
                for try await mine in group { all.append(contentsOf: mine) }
                return all
            }
            let events = try await store.read(stream)
            let total = UInt64(writers * 10)
            #expect(events.count == Int(total))
            #expect(events.map(\.version) == Array(1...total))
            #expect(Set(events.map(\.id)) == Set(ids))
            #expect(Set(events.map(\.id)).count == Int(total))
            #expect(events.map(\.position) == Array(1...total))
        }
    }

    @Test("concurrent appends to different streams: positions gapless and unique, streams contiguous", arguments: Backends.all)
    func concurrentDifferentStreams(backend: Backend) async throws {
        try await backend.withStore { store in
            let streams = try (0..<20).map { try uniqueStream("s\($0)") }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for stream in streams {
                    group.addTask {
                        for index in 0..<25 {
                            _ = try await store.append(
                                makeEvents(2, label: "\(index)-"), to: stream, expectedVersion: .exact(UInt64(index * 2)))
                        }
                    }
                }
                try await group.waitForAll()
            }
            let log = try await store.readAll(from: 1, limit: .max)
            #expect(log.count == 1_000)
            #expect(log.map(\.position) == Array(1...1_000))
            #expect(try await store.lastPosition() == 1_000)
            for stream in streams {
                let events = try await store.read(stream)
                #expect(events.map(\.version) == Array(1...50))
                #expect(events.map(\.position) == events.map(\.position).sorted())
                // Each batch of two got adjacent positions.
                for pair in stride(from: 0, to: 50, by: 2) {
                    #expect(events[pair + 1].position == events[pair].position + 1)
                }
            }
        }
    }

    @Test("appends return the new version and the positions given", arguments: Backends.all)
    func appendResult(backend: Backend) async throws {
        try await backend.withStore { store in
            let a = try uniqueStream("a")
            let b = try uniqueStream("b")
            #expect(try await store.append(makeEvents(3), to: a, expectedVersion: .noStream)
                == AppendResult(version: 3, positions: 1..<4))
            #expect(try await store.append(makeEvents(2), to: b, expectedVersion: .noStream)
                == AppendResult(version: 2, positions: 4..<6))
            #expect(try await store.append([], to: a, expectedVersion: .exact(3))
                == AppendResult(version: 3, positions: 6..<6))
            let recorded = try await store.readAll(from: 1, limit: .max)
            #expect(recorded.map(\.stream) == [a, a, a, b, b])
            #expect(recorded.map(\.version) == [1, 2, 3, 1, 2])
        }
    }

    @Test(
        "recordedAt follows commit order: concurrent appends never stamp a later position or version earlier",
        arguments: Backends.all)
    func recordedAtFollowsCommits(backend: Backend) async throws {
        try await backend.withStore { made in
            // Every reading of this clock is a new millisecond, so a stamp read before another append commits
            // ahead of it shows up as a step back in the log.
            let ticks = Locked(Int64(0))
            let store = KeyValueEventStore(backend: made.backend) {
                let tick = ticks.withLock { tick -> Int64 in
                    tick += 1
                    return tick
                }
                return Date(timeIntervalSince1970: 1_700_000_000 + Double(tick) / 1_000)
            }
            let shared = try uniqueStream("shared")
            let writers = 8
            let appends = max(4, 24 / backend.workloadDivisor)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writer in 0..<writers {
                    group.addTask {
                        let own = try uniqueStream("own\(writer)")
                        for index in 0..<appends {
                            let stream = index % 2 == 0 ? shared : own
                            _ = try await store.append(makeEvents(1 + index % 3), to: stream, expectedVersion: .any)
                        }
                    }
                }
                try await group.waitForAll()
            }
            let log = try await store.readAll(from: 1, limit: .max)
            #expect(log.count == writers * (0..<appends).reduce(0) { $0 + 1 + $1 % 3 })
            let backInLog = zip(log, log.dropFirst()).filter { $0.1.recordedAt < $0.0.recordedAt }.map(\.1.position)
            #expect(backInLog.count == 0, "recordedAt went back in the log at positions \(backInLog.prefix(5))")
            let sharedEvents = try await store.read(shared)
            let backInStream = zip(sharedEvents, sharedEvents.dropFirst()).filter { $0.1.recordedAt < $0.0.recordedAt }
                .map(\.1.version)
            #expect(backInStream.count == 0, "recordedAt went back in the stream at versions \(backInStream.prefix(5))")
        }
    }
}
