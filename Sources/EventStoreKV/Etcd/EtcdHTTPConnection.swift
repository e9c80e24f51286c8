// A minimal HTTP/1.1 client over one TCP connection per request, for etcd's JSON gateway. It replaces URLSession on
// Linux, whose FoundationNetworking traps ("Transfer completed, but there's no response", swift-corelibs-foundation
// issue 5285) when a connection drops right after a request was sent: exactly what a failing etcd member does.
//
// Invariants:
// - A failure before the request's first byte is written means nothing was sent (`unreachable`); any failure after
//   that may have reached the server (`outcomeUnknown`). Callers rely on this split to decide what may be retried.
// - Every blocking call waits in poll() with the remaining time of the request's deadline; `abort()` (cancellation)
//   shuts the socket down, which wakes any poll at once. Writes use MSG_NOSIGNAL, so a closed peer never raises
//   SIGPIPE.
// - The descriptor is guarded by a Mutex and closed exactly once.
// - Bodies are read by Content-Length, by chunked transfer encoding, or to end of stream (the request says
//   `Connection: close`).

import Foundation
import Synchronization
#if canImport(Glibc)
    import Glibc
#endif

final class EtcdHTTPConnection: Sendable {
    private let descriptor: Mutex<Int32>

    private init(_ fd: Int32) { descriptor = Mutex(fd) }

    /// Connects to `host:port` before `deadline`.
    static func open(host: String, port: Int, deadline: ContinuousClock.Instant) throws -> EtcdHTTPConnection {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let first = list else {
            throw EtcdCallError.unreachable("cannot resolve \(host)")
        }
        defer { freeaddrinfo(list) }
        var lastError = "no address"
        var current: UnsafeMutablePointer<addrinfo>? = first
        while let info = current {
            current = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { continue }
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            if connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 || errno == EINPROGRESS {
                let connection = EtcdHTTPConnection(fd)
                if let failure = connection.finishConnect(deadline: deadline) {
                    connection.close()
                    lastError = failure
                    continue
                }
                return connection
            }
            lastError = String(cString: strerror(errno))
            Glibc.close(fd)
        }
        throw EtcdCallError.unreachable("cannot connect to \(host):\(port): \(lastError)")
    }

    private func finishConnect(deadline: ContinuousClock.Instant) -> String? {
        guard (try? wait(for: Int16(POLLOUT), until: deadline, sent: false)) != nil else {
            return "connection timed out"
        }
        var error: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        let fd = descriptor.withLock { $0 }
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0, error == 0 else {
            return String(cString: strerror(error))
        }
        return nil
    }

    /// Waits until the socket is ready for `events`; `sent` says which error to report on failure.
    private func wait(for events: Int16, until deadline: ContinuousClock.Instant, sent: Bool) throws {
        while true {
            let fd = descriptor.withLock { $0 }
            guard fd >= 0 else { throw failure("the connection was closed", sent: sent) }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { throw failure("timed out", sent: sent) }
            let milliseconds = Int32(min(remaining.timeInterval * 1000 + 1, 60_000))
            var poller = pollfd(fd: fd, events: events, revents: 0)
            let ready = poll(&poller, 1, milliseconds)
            if ready > 0 { return }
            if ready < 0 && errno != EINTR { throw failure(String(cString: strerror(errno)), sent: sent) }
        }
    }

    private func failure(_ detail: String, sent: Bool) -> EtcdCallError {
        sent ? .outcomeUnknown(detail) : .unreachable(detail)
    }

    /// Writes all of `bytes`. A failure before the first byte left counts as not sent.
    func write(_ bytes: [UInt8], deadline: ContinuousClock.Instant) throws {
        var offset = 0
        while offset < bytes.count {
            try wait(for: Int16(POLLOUT), until: deadline, sent: offset > 0)
            let fd = descriptor.withLock { $0 }
            let written = bytes[offset...].withUnsafeBytes { raw in
                send(fd, raw.baseAddress, raw.count, Int32(MSG_NOSIGNAL))
            }
            if written > 0 {
                offset += written
            } else if written < 0 && errno != EAGAIN && errno != EINTR {
                throw failure(String(cString: strerror(errno)), sent: offset > 0)
            }
        }
    }

    /// Reads what is available (at least one byte), or returns an empty array at end of stream.
    func read(deadline: ContinuousClock.Instant) throws -> [UInt8] {
        while true {
            try wait(for: Int16(POLLIN), until: deadline, sent: true)
            let fd = descriptor.withLock { $0 }
            var buffer = [UInt8](repeating: 0, count: 65_536)
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count >= 0 { return Array(buffer[0..<count]) }
            if errno != EAGAIN && errno != EINTR { throw EtcdCallError.outcomeUnknown(String(cString: strerror(errno))) }
        }
    }

