// The etcd client's HTTP response reader, against canned answers over a socket pair (no cluster needed): what it reads,
// and when a connection may carry another request. A connection that went back to the pool with an answer's tail
// still unread would hand that tail to the next request, so every doubtful case must say "not reusable".

@testable import EventStoreKV
import Foundation
import Testing
#if canImport(Glibc)
    import Glibc
#endif

@Suite("etcd: HTTP responses and kept-alive connections")
struct EtcdHTTPReaderTests {
    /// A connection whose server side is written by the test.
    struct Pair {
        let client: EtcdHTTPConnection
        let server: Int32

        init() throws {
            var fds: [Int32] = [0, 0]
            guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else {
                throw KeyValueStoreError.unavailable("socketpair failed")
            }
            _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
            client = EtcdHTTPConnection(descriptor: fds[0])
            server = fds[1]
        }

        func answer(_ text: String) {
            let bytes = Array(text.utf8)
            _ = bytes.withUnsafeBytes { send(server, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }

        func closeServer() { Glibc.close(server) }

        /// Reads one response: status, body and whether the connection could be reused.
        func read() throws -> (status: Int, body: String, reusable: Bool) {
            var reader = EtcdHTTPResponseReader(
                connection: client, deadline: ContinuousClock.now.advanced(by: .seconds(5)))
            try reader.readHead()
            var body: [UInt8] = []
            try reader.readBody { body += $0 }
            return (reader.status, String(decoding: body, as: UTF8.self), reader.connectionIsReusable)
        }
    }

    @Test("a Content-Length answer is read whole and leaves the connection reusable")
    func contentLength() throws {
        let pair = try Pair()
        defer { pair.client.close(); pair.closeServer() }
        pair.answer("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length:  7 \r\n\r\n{\"a\":1}")
        let answer = try pair.read()
        #expect(answer.status == 200)
        #expect(answer.body == "{\"a\":1}")
        #expect(answer.reusable)
        #expect(pair.client.isIdleAndOpen())
    }

    @Test("a chunked answer with trailers is reassembled and leaves the connection reusable")
    func chunked() throws {
        let pair = try Pair()
        defer { pair.client.close(); pair.closeServer() }
        pair.answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\nTrailer: t\r\n\r\n")
        let answer = try pair.read()
        #expect(answer.body == "abcdefg")
        #expect(answer.reusable)
    }

    @Test("Connection: close, HTTP/1.0 or bytes after the answer: never reused", arguments: [
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
    ])
    func notReusable(_ text: String) throws {
        let pair = try Pair()
        defer { pair.client.close(); pair.closeServer() }
        pair.answer(text)
        let answer = try pair.read()
        #expect(answer.body == "ok")
        #expect(!answer.reusable)
    }

    @Test("an answer without a length is read to the end of the stream and never reused")
    func readToEnd() throws {
        let pair = try Pair()
        defer { pair.client.close() }
        pair.answer("HTTP/1.1 200 OK\r\n\r\nuntil the end")
        pair.closeServer()
        let answer = try pair.read()
        #expect(answer.body == "until the end")
        #expect(!answer.reusable)
    }

    @Test("an idle connection the server closed, or that has unasked bytes, is not handed out")
    func idleConnectionChecks() throws {
        let unasked = try Pair()
        defer { unasked.client.close(); unasked.closeServer() }
        #expect(unasked.client.isIdleAndOpen())
        unasked.answer("HTTP/1.1 408 Request Timeout\r\n\r\n")
        #expect(!unasked.client.isIdleAndOpen())

        let closed = try Pair()
        defer { closed.client.close() }
        closed.closeServer()
        #expect(!closed.client.isIdleAndOpen())
    }

    @Test("the pool hands out only live connections and keeps none once closed")
    func poolDropsDeadConnections() throws {
        let pool = EtcdConnectionPool()
        let url = try #require(URL(string: "http://127.0.0.1:1"))
        let live = try Pair()
        let dead = try Pair()
        defer { live.closeServer() }
        pool.checkIn(live.client, for: url)
        pool.checkIn(dead.client, for: url)
        dead.closeServer()
        // The dead one was checked in last, so it is tried first, found closed and dropped.
        let handedOut = pool.checkOut(for: url)
        #expect(handedOut === live.client)
        #expect(pool.checkOut(for: url) == nil)
        pool.checkIn(live.client, for: url)
        pool.close()
        #expect(pool.idleConnections == 0)
        pool.checkIn(live.client, for: url)
        #expect(pool.idleConnections == 0)
    }
}
