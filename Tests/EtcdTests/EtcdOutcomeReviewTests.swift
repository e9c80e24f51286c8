// The etcd backend against fake members on loopback (no cluster): a commit whose outcome cannot be resolved says so,
// a failed lease grant is a contract error, and cancelling a commit before its Txn is sent ends it.
import EventStore
@testable import EventStoreKV
import Foundation
import Testing
#if canImport(Glibc)
    import Glibc
#endif

private func loopbackURL(_ address: sockaddr_in) throws -> URL {
    try #require(URL(string: "http://127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))"))
}

/// A port on 127.0.0.1 with nothing listening: connections are refused at once.
private func refusingURL() throws -> URL {
    let (fd, address) = try loopbackSocket(listening: nil)
    defer { Glibc.close(fd) }
    return try loopbackURL(address)
}

/// A listening socket on 127.0.0.1 whose accept queue is full, so that a further connect() waits (the kernel drops
/// its SYNs), as for a member whose host is down. Returns the descriptors to close and the URL.
private func saturatedListener() async throws -> (fds: [Int32], url: URL) {
    let (fd, address) = try loopbackSocket(listening: 0)
    var fds = [fd]
    for _ in 0..<4 {
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        var target = address
        _ = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        fds.append(client)
    }
    try await Task.sleep(for: .milliseconds(200))  // lets loopback's handshakes fill the queue (microseconds)
    return (fds, try loopbackURL(address))
}

/// Receives one whole request (head and Content-Length body) from `client` into `data` and removes it from the front
/// of `data`; returns its path, or nil when the connection ends first.
private func receiveRequest(_ client: Int32, _ data: inout [UInt8]) -> String? {
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let text = String(decoding: data, as: UTF8.self)
        if let end = text.range(of: "\r\n\r\n") {
            let head = String(text[..<end.lowerBound])
            let length = head.lowercased().split(separator: "\r\n").first { $0.hasPrefix("content-length:") }
                .flatMap { Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) } ?? 0
            let headBytes = text[..<end.upperBound].utf8.count
            if data.count >= headBytes + length {
                data.removeFirst(headBytes + length)
                return head.split(separator: " ").dropFirst().first.map(String.init) ?? ""
            }
        }
        let count = recv(client, &buffer, buffer.count, 0)
        if count <= 0 { return nil }
        data += buffer[0..<count]
    }
}

/// A fake member on 127.0.0.1 that reads each request whole and then closes the connection without answering, as a
/// member does that crashes after taking a request. Before closing the connection of the `holdFirst`-th request
/// (1-based; 0 = none) it signals `received` and waits for `release` (or `stop`).
private final class DroppingMember: Sendable {
    let url: URL
    let received = DispatchSemaphore(value: 0)
    let release = DispatchSemaphore(value: 0)
    private let fd: Int32

    init(holdFirst: Int) throws {
        let (fd, address) = try loopbackSocket(listening: 16)
        self.fd = fd
        url = try loopbackURL(address)
        let received = self.received, release = self.release
        Thread.detachNewThread {
            var count = 0
            while case let client = accept(fd, nil, nil), client >= 0 {
                count += 1
                var data: [UInt8] = []
                _ = receiveRequest(client, &data)
                if count == holdFirst {
                    received.signal()
                    release.wait()
                }
                Glibc.close(client)
            }
            Glibc.close(fd)
        }
    }

    /// Ends the accept loop (which then closes the socket) and lets a held connection go.
    func stop() {
        _ = shutdown(fd, Int32(SHUT_RDWR))
        release.signal()
    }
}

/// A fake gateway member on 127.0.0.1 that answers each request by its path, keeping connections alive.
private final class RoutingMember: Sendable {
    let url: URL
    private let fd: Int32

    init(_ route: @escaping @Sendable (String) -> (status: Int, body: String)) throws {
        let (fd, address) = try loopbackSocket(listening: 16)
        self.fd = fd
        url = try loopbackURL(address)
        Thread.detachNewThread {
            while case let client = accept(fd, nil, nil), client >= 0 {
                Thread.detachNewThread {
                    defer { Glibc.close(client) }
                    var data: [UInt8] = []
                    while let path = receiveRequest(client, &data) {
                        let (status, body) = route(path)
                        let answer = "HTTP/1.1 \(status) X\r\nContent-Type: application/json\r\n"
                            + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
                        _ = Array(answer.utf8).withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    }
                }
            }
            Glibc.close(fd)
        }
    }

    /// Ends the accept loop, which then closes the socket.
    func stop() { _ = shutdown(fd, Int32(SHUT_RDWR)) }
}

@Suite("etcd: a commit's unknown outcome, lease-grant failure and cancellation before sending (no cluster)")
struct EtcdOutcomeReviewTests {
    /// EtcdCommit.swift: "Cancellation is honoured until the Txn is sent (nothing is written then: CancellationError)".
    /// A commit whose member does not complete the TCP handshake has sent nothing, so cancelling it must wake it.
    @Test("cancelling a commit whose Txn is still connecting ends it promptly with CancellationError")
    func cancelCommitWhileConnecting() async throws {
        let (fds, url) = try await saturatedListener()
        defer { for fd in fds { Glibc.close(fd) } }
        let store = try EtcdKeyValueStore(configuration: EtcdConfiguration(
            endpoints: [url], requestTimeout: .seconds(40), retryBudget: .seconds(40)))
        let commit = Task { try await store.commit(KeyValueTransaction(writes: [.put([1], [1])])) }
        try await Task.sleep(for: .milliseconds(300))  // the commit is connecting now (it ends the same way if not)
        let cancelled = ContinuousClock.now
        commit.cancel()
        let result = await commit.result
        let elapsed = ContinuousClock.now - cancelled
        // Far from the 40 s the connect waits out when cancellation cannot wake it.
        #expect(elapsed < .seconds(20), "the cancelled commit returned \(elapsed) after its cancellation: \(result)")
        if case .failure(let error) = result {
            #expect(error is CancellationError, "nothing was sent, so the commit should end with CancellationError, not \(error)")
        } else {
            Issue.record("a commit to an unreachable member succeeded")
        }
        try await store.close()
    }

