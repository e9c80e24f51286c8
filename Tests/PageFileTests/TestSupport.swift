// Shared helpers for the page-file tests: temporary directories that clean up, store opening, reference models.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

/// A fresh temporary directory path (not yet created), removed by `remove()`.
struct TemporaryDirectory: Sendable {
    let path: String

    init(_ label: String = "pagefile") {
        path = FileManager.default.temporaryDirectory
            .appendingPathComponent("eventstore-\(label)-\(UUID().uuidString)").path
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }

    /// A path inside the directory.
    func file(_ name: String) -> String { path + "/" + name }
}

/// Small pages and a tiny checkpoint threshold, so tests exercise splits, overflow and checkpoints quickly.
func smallOptions(faults: IOFaultPlan? = nil) -> PageFileOptions {
    var options = PageFileOptions(pageSize: 4096, cacheSizeMB: 1, checkpointThresholdMB: 1)
    options.faults = faults
    return options
}

/// Runs `body` with a store opened on a fresh directory; closes the store and removes the directory afterwards.
func withStore<T>(
    options: PageFileOptions = smallOptions(), _ body: (PageFileKeyValueStore, TemporaryDirectory) async throws -> T
) async throws -> T {
    let directory = TemporaryDirectory()
    defer { directory.remove() }
    let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
    do {
        let result = try await body(store, directory)
        try? await store.close()
        return result
    } catch {
        try? await store.close()
        throw error
    }
}

/// Deterministic pseudo-random numbers (SplitMix64), so a failing run can be reproduced from its seed.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Every live entry of `store`, in key order.
func allEntries(_ store: PageFileKeyValueStore) async throws -> [KeyValueEntry] {
    try await store.scan(KeyRange(from: [], to: nil), direction: .forward, limit: .max)
}

/// The key-value store and directory of a copy of `source` (a closed store's directory), at a new path.
func copyDirectory(_ source: String) throws -> TemporaryDirectory {
    let copy = TemporaryDirectory("copy")
    try FileManager.default.copyItem(atPath: source, toPath: copy.path)
    return copy
}
