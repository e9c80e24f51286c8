// The backends the conformance suite runs against. Every scenario is a parameterised test over `Backends.all`;
// a new backend adds one factory here and passes every scenario unchanged.

import EventStore
import EventStoreKV
import Foundation
import Testing

/// A store made for one test, with whatever it needs to clean up afterwards.
struct TestStore: Sendable {
    let store: KeyValueEventStore
    let cleanup: @Sendable () async -> Void
}

/// Makes fresh, empty stores of one backend kind.
struct Backend: Sendable, CustomTestStringConvertible {
    let name: String
    /// The shortest lease this backend honours (etcd grants whole seconds, with a floor); session tests scale their
    /// timeouts up to it.
    var leaseResolution: Duration = .zero
    let make: @Sendable (EventStoreLimits) async throws -> TestStore
    /// Bytes of storage the backend occupies (a file's size, or its live keys and values), for checking that
    /// scavenge reclaims space; nil for a backend that cannot tell.
    var storageInUse: (@Sendable (KeyValueEventStore) async throws -> Int)? = nil

    init(
        name: String, leaseResolution: Duration = .zero,
        make: @escaping @Sendable (EventStoreLimits) async throws -> TestStore,
        storageInUse: (@Sendable (KeyValueEventStore) async throws -> Int)? = nil
    ) {
        self.name = name
        self.leaseResolution = leaseResolution
        self.make = make
        self.storageInUse = storageInUse
    }

    /// `requested`, raised to what the backend can honour.
    func leaseTimeout(_ requested: Duration) -> Duration { max(requested, leaseResolution) }

    var testDescription: String { name }

    /// Runs `body` against a fresh store, always cleaning up.
    func withStore<T>(
        limits: EventStoreLimits = EventStoreLimits(), _ body: (KeyValueEventStore) async throws -> T
    ) async throws -> T {
        let made = try await make(limits)
        do {
            let result = try await body(made.store)
            await made.cleanup()
            return result
        } catch {
            await made.cleanup()
            throw error
        }
    }

    static let inMemory = Backend(
        name: "in-memory",
        make: { limits in
            let store = KeyValueEventStore(backend: InMemoryKeyValueStore(), limits: limits)
            return TestStore(store: store) { try? await store.close() }
        },
        storageInUse: { store in
            let entries = try await store.backend.scan(KeyRange(from: [], to: nil), direction: .forward, limit: .max)
            return entries.reduce(0) { $0 + $1.key.count + $1.value.count }
        })
}

extension Backend {
    /// The page-file engine, each test in a fresh temporary directory that is removed afterwards. Every commit waits
    /// for an fdatasync, which on a busy CI disk can take a good part of a second, so session leases get at least three
    /// seconds. Storage in use is the page file after a checkpoint (so freed pages are accounted for).
    static let pageFile = Backend(
        name: "page-file", leaseResolution: .seconds(3),
        make: { limits in
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("eventstore-conformance-\(UUID().uuidString)").path
            let store = KeyValueEventStore(
                backend: try await PageFileKeyValueStore.open(directory: directory), limits: limits)
            return TestStore(store: store) {
                try? await store.close()
                try? FileManager.default.removeItem(atPath: directory)
            }
        },
        storageInUse: { store in
            guard let pageFile = store.backend as? PageFileKeyValueStore else { return 0 }
            try await pageFile.checkpoint()
            let statistics = try pageFile.statistics()
            return Int(statistics.pageCount) * statistics.pageSize
        })
}

enum Backends {
    /// Every backend available in this run. Backends that need a server join when it is configured.
    static var all: [Backend] {
        [.inMemory, .pageFile]
    }
}
