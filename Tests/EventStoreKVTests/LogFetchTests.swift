// Fetching log records through runs of consecutive positions (range scans) and batch gets: the segmentation, reads
// that mix both over interleaved batch appends (forward, backward, small and large read batches) matching the global
// log, and gaps inside a scanned run (scavenged events skipped, a dangling index entry reported as corruption).

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

@Suite("Log fetch: runs scanned, the rest batch-got")
struct LogFetchTests {
    @Test("positions split into long consecutive runs, either direction, and the stretches between")
    func segmentation() {
        let minimum = KeyValueEventStore.minimumScannedRun
        func shape(_ positions: [UInt64]) -> [String] {
            KeyValueEventStore.segments(of: positions).map { "\($0.isRun ? "run" : "get") \($0.range)" }
        }
        #expect(shape([]).isEmpty)
        #expect(shape([5]) == ["get 0..<1"])
        let long = (1...UInt64(minimum)).map { $0 }
        #expect(shape(long) == ["run 0..<\(minimum)"])
        #expect(shape(Array(long.dropLast())) == ["get 0..<\(minimum - 1)"])
        #expect(shape(long.reversed()) == ["run 0..<\(minimum)"])
        // Scattered positions, then a run, then a short run, then a long descending... not in one read, but the
        // segmentation does not care: each long run is found wherever it is.
        let mixed: [UInt64] = [3, 9, 4] + (100..<(100 + UInt64(minimum) + 2)).map { $0 } + [7, 8, 9] + [50, 49, 48]
        #expect(shape(mixed) == ["get 0..<3", "run 3..<\(3 + minimum + 2)", "get \(5 + minimum)..<\(11 + minimum)"])
        // Two long runs back to back (a gap of one position between them) are two scans.
        let twoRuns = (1...UInt64(minimum)).map { $0 } + (UInt64(minimum) + 2...UInt64(2 * minimum + 1)).map { $0 }
        #expect(shape(twoRuns) == ["run 0..<\(minimum)", "run \(minimum)..<\(2 * minimum)"])
        // The largest positions do not overflow.
        #expect(shape(((UInt64.max - UInt64(minimum) + 1)...UInt64.max).map { $0 }) == ["run 0..<\(minimum)"])
    }

