// A seeded model test of the page file's core (B+tree, free list, checkpoints, group commit): random
// puts (keys and values at the size limits), deletes that empty leaves, TTL puts, concurrent commits that share
// groups, checkpoints, verify, clean and crash-like reopens, all compared to a dictionary.
// (Written by a review, twenty-third session, which found the core sound; kept so that it stays so.)

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

private struct ModelEntry {
    var value: [UInt8]
    var version: UInt64
    /// Put with a TTL (live until the writable open that wrote it ends).
    var ttl: Bool
}

@Suite("Page file core: a seeded model")
struct CoreModelTests {
    static let pageSize = 4096
    static var options: PageFileOptions { PageFileOptions(pageSize: pageSize, cacheSizeMB: 1, checkpointThresholdMB: 1) }

    static func key(_ random: inout SeededRandom) -> Key {
        let maxKey = PageFileKeyValueStore.maximumKeyLength(pageSize: pageSize)
        switch Int.random(in: 0..<10, using: &random) {
        case 0:
            // At the key limit, with a short distinguishing suffix.
            let tag = UInt8.random(in: 0...7, using: &random)
            return [UInt8](repeating: 0x61, count: maxKey - 1) + [tag]
        case 1, 2, 3:
            // An ordered run: prefix + big-endian counter.
            let stream = UInt8.random(in: 0...3, using: &random)
            let n = UInt32.random(in: 0...400, using: &random)
            return [0x73, stream] + withUnsafeBytes(of: n.bigEndian) { Array($0) }
        default:
            return (0..<Int.random(in: 1...40, using: &random)).map { _ in UInt8.random(in: 0...3, using: &random) }
        }
    }

    static func value(for key: Key, _ random: inout SeededRandom) -> [UInt8] {
        let inlineMax = (pageSize - Page.headerSize) / 4 - LeafEntry.overhead - key.count
        let size: Int
        switch Int.random(in: 0..<12, using: &random) {
        case 0: size = 0
        case 1: size = max(0, inlineMax)
        case 2: size = inlineMax + 1
        case 3: size = Int.random(in: 4_000...13_000, using: &random)
        default: size = Int.random(in: 0...max(0, min(300, inlineMax)), using: &random)
        }
        return (0..<size).map { _ in UInt8.random(in: 0...255, using: &random) }
    }

    private static func check(
        _ store: PageFileKeyValueStore, _ model: [Key: ModelEntry], context: String
    ) async throws {
        let live = model.filter { _ in true }.sorted { $0.key.lexicographicallyPrecedes($1.key) }
        let scanned = try await store.scan(KeyRange(from: [], to: nil), direction: .forward, limit: .max)
        #expect(scanned.map(\.key) == live.map(\.key), "\(context): forward scan keys differ")
        for (entry, (key, expected)) in zip(scanned, live) where entry.key == key {
            #expect(entry.value == expected.value, "\(context): value of \(key.prefix(8)) differs")
            #expect(entry.version == expected.version, "\(context): version of \(key.prefix(8)) \(entry.version) != \(expected.version)")
        }
        let reversed = try await store.scan(KeyRange(from: [], to: nil), direction: .backward, limit: .max)
        #expect(reversed.map(\.key) == live.map(\.key).reversed(), "\(context): reverse scan keys differ")
        let batch = try await store.get(live.map(\.key))
        #expect(batch.map { $0?.key } == live.map(\.key), "\(context): batch get differs")
    }

    @Test("seeded puts, deletes, TTLs, concurrent groups, checkpoints and reopens match a dictionary", arguments: [1, 2, 3] as [UInt64])
    func seededModel(seed: UInt64) async throws {
        let directory = TemporaryDirectory("core-model")
        defer { directory.remove() }
        var random = SeededRandom(seed: seed &* 0x9E37_79B9)
        var model: [Key: ModelEntry] = [:]
        /// Keys in the tree whose TTL entry an earlier open wrote (read as absent, counted by verify).
        var stale: Set<Key> = []
        var store = try await PageFileKeyValueStore.open(directory: directory.path, options: Self.options)
        for round in 0..<160 {
            // Several concurrent transactions on disjoint keys: they join open groups.
            let tasks = Int.random(in: 1...6, using: &random)
            var used: Set<Key> = []
            var transactions: [[KeyWrite]] = []
            for _ in 0..<tasks {
                var writes: [KeyWrite] = []
                for _ in 0..<Int.random(in: 1...10, using: &random) {
                    var key = Self.key(&random)
                    if Int.random(in: 0..<3, using: &random) == 0, let existing = model.keys.randomElement(using: &random) {
                        key = existing
                    }
                    guard used.insert(key).inserted else { continue }
                    if model[key] != nil || stale.contains(key), Int.random(in: 0..<2, using: &random) == 0 {
                        writes.append(.delete(key))
                    } else {
                        let ttl = Int.random(in: 0..<8, using: &random) == 0
                        writes.append(.put(key, Self.value(for: key, &random), ttl: ttl ? .seconds(36_000) : nil))
                    }
                }
                if !writes.isEmpty { transactions.append(writes) }
            }
            // A range of deletes now and then, to empty leaves.
            if round % 23 == 22 {
                let stream = UInt8.random(in: 0...3, using: &random)
                let keys = model.keys.filter { $0.count == 6 && $0[0] == 0x73 && $0[1] == stream && !used.contains($0) }
                if !keys.isEmpty { transactions.append(keys.map { .delete($0) }) }
            }
            let current = store
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writes in transactions {
                    group.addTask { _ = try await current.commit(KeyValueTransaction(writes: writes)) }
                }
                try await group.waitForAll()
            }
            for writes in transactions {
                for write in writes {
                    switch write {
                    case .put(let key, let value, let ttl):
                        let version = (model[key]?.version ?? 0) + 1
                        model[key] = ModelEntry(value: value, version: version, ttl: ttl != nil)
                        stale.remove(key)
                    case .delete(let key):
                        model[key] = nil
                        stale.remove(key)
                    }
                }
            }
            if round % 17 == 16 { try await store.checkpoint() }
            if round % 29 == 28 {
                let report = try await store.verify()
                #expect(report.isClean, "round \(round): \(report.problems)")
                #expect(report.keys == model.count + stale.count, "round \(round): verify keys")
                try await Self.check(store, model, context: "round \(round)")
            }
            if round % 41 == 40 || round % 53 == 52 {
                if round % 41 == 40 { try await store.close() } else { await store.closeWithoutCheckpoint() }
                store = try await PageFileKeyValueStore.open(directory: directory.path, options: Self.options)
                for (key, entry) in model where entry.ttl {
                    model[key] = nil
                    stale.insert(key)
                }
                try await Self.check(store, model, context: "reopen after round \(round)")
            }
        }
        try await Self.check(store, model, context: "end")
        let report = try await store.verify()
        #expect(report.isClean, "end: \(report.problems)")
        #expect(report.depth >= 2)
        try await store.close()
    }
}
