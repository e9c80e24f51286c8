// Two ways an etcd watch outlived what its contract promised (found by a review, twenty-third session):
// - a watch opened while the store closed was inserted after close() had finished every watch, so it went on
//   reconnecting after the store was closed and its stream never ended;
// - a watch that had been handed every change of its namespace reconnected (after its member failed, or after an
//   idle timeout) from the revision of the last change it delivered; once other tenants' writes and a cluster-wide
//   compaction had passed that revision, etcd refused the watch and it ended with historyUnavailable, although no
//   change of its namespace had been compacted away. It now asks for etcd's progress notifications, which tell a
//   caught-up watch how far it has been sent everything; and a silent watch no longer reopens at all while its
//   member answers a status request (a second review found that every idle reopen, each 60 s by default, started a
//   new stream before etcd's first progress notification, 10 minutes in by default, could reach it).

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

#if canImport(Glibc)
    import Glibc
#endif

@Suite("etcd: a watch ends with its store", .timeLimit(.minutes(3)))
struct EtcdWatchCloseRaceTests {
    /// No cluster is needed: the member refuses every connection, so a leaked watch keeps retrying for its 60 s retry
    /// budget instead of ending with the store.
    @Test("a watch opened while the store closes does not outlive close()")
    func changesRacingClose() async throws {
        let (fd, address) = try loopbackSocket(listening: nil)  // bound, not listening: connections are refused
        defer { Glibc.close(fd) }
        let url = "http://127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))"
        var leaked = 0
        var rounds = 0
        while leaked == 0 && rounds < 3_000 {
            rounds += 1
            let store = try EtcdKeyValueStore(
                configuration: EtcdConfiguration(
                    endpoints: try EtcdConfiguration.endpoints(parsing: url), namespace: Array("close-race/".utf8),
                    requestTimeout: .seconds(5), retryBudget: .seconds(60)))
            let streams = await withTaskGroup(of: [AsyncThrowingStream<KeyValueChange, any Error>].self) { group in
                for _ in 0..<2 {
                    group.addTask { (0..<4).map { _ in store.changes(after: 0, prefix: []) } }
                }
                group.addTask {
                    try? await store.close()
                    return []
                }
                var all: [AsyncThrowingStream<KeyValueChange, any Error>] = []
                for await streams in group { all += streams }
                return all
            }
            // close() and every changes() call have returned: close() must have ended every watch there was, and
            // every later changes() call must have refused to start one.
            let survivors = store.state.withLock { Array($0.watchers.values) }
            leaked += survivors.count
            for watch in survivors { watch.finish(throwing: nil) }  // so that their streams end below
            for stream in streams {
                do { for try await _ in stream {} } catch {}
            }
        }
        #expect(
            leaked == 0,
            "after \(rounds) rounds, \(leaked) watch(es) opened concurrently with close() were still registered after close() returned")
    }
}

@Suite(
    "etcd: a caught-up watch survives a compaction", .enabled(if: EtcdTestCluster.isConfigured, EtcdTestCluster.skipReason),
    .timeLimit(.minutes(3)))
struct EtcdWatchProgressTests {
    /// A live watch has delivered everything of its namespace; other tenants write and the cluster is compacted
    /// (routine: compaction is cluster-wide); then the watch's member stops. Its reconnect must start after the
    /// revision etcd's progress notification reported, not after its last change, which the compaction passed.
    @Test("a caught-up watch survives its member's failure after a compaction")
    func caughtUpWatchSurvivesFailoverAfterCompaction() async throws {
        let cluster = try await PrivateEtcdCluster.start(label: "progress", progressNotifyInterval: "200ms")
        do {
            try await caughtUpWatch(on: cluster)
        } catch {
            Issue.record("\(error)")
        }
        try await cluster.stop()
    }

