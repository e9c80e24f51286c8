// close() of an etcd store must end the requests in flight, as it ends its watches (EtcdWatchConnectCloseTests):
// EtcdTransport.invalidate() only refused new requests, so a read or a commit waiting on a member that took its
// request and never answered, or on a connect to a dead host, kept its caller, its Dispatch thread and its socket
// for up to requestTimeout after close() returned (found by a review, twenty-fifth session). The members here are
// fakes on loopback; requestTimeout is 90 s, so an end within 20 s of close() can only be close()'s doing.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

#if canImport(Glibc)
    import Glibc
#endif

@Suite("etcd: close() ends the requests in flight", .timeLimit(.minutes(3)))
struct EtcdCloseInFlightTests {
    private static func store(_ url: String) throws -> EtcdKeyValueStore {
        try EtcdKeyValueStore(configuration: EtcdConfiguration(
            endpoints: [try #require(URL(string: url))], requestTimeout: .seconds(90), retryBudget: .seconds(90)))
    }

    /// A member that takes every request and never answers; `received` counts the requests whose path contains
    /// `path`.
    private static func hungMember(counting path: String) throws -> (FakeGatewayMember, Locked<Int>) {
        let received = Locked(0)
        let member = try FakeGatewayMember { requestPath, _ in
            if requestPath.contains(path) { received.withLock { $0 += 1 } }
            return .hold
        }
        return (member, received)
    }

    /// Waits (a hang guard only: requests reach a loopback member in milliseconds) until `count` is positive.
    private static func awaitArrival(_ count: Locked<Int>) async throws {
        let guardDeadline = ContinuousClock.now.advanced(by: .seconds(30))
        while count.withLock({ $0 }) == 0, ContinuousClock.now < guardDeadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(count.withLock { $0 } > 0, "the request never reached the member")
    }

    @Test("closing the store ends a read waiting on a hung member with closed, not requestTimeout later")
    func closeEndsReadInFlight() async throws {
        let (member, received) = try Self.hungMember(counting: "kv/range")
        defer { member.stop() }
        let store = try Self.store(member.url)
        let read = Task { try await store.get([1]) }
        try await Self.awaitArrival(received)
        let closing = ContinuousClock.now
        try await store.close()
        let closed = ContinuousClock.now - closing
        let result = await read.result
        let ended = ContinuousClock.now - closing
        #expect(closed < .seconds(20), "close() took \(closed)")
        #expect(ended < .seconds(20), "the read ended \(ended) after close() began: \(result)")
        guard case .failure(let error) = result else {
            Issue.record("a read no member answered returned \(result)")
            return
        }
        #expect(error as? KeyValueStoreError == .closed, "\(error)")
    }

    @Test("closing the store ends a commit still connecting (nothing sent) with closed")
    func closeEndsCommitConnecting() async throws {
        // A full accept queue: the kernel drops further SYNs, so connect() waits, as for a dead host.
        let (address, fds) = try fullAcceptQueue()
        defer { for fd in fds { Glibc.close(fd) } }
        let store = try Self.store("http://127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))")
        let commit = Task { try await store.commit(KeyValueTransaction(writes: [.put([1], [1])])) }
        // Not a race to win: a commit that had not started connecting yet ends with closed as well.
        try await Task.sleep(for: .milliseconds(300))
        let closing = ContinuousClock.now
        try await store.close()
        let result = await commit.result
        let ended = ContinuousClock.now - closing
        #expect(ended < .seconds(20), "the commit ended \(ended) after close() began: \(result)")
        guard case .failure(let error) = result else {
            Issue.record("a commit no member took was acknowledged: \(result)")
            return
        }
        #expect(error as? KeyValueStoreError == .closed, "nothing was sent, so closed, not \(error)")
    }

    @Test("closing the store ends a sent commit awaiting its answer as an unknown outcome, never as failed")
    func closeEndsSentCommit() async throws {
        let (member, received) = try Self.hungMember(counting: "kv/txn")
        defer { member.stop() }
        let store = try Self.store(member.url)
        let commit = Task { try await store.commit(KeyValueTransaction(writes: [.put([1], [1])])) }
        try await Self.awaitArrival(received)
        let closing = ContinuousClock.now
        try await store.close()
        let result = await commit.result
        let ended = ContinuousClock.now - closing
        #expect(ended < .seconds(20), "the commit ended \(ended) after close() began: \(result)")
        guard case .failure(KeyValueStoreError.unavailable(let detail)) = result else {
            Issue.record("a sent commit whose answer never came must be an unknown outcome, not \(result)")
            return
        }
        #expect(detail.contains("the outcome of a transaction is unknown"), "\(detail)")
    }
}
