// Scale-out review: defects found with two application nodes (two EtcdKeyValueStore instances, each with its own
// connection pool and writer lock) on one etcd cluster.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite(
    "etcd: scale-out defects", .enabled(if: EtcdTestCluster.isConfigured, EtcdTestCluster.skipReason),
    // A hang guard: the suite takes seconds alone, but minutes inside a full ThreadSanitizer run.
    .serialized, .timeLimit(.minutes(6)))
struct EtcdScaleOutDefectTests {
    /// Node A re-sends (same ids) a batch of a soft-deleted stream while node B scavenges it. The docs allow two
    /// outcomes: the original result (ids still stored) or a fresh append (scavenge forgot the ids). The update's
    /// reads are separate linearizable reads, so A can see the event-id entries, then find the log record gone.
    @Test("re-sending events on node A while node B scavenges them never reports corruption")
    func idempotentRetryDuringScavenge() async throws {
        let namespace = EtcdTestCluster.uniqueNamespace("scavenge-retry")
        let (backendA, backendB) = (
            try EtcdTestCluster.makeStore(namespace: namespace), try EtcdTestCluster.makeStore(namespace: namespace)
        )
        let (a, b) = (KeyValueEventStore(backend: backendA), KeyValueEventStore(backend: backendB))
        var failures: [String] = []
        for round in 0..<30 where failures.isEmpty {
            let stream = try StreamName("scavenged-\(round)")
            let events = (0..<20).map { EventData(type: "T", data: Data([UInt8($0)])) }
            _ = try await a.append(events, to: stream, expectedVersion: .noStream)
            _ = try await a.delete(stream, expectedVersion: .any, mode: .soft)
            let scavenged = Locked(false)
            let errors = Locked<[String]>([])
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    _ = try await b.scavenge(stream)
                    scavenged.withLock { $0 = true }
                }
                group.addTask {
                    repeat {
                        do { _ = try await a.append(events, to: stream, expectedVersion: .any) }
                        catch { errors.withLock { $0.append("\(error)") } }
                    } while !scavenged.withLock({ $0 })
                }
                try await group.waitForAll()
            }
            failures = errors.withLock { $0 }
        }
        #expect(failures.isEmpty, "a re-send racing scavenge failed: \(failures)")
        try await backendA.removeAllKeys()
        try await a.close()
        try await b.close()
    }

    /// etcd refuses every write with gRPC RESOURCE_EXHAUSTED "mvcc: database space exceeded" once its backend quota
    /// is full (the NOSPACE alarm, raised here through etcd's own Alarm API on a private cluster). A one-event append
    /// is then reported as a transaction over --max-request-bytes, with the advice to append fewer events.
    @Test("a full etcd database is not reported as a too-large transaction")
    func databaseSpaceExceeded() async throws {
        let cluster = try await PrivateEtcdCluster.start(label: "nospace")
        do {
            let backend = try EtcdTestCluster.makeStore(
                namespace: EtcdTestCluster.uniqueNamespace("nospace"), endpoints: cluster.endpoints)
            let store = KeyValueEventStore(backend: backend)
            let status = try await backend.transport.call(
                "v3/maintenance/status", body: [String: String](), idempotent: true, as: MemberStatus.self)
            let member = try #require(status.header?.member_id)
            _ = try await backend.transport.call(
                "v3/maintenance/alarm", body: AlarmRequest(action: "ACTIVATE", memberID: member, alarm: "NOSPACE"),
                idempotent: true, as: EtcdWire.Empty.self)
            do {
                _ = try await store.append([EventData(type: "T", data: Data([1]))], to: try StreamName("s-1"), expectedVersion: .any)
                Issue.record("the append succeeded with the NOSPACE alarm raised")
            } catch EventStoreError.backend(let detail) {
                #expect(!detail.contains("append fewer events"), "\(detail)")
                #expect(detail.contains("space exceeded"), "\(detail)")
            }
            _ = try await backend.transport.call(
                "v3/maintenance/alarm", body: AlarmRequest(action: "DEACTIVATE", memberID: member, alarm: "NOSPACE"),
                idempotent: true, as: EtcdWire.Empty.self)
            try await store.close()
        } catch {
            try? await cluster.stop()
            throw error
        }
        try await cluster.stop()
    }
}

struct AlarmRequest: Encodable {
    var action: String
    var memberID: String
    var alarm: String
}

struct MemberStatus: Decodable {
    struct Header: Decodable { var member_id: String? }
    var header: Header?
}

@Suite("etcd: commit error mapping (review)")
struct EtcdCommitErrorMappingTests {
    /// What etcd 3.4 answers (HTTP 429, gRPC code 8) to a request over its gRPC receive limit, --max-request-bytes plus
    /// 512 KiB: captured from a real etcd started with --max-request-bytes 100000 and an 800000-byte put.
    @Test("a request over etcd's gRPC message limit is a too-large transaction, as it was before 5c4a1c3")
    func grpcMessageLargerThanMax() {
        let transaction = KeyValueTransaction(writes: [.put([1], [UInt8](repeating: 7, count: 800_000))])
        let built = EtcdTransaction(request: EtcdWire.TxnRequest(compare: [], success: [], failure: []))
        let error = EtcdKeyValueStore.commitError(
            .server(code: 8, message: "grpc: received message larger than max (800007 vs. 624288)"),
            transaction: transaction, built: built)
        guard case .transactionTooLarge = error else {
            Issue.record("mapped to \(error)")
            return
        }
    }
}
