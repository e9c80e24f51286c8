// A watch (under every live subscription and projection) must outlive one bad member while the others are healthy,
// and must not stay open on a member cut off from the others (twenty-first session's review). It counted the idle
// reconnect of a quiet namespace as a member failure, waited watchIdleTimeout (60 s) to connect to a member that
// never answers, and gave up once the retry budget (30 s) had passed since that first "failure": one attempt at one
// dead member ended every live subscription of the node. And a member that lost its leader kept the watch open and
// silent, so the node saw no more changes.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing
#if canImport(Glibc)
    import Glibc
#endif

@Suite(
    "etcd: a watch outlives a bad member",
    .enabled(if: EtcdTestCluster.isConfigured, EtcdTestCluster.skipReason),
    // The second test runs a private cluster: three more etcd processes on a 2-core machine.
    .serialized,
    .timeLimit(.minutes(2)))
struct EtcdWatchFailoverTests {
    /// A watch opened before any other request meets the bad members itself: a refusing one, then one that takes
    /// connections and never answers (a paused host). The request timeout is above the retry budget, so the budget
    /// alone would give up at the second member; the idle timeout is far above both.
    @Test("a watch reaches the healthy member past a refusing and an unresponsive one, each costing requestTimeout")
    func watchPassesBadMembers() async throws {
        let members = try #require(EtcdTestCluster.endpointList).split(separator: ",").map(String.init)
        let (refusing, refusingURL) = try Self.refusingMember()
        defer { Glibc.close(refusing) }
        let (silent, silentURL) = try Self.silentMember()
        defer { Glibc.close(silent) }
        let outcome = try await Self.deliver(
            endpoints: [refusingURL, silentURL, members[0]], requestTimeout: .seconds(3),
            watchIdleTimeout: .seconds(120), quietFor: .zero)
        #expect(outcome.keys == [[1]])
        #expect(outcome.ending == nil, "the watch ended: \(outcome.ending ?? "")")
        #expect(outcome.endpoint == 2)
    }

    /// A created watch that stays silent for watchIdleTimeout checks its member; a quiet namespace is no sign of a bad
    /// member, so it must not move the client off a healthy one (onto a refusing one here, and back).
    @Test("a quiet watch's idle checks count as no failure and keep the client on its member")
    func quietReconnectsAreNoFailure() async throws {
        let members = try #require(EtcdTestCluster.endpointList).split(separator: ",").map(String.init)
        let (refusing, refusingURL) = try Self.refusingMember()
        defer { Glibc.close(refusing) }
        // At least three idle timeouts pass in silence before the change.
        let outcome = try await Self.deliver(
            endpoints: [members[0], refusingURL], requestTimeout: .seconds(1), watchIdleTimeout: .seconds(2),
            quietFor: .seconds(7))
        #expect(outcome.keys == [[1]])
        #expect(outcome.ending == nil, "the watch ended: \(outcome.ending ?? "")")
        #expect(outcome.failovers == 0, "an idle check moved the client")
        #expect(outcome.idleChecks >= 2, "the watch checked its member \(outcome.idleChecks) times in 7 s of silence")
    }

    /// What ``deliver(endpoints:requestTimeout:watchIdleTimeout:quietFor:)`` saw.
    private struct Outcome {
        var keys: [Key]
        var ending: String?
        var failovers: Int
        var endpoint: Int
        /// How many times the watch checked its member after a silence.
        var idleChecks: Int
    }

    /// Watches a fresh namespace through `endpoints` (the watch is the store's first request), waits `quiet`, commits
    /// one change through the shared cluster and waits (bounded) for the watch to deliver it or end. Other tests
    /// compact the shared cluster (a few times in a whole run); a watch whose start revision they compacted
    /// (historyUnavailable, which the subscriptions above the contract handle by reading again) is tried again, up to
    /// eight times.
    private static func deliver(
        endpoints: [String], requestTimeout: Duration, watchIdleTimeout: Duration, quietFor quiet: Duration
    ) async throws -> Outcome {
        var attempt = 0
        while true {
            attempt += 1
            let namespace = EtcdTestCluster.uniqueNamespace("watch-failover")
            let watcher = try store(
                namespace, endpoints: endpoints, requestTimeout: requestTimeout, watchIdleTimeout: watchIdleTimeout)
            let writer = try EtcdTestCluster.makeStore(namespace: namespace)
            let received = watch(watcher, after: try await writer.currentRevision())
            try await Task.sleep(for: quiet)
            _ = try await writer.commit(KeyValueTransaction(writes: [.put([1], [1])]))
            // Bounded: two bad members at requestTimeout each, and a margin.
            let deadline = ContinuousClock.now.advanced(by: .seconds(30))
            while received.keys.withLock({ $0.isEmpty }), received.ending.withLock({ $0 == nil }),
                ContinuousClock.now < deadline
            {
                try await Task.sleep(for: .milliseconds(50))
            }
            // Read before the cancellation below, which ends the stream.
            let outcome = Outcome(
                keys: received.keys.withLock { $0 }, ending: received.ending.withLock { $0 },
                failovers: watcher.transport.failoverCount, endpoint: watcher.transport.currentEndpoint,
                idleChecks: watcher.state.withLock { $0.watchers.values.first?.idleCheckCount } ?? 0)
            received.task.cancel()
            try await writer.removeAllKeys()
            try await watcher.close()
            try await writer.close()
            if received.compacted.withLock({ $0 }), attempt < 8 { continue }
            return outcome
        }
    }