    @Test("stream and index reads over interleaved batches match the global log, in both directions", arguments: [3, 4_096])
    func readsMatchGlobalLog(readBatchSize: Int) async throws {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore(), readBatchSize: readBatchSize)
        let streams = try (0..<3).map { try StreamName("acct-\($0)") }
        var versions = [UInt64](repeating: 0, count: streams.count)
        // Batch sizes around the scanned-run threshold, so runs and scattered stretches alternate.
        let sizes = [1, 7, 8, 9, 20, 2, 13]
        for (round, size) in sizes.enumerated() {
            for (slot, stream) in streams.enumerated() where (round + slot) % 3 != 2 {
                let events = (0..<size).map {
                    EventData(type: $0 % 2 == 0 ? "Opened" : "Moved", data: Data("\(round)-\($0)".utf8))
                }
                versions[slot] = try await store.append(events, to: stream, expectedVersion: .exact(versions[slot])).version
            }
        }
        let log = try await store.readAll(from: 1, limit: .max)
        for stream in streams {
            let expected = log.filter { $0.stream == stream }
            #expect(try await store.read(stream, from: .start, direction: .forward, limit: .max) == expected)
            #expect(try await store.read(stream, from: .end, direction: .backward, limit: .max) == expected.reversed())
            #expect(try await store.read(stream, from: .version(5), direction: .forward, limit: 11) == Array(expected[4..<15]))
            #expect(
                try await store.read(stream, from: .version(30), direction: .backward, limit: 12)
                    == Array(expected[18..<30].reversed()))
        }
        #expect(try await store.readEvents(ofType: "Moved", from: 1, limit: .max) == log.filter { $0.type == "Moved" })
        #expect(try await store.readCategory("acct", from: 10, limit: 40) == Array(log.filter { $0.position >= 10 }.prefix(40)))
    }

    /// A store with one stream of 40 events appended in one batch (positions 1...40, one scanned run).
    private func storeWithOneRun() async throws -> (KeyValueEventStore, InMemoryKeyValueStore, StreamName) {
        let backend = InMemoryKeyValueStore()
        let store = KeyValueEventStore(backend: backend)
        let stream = try StreamName("ledger")
        let events = (0..<40).map { EventData(type: "Posted", data: Data([UInt8($0)])) }
        _ = try await store.append(events, to: stream, expectedVersion: .noStream)
        return (store, backend, stream)
    }

    @Test("events missing from the middle and the ends of a scanned run are skipped by an indexed read")
    func scavengedGapsInRunsAreSkipped() async throws {
        let (store, backend, stream) = try await storeWithOneRun()
        // The records gone and the stream index naming only the rest (as runs 2...16 and 19...39); the type index
        // entries stay, as a type read racing scavenge sees them: it asks for the whole run and must skip the holes.
        let gone: [UInt64] = [1, 17, 18, 40]
        for position in gone {
            _ = try await backend.commit(KeyValueTransaction(writes: [.delete(KeyLayout.log(position))]))
        }
        _ = try await backend.commit(KeyValueTransaction(writes: [
            .delete(KeyLayout.streamIndex(stream, version: 40)),
            .put(KeyLayout.streamIndex(stream, version: 16), StreamIndexRun.value(lastPosition: 16, count: 15)),
            .put(KeyLayout.streamIndex(stream, version: 39), StreamIndexRun.value(lastPosition: 39, count: 21)),
        ]))
        let remaining = (1...40).filter { !gone.contains($0) }
        #expect(try await store.readEvents(ofType: "Posted", from: 1, limit: .max).map(\.position) == remaining)

        // Scavenge removes a stream's oldest events only, so versions missing between two stream index runs are
        // damage: a stream read that meets them in one scan says where, in either direction. It used to return the
        // versions before the hole as if the stream ended there.
        for (start, direction) in [(ReadStart.start, ReadDirection.forward), (.end, .backward)] {
            await #expect(
                performing: { try await store.read(stream, from: start, direction: direction, limit: .max) },
                throws: { error in
                    guard case EventStoreError.corrupted(let location, let detail) = error else { return false }
                    return location == "stream index of \"ledger\"" && detail.contains("versions 17...18 are missing")
                })
        }
        // A read that starts past the hole, or reads down to it from above it, meets one run and is not refused.
        #expect(try await store.read(stream, from: .version(17), direction: .forward, limit: .max).map(\.version)
            == Array(19...39))
        #expect(try await store.read(stream, from: .version(18), direction: .backward, limit: .max).map(\.version)
            == Array((2...16).reversed()))
    }

    @Test("stream index runs that name one version twice are corruption, not a version read twice")
    func overlappingStreamIndexRunsAreCorruption() async throws {
        let (store, backend, stream) = try await storeWithOneRun()
        // Runs 1...40 and, added, 1...20: version 1...20 named twice.
        _ = try await backend.commit(KeyValueTransaction(writes: [
            .put(KeyLayout.streamIndex(stream, version: 20), StreamIndexRun.value(lastPosition: 20, count: 20))
        ]))
        for (start, direction) in [(ReadStart.start, ReadDirection.forward), (.end, .backward)] {
            await #expect(
                performing: { try await store.read(stream, from: start, direction: direction, limit: .max) },
                throws: { error in
                    guard case EventStoreError.corrupted(let location, let detail) = error else { return false }
                    return location == "stream index of \"ledger\"" && detail.contains("overlap")
                })
        }
    }

    @Test("a scanned run whose record is missing while its index entry remains is corruption naming the position")
    func danglingIndexEntryInRunIsCorruption() async throws {
        // At the start, in the middle and at the end of the run: the scan's first, inner and trailing holes.
        for position: UInt64 in [1, 23, 40] {
            let (store, backend, stream) = try await storeWithOneRun()
            _ = try await backend.commit(KeyValueTransaction(writes: [.delete(KeyLayout.log(position))]))
            for direction in [ReadDirection.forward, .backward] {
                await #expect(
                    performing: {
                        try await store.read(
                            stream, from: direction == .forward ? .start : .end, direction: direction, limit: .max)
                    },
                    throws: { error in
                        guard case EventStoreError.corrupted(let location, _) = error else { return false }
                        return location == "global position \(position)"
                    })
            }
        }
    }
}
