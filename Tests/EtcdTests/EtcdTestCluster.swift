// Where the etcd tests find their cluster and helper processes.

import EventStore
import EventStoreKV
import Foundation
import Testing

enum EtcdTestCluster {
    /// The cluster named by `ETCD_ENDPOINTS`, or nil.
    static let endpointList: String? = {
        guard let list = ProcessInfo.processInfo.environment["ETCD_ENDPOINTS"], !list.isEmpty else { return nil }
        return list
    }()

    static var isConfigured: Bool { endpointList != nil }

    static let skipReason: Comment =
        "ETCD_ENDPOINTS is not set, so the etcd suite is skipped: run scripts/etcd-cluster.sh start and export ETCD_ENDPOINTS"

    /// A fresh namespace, so that tests running in parallel never see each other's keys.
    static func uniqueNamespace(_ label: String) -> String { "etcd-tests/\(label)/\(UUID().uuidString)/" }

    static func configuration(namespace: String, endpoints: String? = nil) throws -> EtcdConfiguration {
        EtcdConfiguration(
            endpoints: try EtcdConfiguration.endpoints(parsing: endpoints ?? endpointList ?? ""),
            namespace: Array(namespace.utf8), maximumTransactionOperations: 10_000, maximumRequestBytes: 10 << 20)
    }

    static func makeStore(namespace: String, endpoints: String? = nil) throws -> EtcdKeyValueStore {
        try EtcdKeyValueStore(configuration: configuration(namespace: namespace, endpoints: endpoints))
    }

    /// The repository root, from this file's path.
    static let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()
}