    /// Wakes any waiting call and makes further calls fail; safe from any thread.
    func abort() {
        descriptor.withLock { fd in
            if fd >= 0 { _ = shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }

    func close() {
        descriptor.withLock { fd in
            if fd >= 0 { Glibc.close(fd) }
            fd = -1
        }
    }
}

/// Reads one HTTP response from a connection: the head, then the body in pieces.
struct EtcdHTTPResponseReader {
    let connection: EtcdHTTPConnection
    var deadline: ContinuousClock.Instant
    /// For streams: every read may wait this long, instead of all reads sharing `deadline`.
    var idleTimeout: Duration?
    private var buffer: [UInt8] = []
    private(set) var status = 0
    private var contentLength: Int?
    private var chunked = false

    init(connection: EtcdHTTPConnection, deadline: ContinuousClock.Instant) {
        self.connection = connection
        self.deadline = deadline
    }

    private mutating func fill() throws -> Bool {
        if let idleTimeout { deadline = ContinuousClock.now.advanced(by: idleTimeout) }
        let more = try connection.read(deadline: deadline)
        buffer.append(contentsOf: more)
        return !more.isEmpty
    }

    private mutating func line() throws -> String {
        while true {
            if let end = buffer.firstIndex(of: 0x0A) {
                let text = String(decoding: buffer[0..<end], as: UTF8.self)
                buffer.removeSubrange(0...end)
                return text.hasSuffix("\r") ? String(text.dropLast()) : text
            }
            guard try fill() else { throw EtcdCallError.outcomeUnknown("the connection closed mid-response") }
        }
    }

    /// Reads the status line and headers (skipping any 1xx interim response).
    mutating func readHead() throws {
        repeat {
            let statusLine = try line()
            let parts = statusLine.split(separator: " ")
            guard parts.count >= 2, parts[0].hasPrefix("HTTP/"), let code = Int(parts[1]) else {
                throw EtcdCallError.outcomeUnknown("not an HTTP response: \(statusLine.prefix(80))")
            }
            status = code
            while true {
                let header = try line()
                if header.isEmpty { break }
                let pair = header.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                guard pair.count == 2 else { continue }
                switch pair[0].lowercased() {
                case "content-length": contentLength = Int(pair[1])
                case "transfer-encoding": chunked = pair[1].lowercased().contains("chunked")
                default: break
                }
            }
        } while status >= 100 && status < 200
    }

    /// Reads the body, handing each piece to `receive` as it arrives.
    mutating func readBody(_ receive: ([UInt8]) throws -> Void) throws {
        if chunked {
            while true {
                let sizeLine = try line()
                guard let size = Int(sizeLine.split(separator: ";")[0], radix: 16) else {
                    throw EtcdCallError.outcomeUnknown("malformed chunk size \(sizeLine.prefix(20))")
                }
                if size == 0 { return }
                try receive(try take(size))
                _ = try line()
            }
        } else if let contentLength {
            try receive(try take(contentLength))
        } else {
            if !buffer.isEmpty { try receive(buffer) }
            buffer.removeAll()
            while true {
                if let idleTimeout { deadline = ContinuousClock.now.advanced(by: idleTimeout) }
                let more = try connection.read(deadline: deadline)
                if more.isEmpty { return }
                try receive(more)
            }
        }
    }

    private mutating func take(_ count: Int) throws -> [UInt8] {
        while buffer.count < count {
            guard try fill() else { throw EtcdCallError.outcomeUnknown("the connection closed mid-body") }
        }
        defer { buffer.removeSubrange(0..<count) }
        return Array(buffer[0..<count])
    }
}

/// One HTTP POST to a gateway member.
enum EtcdHTTP {
    static func requestHead(_ url: URL, bodyLength: Int) -> [UInt8] {
        let host = url.host ?? "localhost"
        let port = url.port ?? 80
        let head = "POST \(url.path) HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(bodyLength)\r\nConnection: close\r\n\r\n"
        return Array(head.utf8)
    }

    /// Opens a connection to `url` and sends the request; the caller reads the response.
    static func start(_ url: URL, body: Data, deadline: ContinuousClock.Instant) throws -> EtcdHTTPConnection {
        guard url.scheme == "http" else {
            throw EtcdCallError.unreachable("\(url): only http:// endpoints are supported")
        }
        let connection = try EtcdHTTPConnection.open(host: url.host ?? "localhost", port: url.port ?? 80, deadline: deadline)
        do {
            try connection.write(requestHead(url, bodyLength: body.count) + [UInt8](body), deadline: deadline)
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    /// Posts `body` to `url` and returns the status and the whole body, off the cooperative thread pool.
    static func post(_ url: URL, body: Data, timeout: Duration) async throws -> (status: Int, body: Data) {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        let cell = Mutex<EtcdHTTPConnection?>(nil)
        let aborted = Mutex(false)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                Thread.detachNewThread {
                    do {
                        let connection = try start(url, body: body, deadline: deadline)
                        cell.withLock { $0 = connection }
                        if aborted.withLock({ $0 }) { connection.abort() }
                        defer { connection.close() }
                        var reader = EtcdHTTPResponseReader(connection: connection, deadline: deadline)
                        try reader.readHead()
                        var data = Data()
                        try reader.readBody { data.append(contentsOf: $0) }
                        continuation.resume(returning: (reader.status, data))
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
            }
        } onCancel: {
            aborted.withLock { $0 = true }
            cell.withLock { $0?.abort() }
        }
    }
}
