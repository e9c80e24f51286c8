// Fault: one member of a 3-member cluster fails during concurrent appends: it stops (its connections are refused or
// reset), or it hangs (SIGSTOP: the kernel still accepts connections, nothing answers, so only timeouts get the client
// out). Runs on a private cluster (its own ports and data directories, started with scripts/etcd-cluster.sh), so that
// the outage cannot disturb other tests.
//
// Invariants: the cluster script runs as a child process whose end is awaited on a thread of its own, never on the
// cooperative pool; the private cluster is stopped whatever the outcome; the test asserts what the issue promises
// (every acknowledged append is readable at its acknowledged position, positions are gapless, writes continued after
// the fault, the client moved off the failed member), never how long anything took.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

/// What the writers saw, shared between their tasks.
final class Tally: Sendable {
    let acknowledged = Locked<[UUID: UInt64]>([:])
    /// Appends both sent and acknowledged after the member had failed: only the other members could take them.
    let afterStop = Locked(0)
    let stopped = Locked(false)
}

/// How the member fails.
enum MemberFault: String, Sendable, CaseIterable, CustomTestStringConvertible {
    /// The process ends: connections to it are refused.
    case stop
    /// The process hangs: connections are accepted by the kernel but never answered.
    case hang

    var testDescription: String { rawValue }

    /// The cluster script's command that injects the fault into member 1.
    var command: [String] { self == .stop ? ["stop-member", "1"] : ["pause-member", "1"] }
}

@Suite(
    "etcd: a member fails",
    .enabled(if: EtcdTestCluster.isConfigured, EtcdTestCluster.skipReason),
    // One private cluster at a time: each is three more etcd processes on a 2-core machine.
    .serialized,
    .timeLimit(.minutes(2)))
struct EtcdFaultTests {
    static let writers = 4
    /// Appends acknowledged before the fault, and appends sent after it that must be acknowledged.
    static let appendsBeforeStop = 20
    static let appendsAfterStop = 20
    /// A bound on each writer's appends, should the writes after the fault never be acknowledged.
    static let maximumAppendsPerWriter = 200

    @Test("every acknowledged append survives, writes continue and the client fails over", arguments: MemberFault.allCases)
    func memberFailsDuringAppends(_ fault: MemberFault) async throws {
        let cluster = try await PrivateEtcdCluster.start(label: "fault")
        do {
            try await run(fault, on: cluster)
        } catch {
            try? await cluster.stop()
            throw error
        }
        try await cluster.stop()
    }

    /// A commit whose Txn had been sent was cut short by cancelling its task: the connection was aborted and the
    /// caller got CancellationError whether or not a member had already taken the Txn into its log (here the abort
    /// reached the hung member first, so it dropped the Txn; one that had read it would apply it). A caller told
    /// "cancelled" takes it for "not written". Once sent, a commit now runs to its answer: the caller learns what
    /// happened, as with the page-file engine.
    @Test("a commit cancelled after its Txn was sent reports its outcome, not a cancellation")
    func cancelledAfterSending() async throws {
        let cluster = try await PrivateEtcdCluster.start(label: "cancel")
        do {
            try await cancelAfterSending(on: cluster)
        } catch {
            try? await cluster.run(["resume-member", "1"])
            try? await cluster.stop()
            throw error
        }
        try await cluster.stop()
    }

    private func cancelAfterSending(on cluster: PrivateEtcdCluster) async throws {
        var configuration = try EtcdTestCluster.configuration(
            namespace: EtcdTestCluster.uniqueNamespace("cancel"), endpoints: cluster.endpoints)
        configuration.requestTimeout = .seconds(20)
        let backend = try EtcdKeyValueStore(configuration: configuration)
        // A first commit leaves a kept-alive connection to member 1, the one the client prefers.
        _ = try await backend.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        #expect(backend.transport.currentEndpoint == 0)

        // Member 1 hangs: the kernel still takes the Txn's bytes, nothing answers yet.
        try await cluster.run(["pause-member", "1"])
        let commit = Task { try await backend.commit(KeyValueTransaction(writes: [.put([2], [2])])) }
        try await Task.sleep(for: .milliseconds(300))
        commit.cancel()
        try await Task.sleep(for: .milliseconds(200))
        // Resumed well within the election timeout, member 1 applies the Txn it was sent and answers.
        try await cluster.run(["resume-member", "1"])
        let outcome = await commit.result
        let stored = try await backend.get([2])
        switch outcome {
        case .success(let revision):
            #expect(stored?.value == [2])
            #expect(stored?.modRevision == revision)
        case .failure(let error):
            Issue.record("the commit was \(stored == nil ? "not " : "")applied, but its caller got: \(error)")
        }
        try await backend.close()
    }

    private func run(_ fault: MemberFault, on cluster: PrivateEtcdCluster) async throws {
        var configuration = try EtcdTestCluster.configuration(
            namespace: EtcdTestCluster.uniqueNamespace("fault-\(fault)"), endpoints: cluster.endpoints)
        // A hung member is left only when a request times out: keep that short so that the test stays short.
        configuration.requestTimeout = .seconds(1)
        let backend = try EtcdKeyValueStore(configuration: configuration)
        let store = KeyValueEventStore(backend: backend)
        let tally = Tally()

        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<Self.writers {
                group.addTask { try await Self.append(writer: writer, to: store, tally: tally) }
            }
            group.addTask {
                // Fail the member the client prefers (the first endpoint) once appends are flowing.
                while tally.acknowledged.withLock({ $0.count }) < Self.appendsBeforeStop {
                    try await Task.sleep(for: .milliseconds(10))
                }
                try await cluster.run(fault.command)
                tally.stopped.withLock { $0 = true }
            }
            try await group.waitForAll()
        }

        #expect(tally.stopped.withLock { $0 })
        #expect(tally.afterStop.withLock { $0 } >= Self.appendsAfterStop)
        // The first endpoint is gone or silent: the client must have moved to another member and stayed off it.
        #expect(backend.transport.failoverCount > 0)
        #expect(backend.transport.currentEndpoint != 0)
        let log = try await store.readAll(from: 1, limit: .max)
        let recorded = Dictionary(log.map { ($0.id, $0.position) }, uniquingKeysWith: { first, _ in first })
        let acknowledged = tally.acknowledged.withLock { $0 }
        for (id, position) in acknowledged { #expect(recorded[id] == position) }
        #expect(log.count == acknowledged.count)
        #expect(log.map(\.position) == Array(1...UInt64(max(1, log.count))))
        try await store.close()
    }

    /// One writer's appends to its own stream, each retried with the same event id until acknowledged, until enough
    /// appends sent after the stop have been acknowledged.
    private static func append(writer: Int, to store: KeyValueEventStore, tally: Tally) async throws {
        let stream = try StreamName("writer-\(writer)")
        for index in 0..<maximumAppendsPerWriter {
            if tally.afterStop.withLock({ $0 }) >= appendsAfterStop { return }
            let event = EventData(type: "Appended", data: Data("\(writer)-\(index)".utf8))
            // Same event id on retry: idempotent, so an append whose outcome is unknown is safe to re-send.
            var attempts = 0
            while true {
                let sentAfterStop = tally.stopped.withLock { $0 }
                do {
                    let result = try await store.append([event], to: stream, expectedVersion: .any)
                    tally.acknowledged.withLock { $0[event.id] = result.positions.lowerBound }
                    if sentAfterStop { tally.afterStop.withLock { $0 += 1 } }
                    break
                } catch {
                    attempts += 1
                    if attempts > 20 { throw error }
                    try await Task.sleep(for: .milliseconds(100))
                }
            }
        }
    }
}
