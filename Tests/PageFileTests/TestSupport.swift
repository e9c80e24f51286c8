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

    /// Makes `name` in this directory (created if absent; a file there is replaced) a symlink to `target` in
    /// `other`: a store file reaching into another store.
    func link(_ name: String, to target: String, in other: TemporaryDirectory) throws {
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: file(name))
        try FileManager.default.createSymbolicLink(atPath: file(name), withDestinationPath: other.file(target))
    }
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

/// The newest meta page (the higher epoch of the two slots whose checksums hold) at the start of a data file's bytes.
func newestMeta(in bytes: [UInt8], pageSize: Int = 4096) -> MetaPage? {
    guard bytes.count >= 2 * pageSize else { return nil }
    return (0..<2).compactMap { slot in
        MetaPage.decode(
            Array(bytes[(slot * pageSize)..<((slot + 1) * pageSize)]), slot: UInt64(slot), pageSize: pageSize, path: "")
    }.max { $0.epoch < $1.epoch }
}

/// The newest meta page of the closed store in `directory`.
func newestMeta(of directory: TemporaryDirectory, pageSize: Int = 4096) throws -> MetaPage? {
    let data = try #require(FileHandle(forReadingAtPath: directory.file("data")))
    defer { try? data.close() }
    return newestMeta(in: [UInt8](try data.read(upToCount: 2 * pageSize) ?? Data()), pageSize: pageSize)
}

/// Writes the newest meta of the closed store in `directory`, changed by `change`, as the next epoch's meta (its
/// checksum holds) into the other slot, and returns it. `change` sees the epoch already advanced.
@discardableResult
func rewriteNewestMeta(
    in directory: TemporaryDirectory, pageSize: Int = 4096, _ change: (inout MetaPage) throws -> Void
) throws -> MetaPage {
    var next = try #require(try newestMeta(of: directory, pageSize: pageSize))
    next.epoch += 1
    try change(&next)
    let data = try #require(FileHandle(forUpdatingAtPath: directory.file("data")))
    defer { try? data.close() }
    try data.seek(toOffset: (next.epoch % 2) * UInt64(pageSize))
    try data.write(contentsOf: Data(next.encoded()))
    try data.synchronize()
    return next
}

/// Starts `transaction` as an update of `store` in a new task and returns once its body has run under the writer
/// lock (so every earlier update has been applied and queued) or the update has ended without running it.
func startUpdate(_ store: PageFileKeyValueStore, _ transaction: KeyValueTransaction) async -> Task<UInt64?, any Error> {
    let (signals, signal) = AsyncStream<Void>.makeStream()
    let task = Task {
        // An update refused before its body runs must not leave the caller waiting for the signal.
        defer { signal.finish() }
        return try await store.update { _ in
            signal.yield()
            return (transaction, ())
        }.revision
    }
    for await _ in signals { break }
    return task
}
