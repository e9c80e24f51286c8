// A silent watch stayed on its member for as long as the member answered a status request requiring a leader
// (found by a review of that change, twenty-third session). etcd answers Status from the member's local state (no raft
// round, no apply), so a member whose disk or apply loop stalls keeps answering it, with its leader set
// (etcd-io/etcd#13527, #16276), while its watches deliver nothing and its other requests time out. The check is now a
// linearizable read. Fake members on loopback, no cluster needed.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

#if canImport(Glibc)
    import Glibc
#endif

@Suite("etcd: a silent watch leaves a stalled member", .timeLimit(.minutes(2)))
struct EtcdWatchStalledMemberTests {
    /// `clientMoves`: the client's own request times out on the stalled member first; either way only the watch's
    /// own check (a linearizable read) can tell it to leave.
    @Test(
        "a watch on a member that answers status but has stalled moves to a working member",
        arguments: [true, false])
    func watchLeavesStalledMember(clientMoves: Bool) async throws {
        let namespace = Array("probe-stall".utf8)
        let created = "{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}"
        // Member 0 has stalled: its watch is created and then silent, its kv requests are never answered, and its
        // Status, served from local state, answers with a leader.
        let stalled = try FakeGatewayMember { path, _ in
            switch path {
            case "/v3/watch": return .stream([created])
            case "/v3/maintenance/status":
                return .answer(body: "{\"header\":{\"revision\":\"5\"},\"leader\":\"1\",\"raftIndex\":\"9\",\"raftTerm\":\"2\"}")
            default: return .hold
            }
        }
        // Member 1 works: the change at revision 6 (the put of [1]) is in its watch.
        let key = Data(namespace + [1]).base64EncodedString()
        let event =
            "{\"result\":{\"header\":{\"revision\":\"6\"},\"events\":[{\"kv\":{\"key\":\"\(key)\",\"value\":\"AQ==\","
            + "\"mod_revision\":\"6\",\"create_revision\":\"6\",\"version\":\"1\"}}]}}"
        let working = try FakeGatewayMember { path, _ in
            switch path {
            case "/v3/watch": return .stream([created, event])
            case "/v3/kv/range": return .answer(body: "{\"header\":{\"revision\":\"6\"}}")
            default: return .hold
            }
        }
        defer { stalled.stop(); working.stop() }
        let store = try EtcdKeyValueStore(
            configuration: EtcdConfiguration(
                endpoints: try EtcdConfiguration.endpoints(parsing: "\(stalled.url),\(working.url)"),
                namespace: namespace, requestTimeout: .seconds(1), retryBudget: .seconds(30),
                maximumTransactionOperations: 10_000, maximumRequestBytes: 10 << 20,
                watchIdleTimeout: .seconds(1)))
        let received = Locked<[Key]>([])
        let watch = Task {
            do {
                for try await change in store.changes(after: 5, prefix: []) { received.withLock { $0.append(change.key) } }
            } catch {}
        }
        if clientMoves {
            // The client's own request times out on the stalled member and moves on to the working one.
            #expect(try await store.currentRevision() == 6)
            #expect(store.transport.currentEndpoint == 1)
        }
        // Bounded: the old idle reopen followed the client within watchIdleTimeout (1 s).
        let deadline = ContinuousClock.now.advanced(by: .seconds(15))
        while received.withLock({ $0.isEmpty }), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let checks = store.state.withLock { $0.watchers.values.first?.idleCheckCount } ?? -1
        #expect(
            received.withLock { $0 } == [[1]],
            "the watch stayed on the stalled member (\(checks) status checks answered) and never saw the change")
        watch.cancel()
        await watch.value
        try await store.close()
    }
}
