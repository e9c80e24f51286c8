// A quiet watch on a healthy member left it as soon as one of the client's requests had failed over from that member,
// whatever the reason (found by a fourth review of the idle check, twenty-third session). A read in flight during a
// leader election gets "etcdserver: leader changed" (gRPC Unavailable) from a healthy member; the client retries it
// on the next member, and every quiet watch on the healthy member then reconnected from its last change at its next
// idle check, to be refused as compacted. The member answers the watch's own check (a linearizable read) at once, so
// the watch stays. Fake members on loopback, no cluster needed.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

#if canImport(Glibc)
    import Glibc
#endif

@Suite("etcd: a quiet watch stays on a healthy member the client's requests left", .timeLimit(.minutes(2)))
struct EtcdWatchStaysTests {
    @Test("a read that met a leader election on a healthy member does not move the member's quiet watch")
    func leaderChangeDoesNotMoveQuietWatch() async throws {
        let namespace = Array("leader-change".utf8)
        let created = "{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}"
        let clientReadKey = Data(namespace + [0]).base64EncodedString()  // currentRevision's key
        let leaderChanged = Locked(false)
        let checksOnHealthy = Locked(0)
        let watchesOnOther = Locked(0)
        // Member 0 is healthy: its watch is created and the namespace is quiet; a read that was in flight when the
        // cluster elected a new leader gets etcd's "leader changed" (code 14, Unavailable); every later read answers.
        let healthy = try FakeGatewayMember { path, text in
            switch path {
            case "/v3/watch": return .stream([created])
            case "/v3/kv/range":
                if text.contains(clientReadKey), leaderChanged.withLock({ done in defer { done = true }; return !done }) {
                    return .answer(
                        status: "503 Service Unavailable",
                        body: "{\"error\":\"etcdserver: leader changed\",\"code\":14,\"message\":\"etcdserver: leader changed\"}")
                }
                if !text.contains(clientReadKey) { checksOnHealthy.withLock { $0 += 1 } }
                return .answer(body: "{\"header\":{\"revision\":\"9\"}}")
            default: return .answer(status: "404 Not Found", body: "{}")
            }
        }
        // Member 1 is healthy too; other tenants wrote and the cluster was compacted at 8, past the watch's revision 5
        // (none of the watch's changes: its namespace is quiet). A watch reopened from 6 is refused as compacted.
        let other = try FakeGatewayMember { path, _ in
            switch path {
            case "/v3/watch":
                watchesOnOther.withLock { $0 += 1 }
                return .stream([
                    created,
                    "{\"result\":{\"header\":{\"revision\":\"9\"},\"canceled\":true,\"compact_revision\":\"8\","
                        + "\"cancel_reason\":\"mvcc: required revision has been compacted\"}}",
                ])
            case "/v3/kv/range": return .answer(body: "{\"header\":{\"revision\":\"9\"}}")
            default: return .answer(status: "404 Not Found", body: "{}")
            }
        }
        defer { healthy.stop(); other.stop() }
        let store = try EtcdKeyValueStore(
            configuration: EtcdConfiguration(
                endpoints: try EtcdConfiguration.endpoints(parsing: "\(healthy.url),\(other.url)"),
                namespace: namespace, requestTimeout: .seconds(2), retryBudget: .seconds(30),
                maximumTransactionOperations: 10_000, maximumRequestBytes: 10 << 20,
                watchIdleTimeout: .seconds(1)))
        let ending = Locked<String?>(nil)
        let ended = Locked(false)
        let watch = Task {
            do {
                for try await _ in store.changes(after: 5, prefix: []) {}
            } catch {
                ending.withLock { $0 = "\(error)" }
            }
            ended.withLock { $0 = true }
        }
        // The client's read met the leader election on member 0 and was answered by member 1.
        #expect(try await store.currentRevision() == 9)
        #expect(store.transport.currentEndpoint == 1)
        // Ends on either event: member 0 answered two more checks (the watch stayed), or the watch's stream ended.
        // The deadline is only a hang guard.
        let deadline = ContinuousClock.now.advanced(by: .seconds(60))
        while checksOnHealthy.withLock({ $0 }) < 2, !ended.withLock({ $0 }), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(
            ending.withLock { $0 } == nil,
            "the quiet watch left its healthy member after the client's read met a leader election, and ended: \(ending.withLock { $0 } ?? "")")
        #expect(watchesOnOther.withLock { $0 } == 0, "the quiet watch reconnected on member 1 from its last change")
        watch.cancel()
        await watch.value
        try await store.close()
    }
}