    /// What a watch delivered, and how it ended (nil while it runs).
    private struct Received: Sendable {
        let keys: Locked<[Key]>
        let ending: Locked<String?>
        /// Whether it ended because its start revision was compacted.
        let compacted: Locked<Bool>
        let task: Task<Void, Never>
    }

    /// Starts consuming `store`'s changes after `revision` in the background.
    private static func watch(_ store: EtcdKeyValueStore, after revision: UInt64) -> Received {
        let keys = Locked<[Key]>([])
        let ending = Locked<String?>(nil)
        let compacted = Locked(false)
        let task = Task {
            do {
                for try await change in store.changes(after: revision, prefix: []) {
                    keys.withLock { $0.append(change.key) }
                }
                ending.withLock { $0 = "the stream finished" }
            } catch {
                if case KeyValueStoreError.historyUnavailable = error { compacted.withLock { $0 = true } }
                ending.withLock { $0 = "\(error)" }
            }
        }
        return Received(keys: keys, ending: ending, compacted: compacted, task: task)
    }

    private static func store(
        _ namespace: String, endpoints: [String], requestTimeout: Duration, watchIdleTimeout: Duration
    ) throws -> EtcdKeyValueStore {
        try EtcdKeyValueStore(
            configuration: EtcdConfiguration(
                endpoints: try EtcdConfiguration.endpoints(parsing: endpoints.joined(separator: ",")),
                namespace: Array(namespace.utf8), requestTimeout: requestTimeout, retryBudget: .seconds(2),
                maximumTransactionOperations: 10_000, maximumRequestBytes: 10 << 20,
                watchIdleTimeout: watchIdleTimeout))
    }

    /// A bound port nobody listens on: connections are refused.
    private static func refusingMember() throws -> (Int32, String) {
        let (fd, address) = try loopbackSocket(listening: nil)
        return (fd, "http://127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))")
    }

    /// A listening socket nobody accepts from: the kernel completes the handshake, nothing ever answers.
    private static func silentMember() throws -> (Int32, String) {
        let (fd, address) = try loopbackSocket(listening: 16)
        return (fd, "http://127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))")
    }

    /// A member cut off from the others (here: the others stopped) keeps serving a watch that does not require a
    /// leader, silently; one that requires it is ended by the member once it has had no leader for a few election
    /// timeouts, and, no member being able to serve it, the watch ends with unavailable.
    @Test("a watch on a member that lost its leader ends rather than staying silent")
    func watchOnLeaderlessMemberEnds() async throws {
        let cluster = try await PrivateEtcdCluster.start(label: "leaderless")
        do {
            try await leaderless(on: cluster)
        } catch {
            try? await cluster.stop()
            throw error
        }
        try await cluster.stop()
    }

    private func leaderless(on cluster: PrivateEtcdCluster) async throws {
        var configuration = try EtcdTestCluster.configuration(
            namespace: EtcdTestCluster.uniqueNamespace("leaderless"), endpoints: cluster.endpoints)
        configuration.requestTimeout = .seconds(1)
        configuration.retryBudget = .seconds(2)
        configuration.watchIdleTimeout = .seconds(300)  // never the reason the watch ends here
        let backend = try EtcdKeyValueStore(configuration: configuration)
        let start = try await backend.currentRevision()
        #expect(backend.transport.currentEndpoint == 0)
        let watch = Task { () async -> (any Error)? in
            do {
                for try await _ in backend.changes(after: start, prefix: []) {}
                return nil
            } catch {
                return error
            }
        }
        _ = try await backend.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await cluster.run(["stop-member", "2"])
        try await cluster.run(["stop-member", "3"])
        // A bound, should the watch stay open: etcd ends a leader-requiring stream about three election timeouts
        // (1 s each by default) after its member lost the leader.
        let bound = Task {
            do {
                try await Task.sleep(for: .seconds(60))
                watch.cancel()
            } catch {}  // cancelled: the watch ended by itself
        }
        let ending = await watch.value
        bound.cancel()
        if let ending {
            #expect(ending is KeyValueStoreError, "\(ending)")
        } else {
            Issue.record("the watch on a leaderless member never ended")
        }
        try await backend.close()
    }
}
