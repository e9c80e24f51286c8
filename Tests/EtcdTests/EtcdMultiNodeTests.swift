// Two application nodes as two separate processes on one etcd cluster: the session lock holds across them, a killed
// holder's lease runs out on the server, and concurrent appends from both keep streams contiguous and global
// positions gapless.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("etcd: two nodes in two processes", .enabled(if: EtcdTestCluster.isConfigured, EtcdTestCluster.skipReason))
struct EtcdMultiNodeTests {
    @Test("a session held by one process blocks the other; killing the holder lets it in after the lease TTL")
    func sessionLockAcrossProcesses() async throws {
        let endpoints = try #require(EtcdTestCluster.endpointList)
        let namespace = EtcdTestCluster.uniqueNamespace("lock")
        let stream = "locked-\(UUID().uuidString.prefix(8))"
        let holder = try EtcdNodeProcess(["hold", endpoints, namespace, stream, "3"])
        let held = await holder.nextLine()
        #expect(held?.hasPrefix("HELD") == true)
        let holderSession = held?.split(separator: " ").last.map(String.init) ?? "?"

        let blocked = try EtcdNodeProcess(["open", endpoints, namespace, stream, "1"])
        let refusal = await blocked.remainingLines()
        try await blocked.waitForExit()
        #expect(refusal.first?.hasPrefix("LOCKED") == true)
        #expect(refusal.first?.contains(holderSession) == true)

        await holder.kill()
        let waiting = try EtcdNodeProcess(["open", endpoints, namespace, stream, "30"])
        let admitted = await waiting.remainingLines()
        try await waiting.waitForExit()
        #expect(admitted.first?.hasPrefix("OPENED") == true)

        let store = try EtcdTestCluster.makeStore(namespace: namespace)
        try await store.removeAllKeys()
        try await store.close()
    }

    @Test("concurrent appends from two processes keep streams contiguous and positions gapless")
    func concurrentAppendsAcrossProcesses() async throws {
        let endpoints = try #require(EtcdTestCluster.endpointList)
        let namespace = EtcdTestCluster.uniqueNamespace("appends")
        let streams = (0..<3).map { "shared-\($0)" }.joined(separator: ",")
        let nodes = try ["a", "b"].map { label in
            try EtcdNodeProcess(["append", endpoints, namespace, streams, "40", label])
        }
        var acknowledged: Set<UUID> = []
        for node in nodes {
            let lines = await node.remainingLines()
            try await node.waitForExit()
            #expect(lines.last == "DONE")
            for line in lines where line.hasPrefix("ACK ") {
                if let id = line.split(separator: " ").last.flatMap({ UUID(uuidString: String($0)) }) {
                    acknowledged.insert(id)
                }
            }
        }
        #expect(acknowledged.count == 80)

        let backend = try EtcdTestCluster.makeStore(namespace: namespace)
        let store = KeyValueEventStore(backend: backend)
        let log = try await store.readAll(from: 1, limit: .max)
        #expect(log.map(\.position) == Array(1...UInt64(log.count)))
        #expect(Set(log.map(\.id)) == acknowledged)
        for name in streams.split(separator: ",") {
            let events = try await store.read(try StreamName(String(name)))
            #expect(events.map(\.version) == Array(1...UInt64(events.count)))
        }
        try await backend.removeAllKeys()
        try await store.close()
    }
}
