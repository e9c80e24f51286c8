// Scavenge on etcd within the cluster's transaction limit (twentieth session's review): scavenge removed 128 events
// per transaction whatever the backend took, so with etcd's default --max-txn-ops (128, also EtcdConfiguration's
// default) a stream with more than a couple of dozen hidden events failed on the same first batch, forever.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite(
    "etcd: scavenge within the cluster's transaction limit",
    .enabled(if: EtcdTestCluster.isConfigured, EtcdTestCluster.skipReason), .timeLimit(.minutes(2)))
struct ScavengeTransactionLimitTests {
    @Test("scavenge on a cluster with etcd's default --max-txn-ops removes the hidden events")
    func scavengeUnderDefaultTxnOps() async throws {
        let namespace = EtcdTestCluster.uniqueNamespace("scavenge-txn-ops")
        // etcd's defaults, which are also EtcdConfiguration's: 128 operations, 1.5 MiB per request.
        let configuration = EtcdConfiguration(
            endpoints: try EtcdConfiguration.endpoints(parsing: EtcdTestCluster.endpointList ?? ""),
            namespace: Array(namespace.utf8))
        #expect(configuration.maximumTransactionOperations == 128)
        let backend = try EtcdKeyValueStore(configuration: configuration)
        let store = KeyValueEventStore(backend: backend)
        let stream = try StreamName("audit-1")
        // Forty one-event appends, each well within the limit (about 8 operations).
        for index in 0..<40 {
            _ = try await store.append(
                [EventData(type: "Audited", data: Data("\(index)".utf8))], to: stream, expectedVersion: .any)
        }
        try await store.setMetadata(StreamMetadata(maxCount: 1), for: stream)
        var outcome: Result<ScavengeReport, any Error>
        do { outcome = .success(try await store.scavenge()) } catch { outcome = .failure(error) }
        if case .failure(let error) = outcome { Issue.record("scavenge failed: \(error)") }
        #expect((try? outcome.get())?.eventsRemoved == 39)
        #expect(try await store.readAll(from: 1, limit: .max).count == 1)
        try await backend.removeAllKeys()
        try await store.close()
    }
}
