// The backends the snapshot tests run against. Every scenario is a parameterised test over `SnapshotBackends.all`;
// a backend kept on disk joins with one `.onDisk(name) { directory in ... }` entry.

import EventStore
import EventStoreKV
import Foundation
import Testing

/// Makes fresh, empty event stores of one backend kind, for one test each.
struct SnapshotBackend: Sendable, CustomTestStringConvertible {
    let name: String
    /// How much smaller long property runs are on this backend (1: full size), to keep a networked backend's run
    /// within the CI budget.
    var workloadDivisor = 1
    /// Makes a store and the clean-up to run after the test.
    let make: @Sendable () async throws -> (store: KeyValueEventStore, cleanup: @Sendable () async -> Void)

    var testDescription: String { name }

    /// Runs `body` against a fresh store, always cleaning up.
    func withStore<T>(_ body: (KeyValueEventStore) async throws -> T) async throws -> T {
        let (store, cleanup) = try await make()
        do {
            let result = try await body(store)
            await cleanup()
            return result
        } catch {
            await cleanup()
            throw error
        }
    }

    /// A backend kept in a fresh temporary directory, which is removed after the test.
    static func onDisk(
        _ name: String, open: @escaping @Sendable (_ directory: String) async throws -> any KeyValueStore
    ) -> SnapshotBackend {
        SnapshotBackend(name: name) {
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("eventstore-snapshots-\(UUID().uuidString)").path
            let store = KeyValueEventStore(backend: try await open(directory))
            return (store, {
                try? await store.close()
                try? FileManager.default.removeItem(atPath: directory)
            })
        }
    }

    static let inMemory = SnapshotBackend(name: "in-memory") {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore())
        return (store, { try? await store.close() })
    }
}

extension SnapshotBackend {
    /// The etcd cluster named by `ETCD_ENDPOINTS`, or nil when it is not set; each store gets a namespace of its own,
    /// whose keys are removed after the test.
    static let etcd: SnapshotBackend? = {
        guard let list = ProcessInfo.processInfo.environment["ETCD_ENDPOINTS"], !list.isEmpty else { return nil }
        return etcd(endpoints: list, maximumTransactionOperations: 10_000)  // scripts/etcd-cluster.sh's limit
    }()

    /// An etcd backend on `endpoints` that refuses transactions of more than `maximumTransactionOperations`, as a
    /// server started with that `--max-txn-ops` does.
    static func etcd(endpoints: String, maximumTransactionOperations: Int) -> SnapshotBackend {
        SnapshotBackend(name: "etcd", workloadDivisor: 25) {
            let backend = try EtcdKeyValueStore(
                configuration: EtcdConfiguration(
                    endpoints: try EtcdConfiguration.endpoints(parsing: endpoints),
                    namespace: Array("snapshots/\(UUID().uuidString)/".utf8),
                    maximumTransactionOperations: maximumTransactionOperations, maximumRequestBytes: 10 << 20))
            let store = KeyValueEventStore(backend: backend)
            return (store, {
                try? await backend.removeAllKeys()
                try? await store.close()
            })
        }
    }
}

enum SnapshotBackends {
    /// Every backend the snapshot tests run on; etcd joins when `ETCD_ENDPOINTS` names a cluster.
    static var all: [SnapshotBackend] { local + [SnapshotBackend.etcd].compactMap { $0 } }

    /// The embedded backends, for bulk scenarios whose logic no backend changes (100,000 events through etcd would
    /// only load the CI cluster that the other etcd tests share).
    static var local: [SnapshotBackend] {
        [.inMemory, .onDisk("page-file") { try PageFileKeyValueStore.open(directory: $0) }]
    }
}
