// A store that runs a hook once, just before a chosen scan of the stream index: how tests make a truncation or
// scavenge land in the middle of a read that takes several backend calls.

import EventStore
import EventStoreKV
import Foundation

/// An in-memory backend that runs a hook once, just before the `fireAt`-th scan of the stream index (`0x03`).
///
/// `@unchecked Sendable`: its mutable state (`state`) is guarded by the `lock` NSLock; `inner` is immutable.
public final class ScanHookedStore: ForwardingKeyValueStore, @unchecked Sendable {
    private struct Armed {
        var scans = 0
        var fireAt = 0
        var hook: (@Sendable () async throws -> Void)?
    }
    private let lock = NSLock()
    private var state = Armed()

    /// Creates an empty in-memory store with no hook armed.
    public init() { super.init(InMemoryKeyValueStore()) }

    /// Runs `body` before the `scan`-th scan of the stream index from now.
    public func arm(atScan scan: Int, _ body: @escaping @Sendable () async throws -> Void) {
        lock.withLock { state = Armed(scans: 0, fireAt: scan, hook: body) }
    }

    private func takeHook(for range: KeyRange) -> (@Sendable () async throws -> Void)? {
        lock.withLock {
            guard range.lowerBound.first == 0x03, state.hook != nil else { return nil }
            state.scans += 1
            guard state.scans == state.fireAt else { return nil }
            defer { state.hook = nil }
            return state.hook
        }
    }

    public override func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws
        -> [KeyValueEntry]
    {
        if let hook = takeHook(for: range) { try await hook() }
        return try await super.scan(range, direction: direction, limit: limit)
    }

    public override func scan(
        _ range: KeyRange, direction: ScanDirection, limit: Int, visiting visit: (BorrowedEntry) throws -> Bool
    ) async throws -> Int {
        if let hook = takeHook(for: range) { try await hook() }
        return try await super.scan(range, direction: direction, limit: limit, visiting: visit)
    }
}