    private func caughtUpWatch(on cluster: PrivateEtcdCluster) async throws {
        // The watched store prefers member 1; the other tenant talks to members 2 and 3.
        let quiet = try EtcdTestCluster.makeStore(
            namespace: EtcdTestCluster.uniqueNamespace("progress-quiet"), endpoints: cluster.endpoints)
        let members = cluster.endpoints.split(separator: ",").map(String.init)
        let busy = try EtcdTestCluster.makeStore(
            namespace: EtcdTestCluster.uniqueNamespace("progress-busy"), endpoints: "\(members[1]),\(members[2])")
        let start = try await quiet.currentRevision()
        var iterator = quiet.changes(after: start, prefix: []).makeAsyncIterator()
        _ = try await quiet.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        #expect(try await iterator.next()?.key == [1])  // the watch is live and caught up
        for index in 0..<3 { _ = try await busy.commit(KeyValueTransaction(writes: [.put([1], [UInt8(index)])])) }
        let compacted = try await compactToCurrentRevision(busy)
        // Progress notifications come every 200 ms on this cluster; this waits (bounded) for one past the compaction.
        let watch = try #require(quiet.state.withLock { $0.watchers.values.first })
        let deadline = ContinuousClock.now.advanced(by: .seconds(60))
        while watch.deliveredThrough < compacted, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(watch.deliveredThrough >= compacted, "no progress notification reached the watch")
        try await cluster.run(["stop-member", "1"])  // the watch's connection ends; it reconnects to member 2
        _ = try await quiet.commit(KeyValueTransaction(writes: [.put([2], [2])]))
        do {
            let next = try await iterator.next()
            #expect(next?.key == [2], "the watch delivered \(String(describing: next)) instead of the put of [2]")
        } catch {
            Issue.record("the caught-up watch ended with \(error) after its member stopped")
        }
        try await quiet.close()
        try await busy.close()
    }
}

@Suite(
    "etcd: a quiet watch stays open while its member answers",
    .enabled(if: EtcdTestCluster.isConfigured, EtcdTestCluster.skipReason), .timeLimit(.minutes(3)))
struct EtcdWatchIdleTests {
    /// No progress notification reaches the watch (etcd's interval is an hour here); its idle timeout is 1 s. Other
    /// tenants write and the cluster is compacted past the watch's last change. The watch must still deliver the
    /// next change: a reopen from its last change would be refused as compacted.
    @Test("a quiet watch survives idle timeouts after a compaction without a progress notification")
    func quietWatchSurvivesIdleTimeoutsAfterCompaction() async throws {
        let cluster = try await PrivateEtcdCluster.start(label: "idle", progressNotifyInterval: "1h")
        do {
            try await quietWatch(on: cluster)
        } catch {
            Issue.record("\(error)")
        }
        try await cluster.stop()
    }

    private func quietWatch(on cluster: PrivateEtcdCluster) async throws {
        var configuration = try EtcdTestCluster.configuration(
            namespace: EtcdTestCluster.uniqueNamespace("idle-quiet"), endpoints: cluster.endpoints)
        configuration.watchIdleTimeout = .seconds(1)
        let quiet = try EtcdKeyValueStore(configuration: configuration)
        let busy = try EtcdTestCluster.makeStore(
            namespace: EtcdTestCluster.uniqueNamespace("idle-busy"), endpoints: cluster.endpoints)
        let start = try await quiet.currentRevision()
        var iterator = quiet.changes(after: start, prefix: []).makeAsyncIterator()
        _ = try await quiet.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        #expect(try await iterator.next()?.key == [1])  // live and caught up
        let watch = try #require(quiet.state.withLock { $0.watchers.values.first })
        for index in 0..<3 { _ = try await busy.commit(KeyValueTransaction(writes: [.put([1], [UInt8(index)])])) }
        let compacted = try await compactToCurrentRevision(busy)
        // Two silences after the compaction (bounded: the watch may also end, which the read below reports).
        let checked = watch.idleCheckCount
        let deadline = ContinuousClock.now.advanced(by: .seconds(60))
        while watch.idleCheckCount < checked + 2, ContinuousClock.now < deadline,
            quiet.state.withLock({ !$0.watchers.isEmpty })
        {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(watch.deliveredThrough < compacted, "a progress notification came, so this test proves nothing")
        _ = try await quiet.commit(KeyValueTransaction(writes: [.put([2], [2])]))
        do {
            let next = try await iterator.next()
            #expect(next?.key == [2], "the watch delivered \(String(describing: next)) instead of the put of [2]")
        } catch {
            Issue.record("the quiet watch ended with \(error) after \(watch.idleCheckCount) idle checks")
        }
        #expect(quiet.transport.failoverCount == 0, "a quiet watch's silence moved the client off its member")
        try await quiet.close()
        try await busy.close()
    }
}
