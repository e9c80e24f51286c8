// Review of the etcd backend: watch vs compaction, wire-parser traps, silent drops, cancellation while connecting.
import EventStore
@testable import EventStoreKV
import Foundation
import Testing
#if canImport(Glibc)
    import Glibc
#endif

private struct CompactionRequest: Encodable { var revision: String; var physical: Bool }

/// Compacts the cluster up to its current revision, as `etcdctl compact` does, and returns that revision.
@discardableResult
func compactToCurrentRevision(_ store: EtcdKeyValueStore) async throws -> UInt64 {
    let now = try await store.transport.call("v3/kv/range", body: EtcdWire.RangeRequest(
        key: EtcdWire.encode([0]), rangeEnd: EtcdWire.encode([0]), countOnly: true), idempotent: true,
        as: EtcdWire.RangeResponse.self)
    let revision = try EtcdWire.revision(now.header?.revision, field: "header revision")
    _ = try await store.transport.call("v3/kv/compaction", body: CompactionRequest(
        revision: String(revision), physical: true), idempotent: true, as: EtcdWire.Empty.self)
    return revision
}

/// A listening socket on 127.0.0.1 (backlog `backlog`) and its port.
private func listener(backlog: Int32) throws -> (fd: Int32, port: Int, address: sockaddr_in) {
    let (fd, address) = try loopbackSocket(listening: backlog)
    return (fd, Int(UInt16(bigEndian: address.sin_port)), address)
}