    /// docs/ETCD.md: "If the outcome still cannot be known, the caller gets `unavailable("the outcome of a transaction
    /// is unknown ...")`." That holds when the read-back of a lost answer cannot reach any member either: the read's
    /// own "no etcd member answered" would not say that the Txn was sent and may have been applied.
    @Test("a lost commit answer whose read-back also fails says the outcome is unknown")
    func lostAnswerAndFailedReadBackSaysUnknown() async throws {
        let member = try DroppingMember(holdFirst: 0)
        defer { member.stop() }
        let store = try EtcdKeyValueStore(configuration: EtcdConfiguration(
            endpoints: [member.url], requestTimeout: .seconds(5), retryBudget: .milliseconds(500)))
        do {
            let revision = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
            Issue.record("a commit no member answered was acknowledged at revision \(revision)")
        } catch KeyValueStoreError.unavailable(let detail) {
            #expect(detail.contains("the outcome of a transaction is unknown"),
                    "the Txn was sent and may have committed, but the caller was told: \(detail)")
        }
        try await store.close()
    }

    /// The same when the store is closed while the answer of a sent Txn is awaited: the closed store refuses the
    /// read-back, and `closed` would say that nothing was sent.
    @Test("a commit whose answer is lost while the store closes says the outcome is unknown, not closed")
    func lostAnswerDuringCloseSaysUnknown() async throws {
        let member = try DroppingMember(holdFirst: 1)
        defer { member.stop() }
        let store = try EtcdKeyValueStore(configuration: EtcdConfiguration(
            endpoints: [member.url], requestTimeout: .seconds(30), retryBudget: .seconds(1)))
        let commit = Task { try await store.commit(KeyValueTransaction(writes: [.put([1], [1])])) }
        // The member has the whole Txn now (or the commit never reached it: the test fails below rather than hang).
        let arrived = await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: member.received.wait(timeout: .now() + 30)) }
        }
        #expect(arrived == .success, "the fake member never received the Txn")
        try await store.close()
        member.release.signal()  // the member drops the connection: the answer is lost
        switch await commit.result {
        case .success(let revision):
            Issue.record("a commit no member answered was acknowledged at revision \(revision)")
        case .failure(KeyValueStoreError.unavailable(let detail)):
            #expect(detail.contains("the outcome of a transaction is unknown"), "the caller was told: \(detail)")
        case .failure(let error):
            Issue.record("the Txn was sent and may have committed, but the caller was told: \(error)")
        }
    }

    /// Every other failure of `commit` is a `KeyValueStoreError` (EtcdKeyValueStore.contractError); so is a failed
    /// lease grant of a TTL put, which comes before the Txn is sent, so nothing was written and the outcome is known.
    @Test("a TTL put's commit on an unreachable cluster fails with a KeyValueStoreError, not the transport's own error")
    func ttlCommitOnUnreachableClusterIsTyped() async throws {
        let store = try EtcdKeyValueStore(configuration: EtcdConfiguration(
            endpoints: [try refusingURL()], retryBudget: .milliseconds(300)))
        do {
            _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1], ttl: .seconds(10))]))
            Issue.record("a commit on an unreachable cluster succeeded")
        } catch {
            #expect(error is KeyValueStoreError, "commit threw \(type(of: error)): \(error)")
            #expect(!"\(error)".contains("outcome"), "nothing was sent, yet: \(error)")
        }
        try await store.close()
    }

    /// The same through the event store, on a cluster whose database is full (etcd's NOSPACE alarm: reads work, a
    /// lease grant is refused with RESOURCE_EXHAUSTED "mvcc: database space exceeded"), as etcd's gateway answers.
    /// Opening a session puts a TTL key, so its lease grant fails.
    @Test("opening a session on a full cluster fails with an EventStoreError")
    func openSessionOnFullClusterIsTyped() async throws {
        let member = try RoutingMember { path in
            switch path {
            case "/v3/kv/range": (200, #"{"header":{"revision":"5"}}"#)
            // The open reads the lease key and the stream head in one read-only Txn: neither exists.
            case "/v3/kv/txn":
                (200, #"{"header":{"revision":"5"},"succeeded":true,"responses":[{"response_range":{}},{"response_range":{}}]}"#)
            case "/v3/lease/grant":
                (500, #"{"error":"etcdserver: mvcc: database space exceeded","code":8,"message":"etcdserver: mvcc: database space exceeded"}"#)
            default: (404, #"{"error":"unexpected","code":12,"message":"unexpected"}"#)
            }
        }
        defer { member.stop() }
        let store = KeyValueEventStore(backend: try EtcdKeyValueStore(configuration: EtcdConfiguration(
            endpoints: [member.url], retryBudget: .milliseconds(300))))
        do {
            let session = try await store.openSession(
                on: try StreamName("orders-1"), sessionTimeout: .seconds(10), openTimeout: .zero)
            Issue.record("a session was opened on a full cluster: \(session.id)")
        } catch {
            #expect(error is EventStoreError, "openSession threw \(type(of: error)): \(error)")
            #expect("\(error)".contains("database space exceeded"), "etcd's reason is lost: \(error)")
        }
        try await store.close()
    }
}
