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
    /// How many tasks the retry-until-success contention scenario runs: its round trips grow with the square of
    /// the writers, which a networked backend pays in real time.
    var retryingWriters = 100
    /// How much smaller bulk-write scenarios are on this backend (1: full size), to keep a networked backend's
    /// run within the CI budget.
    var workloadDivisor = 1
    let make: @Sendable (EventStoreLimits) async throws -> TestStore
    /// Bytes of storage the backend occupies (a file's size, or its live keys and values), for checking that
    /// scavenge reclaims space; nil for a backend that cannot tell.
    var storageInUse: (@Sendable (KeyValueEventStore) async throws -> Int)? = nil

    init(
        name: String, leaseResolution: Duration = .zero, retryingWriters: Int = 100, workloadDivisor: Int = 1,
        make: @escaping @Sendable (EventStoreLimits) async throws -> TestStore,
        storageInUse: (@Sendable (KeyValueEventStore) async throws -> Int)? = nil
    ) {
        self.name = name
        self.leaseResolution = leaseResolution
        self.retryingWriters = retryingWriters
        self.workloadDivisor = workloadDivisor
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
        storageInUse: liveBytes)

    /// The bytes of every live key and value.
    @Sendable static func liveBytes(_ store: KeyValueEventStore) async throws -> Int {
        let entries = try await store.backend.scan(KeyRange(from: [], to: nil), direction: .forward, limit: .max)
        return entries.reduce(0) { $0 + $1.key.count + $1.value.count }
    }

    /// An etcd cluster named by `ETCD_ENDPOINTS` (comma-separated client URLs), or nil when it is not set. Each store
    /// gets its own random namespace, so tests running in parallel on one cluster never see each other's keys.
    static let etcd: Backend? = {
        guard let list = ProcessInfo.processInfo.environment["ETCD_ENDPOINTS"], !list.isEmpty else { return nil }
        // etcd grants whole-second leases with a 2 s floor (default election timeout); a lease's clock starts at its
        // grant, a round trip before its key is written, so tests on a loaded CI machine keep a second of headroom.
        return Backend(
            name: "etcd", leaseResolution: .seconds(3), retryingWriters: 20, workloadDivisor: 10,
            make: { limits in
                let configuration = EtcdConfiguration(
                    endpoints: try EtcdConfiguration.endpoints(parsing: list),
                    namespace: Array("conformance/\(UUID().uuidString)/".utf8),
                    // scripts/etcd-cluster.sh raises the server's limits to these.
                    maximumTransactionOperations: 10_000, maximumRequestBytes: 10 << 20)
                let backend = try EtcdKeyValueStore(configuration: configuration)
                let store = KeyValueEventStore(backend: backend, limits: limits)
                return TestStore(store: store) {
                    try? await backend.removeAllKeys()
                    try? await store.close()
                }
            },
            storageInUse: liveBytes)
    }()
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
        [.inMemory, .pageFile] + [Backend.etcd].compactMap { $0 }
    }
}
