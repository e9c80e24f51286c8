// The borrowed reads of the key-value contract (scan and batch get that lend entries in place), checked against the
// copying scan and get on every backend: the same entries, order, limits, directions and expiry; an early stop when
// the visitor says so; nil for absent keys; and the count of entries lent.

import EventStore
import EventStoreKV
import Foundation
import Testing

extension KVBackend {
    /// The page-file engine in a fresh temporary directory, removed afterwards.
    static let pageFile = KVBackend(name: "page-file") {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("eventstore-kv-contract-\(UUID().uuidString)").path
        let store = try await PageFileKeyValueStore.open(directory: directory)
        return (store, {
            try? await store.close()
            try? FileManager.default.removeItem(atPath: directory)
        })
    }
}

extension KVBackends {
    /// Every backend the borrowed reads are checked on: the page file lends from its own pages, so it joins here.
    static var lending: [KVBackend] { all + [.pageFile] }
}

/// Everything the borrowed scan lent, copied out during the visits.
private func borrowedScan(
    _ store: any KeyValueStore, _ range: KeyRange, _ direction: ScanDirection, limit: Int
) async throws -> (entries: [KeyValueEntry], lent: Int) {
    var entries: [KeyValueEntry] = []
    let lent = try await store.scan(range, direction: direction, limit: limit) { entry in
        entries.append(entry.copied())
        return true
    }
    return (entries, lent)
}

/// Everything the borrowed get lent, with the index it was lent for, copied out during the visits.
private func borrowedGet(_ store: any KeyValueStore, _ keys: [Key]) async throws -> [(Int, KeyValueEntry?)] {
    var visits: [(Int, KeyValueEntry?)] = []
    try await store.get(keys) { index, entry in visits.append((index, entry?.copied())) }
    return visits
}

/// Keys of several lengths on both sides of interesting bytes, with values that differ from their keys.
private let sampleKeys: [Key] = [
    [0x01], [0x01, 0x00], [0x01, 0x00, 0x00], [0x01, 0xFF], [0x02], [0x02, 0x10], [0x7F], [0x80], [0x80, 0x01],
    [0xFE], [0xFF], [0xFF, 0xFF],
]

private func fill(_ store: any KeyValueStore) async throws {
    for key in sampleKeys.shuffled() {
        _ = try await store.commit(KeyValueTransaction(writes: [.put(key, Array(repeating: key.last ?? 0, count: key.count * 7))]))
    }
    // A second write to some keys, so versions and mod revisions differ between entries.
    _ = try await store.commit(KeyValueTransaction(writes: [.put([0x02], [9, 9]), .put([0x80, 0x01], [])]))
}

private struct StopHere: Error {}

@Suite("Key-value contract: borrowed reads")
struct BorrowedReadContractTests {
    @Test("a borrowed scan lends what scan returns: entries, order, limits and directions", arguments: KVBackends.lending)
    func scanMatchesCopyingScan(backend: KVBackend) async throws {
        try await backend.withStore { store in
            try await fill(store)
            let ranges = [
                KeyRange(from: [], to: nil), .prefix([0x01]), KeyRange(from: [0x01, 0x00], to: [0x7F]),
                KeyRange(from: [0x80], to: nil), KeyRange(from: [0x03], to: [0x04]), KeyRange(from: [0x02], to: [0x02]),
            ]
            for range in ranges {
                for direction in [ScanDirection.forward, .backward] {
                    for limit in [0, 1, 2, 5, 100] {
                        let copied = try await store.scan(range, direction: direction, limit: limit)
                        let (lentEntries, lent) = try await borrowedScan(store, range, direction, limit: limit)
                        #expect(lentEntries == copied, "range \(range), \(direction), limit \(limit)")
                        #expect(lent == copied.count, "range \(range), \(direction), limit \(limit)")
                    }
                }
            }
            let everything = try await borrowedScan(store, KeyRange(from: [], to: nil), .forward, limit: 100)
            #expect(everything.entries.map(\.key) == sampleKeys)
            #expect(everything.entries.first { $0.key == [0x02] }?.version == 2)
            #expect(everything.entries.first { $0.key == [0x80, 0x01] }?.value == [])
        }
    }