/// Answers every connection with `answer`, keeping it open.
private func cannedServer(_ answer: String) throws -> (url: URL, stop: @Sendable () -> Void) {
    let (fd, port, _) = try listener(backlog: 16)
    let bytes = Array(answer.utf8)
    Thread.detachNewThread {
        while case let client = accept(fd, nil, nil), client >= 0 {
            var request = [UInt8](repeating: 0, count: 65_536)
            _ = recv(client, &request, request.count, 0)
            _ = bytes.withUnsafeBytes { send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
    }
    return (URL(string: "http://127.0.0.1:\(port)")!, { _ = shutdown(fd, Int32(SHUT_RDWR)) })
}

@Suite("etcd: review (cluster)", .enabled(if: EtcdTestCluster.isConfigured, EtcdTestCluster.skipReason), .serialized)
struct EtcdReviewClusterTests {
    @Test("a watch from a quiet namespace's currentRevision survives another tenant's writes and a compaction")
    func quietNamespaceAfterCompaction() async throws {
        let quiet = try EtcdTestCluster.makeStore(namespace: EtcdTestCluster.uniqueNamespace("quiet"))
        let busy = try EtcdTestCluster.makeStore(namespace: EtcdTestCluster.uniqueNamespace("busy"))
        _ = try await quiet.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        for index in 0..<3 { _ = try await busy.commit(KeyValueTransaction(writes: [.put([1], [UInt8(index)])])) }
        try await compactToCurrentRevision(busy)
        let after = try await quiet.currentRevision()
        let writer = Task {
            try await Task.sleep(for: .milliseconds(500))
            return try await quiet.commit(KeyValueTransaction(writes: [.put([2], [2])]))
        }
        do {
            var iterator = quiet.changes(after: after, prefix: []).makeAsyncIterator()
            #expect(try await iterator.next()?.key == [2])
        } catch { Issue.record("watching after currentRevision() (\(after)) failed: \(error)") }
        _ = try await writer.value
        try await quiet.close(); try await busy.close()
    }

    @Test("a quiet namespace's live doorbell survives a compaction and idle checks without spinning")
    func doorbellSurvivesIdleReconnect() async throws {
        var configuration = try EtcdTestCluster.configuration(namespace: EtcdTestCluster.uniqueNamespace("idle"))
        configuration.watchIdleTimeout = .seconds(1)
        let backend = try EtcdKeyValueStore(configuration: configuration)
        let store = KeyValueEventStore(backend: backend)
        let busy = try EtcdTestCluster.makeStore(namespace: EtcdTestCluster.uniqueNamespace("idle-busy"))
        let stream = try StreamName("quiet")
        _ = try await store.append([EventData(type: "T", data: Data([1]))], to: stream, expectedVersion: .noStream)
        let rings = try await store.logNotifications()
        let count = Locked(0)
        let counter = Task { for try await _ in rings { count.withLock { $0 += 1 } } }
        try await Task.sleep(for: .milliseconds(200))
        for index in 0..<3 { _ = try await busy.commit(KeyValueTransaction(writes: [.put([1], [UInt8(index)])])) }
        try await compactToCurrentRevision(busy)
        try await Task.sleep(for: .seconds(3))  // the first idle check comes after 1 s
        let quiet = count.withLock { $0 }
        #expect(quiet <= 5, "the doorbell rang \(quiet) times in 3 s without an append")
        _ = try await store.append([EventData(type: "T", data: Data([2]))], to: stream, expectedVersion: .any)
        let deadline = ContinuousClock.now.advanced(by: .seconds(5))
        while count.withLock({ $0 }) == quiet, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(count.withLock { $0 } > quiet, "the doorbell did not ring for an append after the idle checks")
        counter.cancel()
        try await store.close(); try await busy.close()
    }

    @Test("a new store's live doorbell does not ring without appends on a compacted cluster")
    func newStoreDoorbellOnCompactedCluster() async throws {
        let backend = try EtcdTestCluster.makeStore(namespace: EtcdTestCluster.uniqueNamespace("new"))
        let store = KeyValueEventStore(backend: backend)
        try await compactToCurrentRevision(backend)
        let rings = try await store.logNotifications()
        let count = Locked(0)
        let counter = Task { for try await _ in rings { count.withLock { $0 += 1 } } }
        try await Task.sleep(for: .seconds(2))
        counter.cancel()
        let rang = count.withLock { $0 }
        #expect(rang <= 1, "the doorbell of an empty store rang \(rang) times in 2 s without an append")
        try await store.close()
    }
}

@Suite("etcd: review (no cluster)")
struct EtcdReviewParserTests {
    private func readAnswer(_ text: String) throws -> (any Error)? {
        let pair = try EtcdHTTPReaderTests.Pair()
        defer { pair.client.close(); pair.closeServer() }
        pair.answer(text)
        do { _ = try pair.read(); return nil } catch { return error }
    }

    @Test("an empty chunk-size line is a typed error, not a trap") func emptyChunkSize() throws {
        #expect(try readAnswer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n") is EtcdCallError)
    }

    @Test("a negative chunk size is a typed error, not a trap") func negativeChunkSize() throws {
        #expect(try readAnswer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nab\r\n0\r\n\r\n") is EtcdCallError)
    }

    @Test("a negative Content-Length is a typed error, not a trap") func negativeContentLength() throws {
        #expect(try readAnswer("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n") is EtcdCallError)
    }

    @Test("changes(after: .max) does not trap") func changesAfterMaximumRevision() async throws {
        let store = try EtcdKeyValueStore(endpoints: [try #require(URL(string: "http://127.0.0.1:1"))])
        _ = store.changes(after: .max, prefix: [1])
        try await store.close()
    }

    @Test("a watch event the client cannot decode ends the stream with an error, it is not skipped")
    func malformedWatchEventIsNotSkipped() async throws {
        let lines = [
            #"{"result":{"header":{"revision":"5"},"created":true}}"#,
            #"{"result":{"header":{"revision":"6"},"events":[{"kv":{"key":"%%%","mod_revision":"6","version":"1"}}]}}"#,
            #"{"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"AQ==","mod_revision":"7","version":"1"}}]}}"#,
        ]
        let server = try cannedServer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + lines.map { String($0.utf8.count + 1, radix: 16) + "\r\n" + $0 + "\n\r\n" }.joined())
        defer { server.stop() }
        let store = try EtcdKeyValueStore(endpoints: [server.url])
        var iterator = store.changes(after: 5, prefix: []).makeAsyncIterator()
        if let first = try? await iterator.next() {
            Issue.record("the first change delivered was \(first); the change at revision 6 was skipped silently")
        }
        try await store.close()
    }

    @Test("a commit answer without a revision is an error, not revision 0")
    func commitAnswerWithoutRevision() async throws {
        let body = #"{"header":{},"succeeded":true,"responses":[{"response_put":{}}]}"#
        let server = try cannedServer("HTTP/1.1 200 OK\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)")
        defer { server.stop() }
        let store = try EtcdKeyValueStore(endpoints: [server.url])
        if let revision = try? await store.commit(KeyValueTransaction(writes: [.put([1], [1])])) {
            Issue.record("the commit was acknowledged at revision \(revision)")
        }
        try await store.close()
    }

    @Test("cancelling a read that is still connecting ends it promptly, not at the request timeout")
    func cancelWhileConnecting() async throws {
        // A full accept queue: the kernel drops further SYNs, so connect() waits, as for a dead host.
        let (address, fds) = try fullAcceptQueue()
        defer { for fd in fds { Glibc.close(fd) } }
        let port = Int(UInt16(bigEndian: address.sin_port))
        try await Task.sleep(for: .milliseconds(200))
        let store = try EtcdKeyValueStore(configuration: EtcdConfiguration(
            endpoints: [try #require(URL(string: "http://127.0.0.1:\(port)"))], requestTimeout: .seconds(120),
            retryBudget: .seconds(120)))
        let read = Task { try await store.get([1]) }
        try await Task.sleep(for: .milliseconds(300))
        // Far from the 120 s a connect waits out when cancellation cannot wake it, and far above the seconds a full
        // parallel test run can delay a task.
        let cancelled = ContinuousClock.now
        read.cancel()
        _ = await read.result
        let elapsed = ContinuousClock.now - cancelled
        #expect(elapsed < .seconds(60), "the cancelled read returned \(elapsed) after its cancellation")
        try await store.close()
    }
}