    @Test("a borrowed scan stops as soon as the visitor returns false, and counts that entry", arguments: KVBackends.lending)
    func scanStopsEarly(backend: KVBackend) async throws {
        try await backend.withStore { store in
            try await fill(store)
            for direction in [ScanDirection.forward, .backward] {
                let expected = try await store.scan(KeyRange(from: [], to: nil), direction: direction, limit: 3)
                var visited: [Key] = []
                let lent = try await store.scan(KeyRange(from: [], to: nil), direction: direction, limit: 100) { entry in
                    visited.append(Array(entry.key))
                    return visited.count < 3
                }
                #expect(lent == 3)
                #expect(visited == expected.map(\.key))
            }
        }
    }

    @Test("an error thrown by the visitor ends the borrowed read and leaves the store usable", arguments: KVBackends.lending)
    func visitorErrorPropagates(backend: KVBackend) async throws {
        try await backend.withStore { store in
            try await fill(store)
            var visits = 0
            await #expect(throws: StopHere.self) {
                _ = try await store.scan(KeyRange(from: [], to: nil), direction: .forward, limit: 100) { _ in
                    visits += 1
                    if visits == 2 { throw StopHere() }
                    return true
                }
            }
            #expect(visits == 2)
            await #expect(throws: StopHere.self) {
                try await store.get([[0x01], [0x02]]) { index, _ in if index == 1 { throw StopHere() } }
            }
            _ = try await store.commit(KeyValueTransaction(writes: [.put([0x03], [3])]))
            #expect(try await store.get([0x03])?.value == [3])
        }
    }

    @Test("a borrowed get lends every key's entry in order, nil where absent", arguments: KVBackends.lending)
    func getMatchesCopyingGet(backend: KVBackend) async throws {
        try await backend.withStore { store in
            try await fill(store)
            let keySets: [[Key]] = [
                [],
                sampleKeys,
                [[0xFF, 0xFF], [0x00], [0x01], [0x01, 0x00, 0x00, 0x00], [0x7F], [0x01]],
                [[0x42], [0x43]],
            ]
            for keys in keySets {
                let copied = try await store.get(keys)
                let visits = try await borrowedGet(store, keys)
                #expect(visits.map(\.0) == Array(keys.indices), "every index once, in order")
                #expect(visits.map(\.1) == copied)
                for (index, entry) in visits { #expect(entry == nil || entry?.key == keys[index]) }
            }
            let absent = try await borrowedGet(store, [[0x00], [0x01, 0x01]])
            #expect(absent.allSatisfy { $0.1 == nil })
        }
    }

    @Test("borrowed reads skip expired keys, like scan and get", arguments: KVBackends.lending)
    func expiredKeysAreNotLent(backend: KVBackend) async throws {
        try await backend.withStore { store in
            try await fill(store)
            let ttl = backend.leaseTimeout(.milliseconds(300))
            _ = try await store.commit(KeyValueTransaction(writes: [.put([0x01, 0x80], [1], ttl: ttl), .put([0x90], [2], ttl: ttl)]))
            // Servers expire leases on their own schedule (etcd checks about twice a second): allow for it.
            try await Task.sleep(for: ttl * 2.5)
            let (lentEntries, lent) = try await borrowedScan(store, KeyRange(from: [], to: nil), .forward, limit: 100)
            #expect(lentEntries.map(\.key) == sampleKeys)
            #expect(lent == sampleKeys.count)
            #expect(lentEntries == (try await store.scan(KeyRange(from: [], to: nil), direction: .forward, limit: 100)))
            let backward = try await borrowedScan(store, KeyRange(from: [0x01], to: [0x02]), .backward, limit: 100)
            #expect(backward.entries.map(\.key) == [[0x01, 0xFF], [0x01, 0x00, 0x00], [0x01, 0x00], [0x01]])
            let visits = try await borrowedGet(store, [[0x01, 0x80], [0x01], [0x90]])
            #expect(visits.map(\.0) == [0, 1, 2])
            #expect(visits[0].1 == nil)
            #expect(visits[1].1?.key == [0x01])
            #expect(visits[2].1 == nil)
        }
    }

    @Test("borrowed reads of a closed store fail with closed", arguments: KVBackends.lending)
    func closedStoreRefusesBorrowedReads(backend: KVBackend) async throws {
        try await backend.withStore { store in
            try await fill(store)
            try await store.close()
            await #expect(throws: KeyValueStoreError.closed) {
                _ = try await store.scan(KeyRange(from: [], to: nil), direction: .forward, limit: 10) { _ in true }
            }
            await #expect(throws: KeyValueStoreError.closed) {
                try await store.get([[0x01]]) { _, _ in }
            }
        }
    }
}
