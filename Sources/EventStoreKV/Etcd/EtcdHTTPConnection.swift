// A minimal HTTP/1.1 client for etcd's JSON gateway, over connections kept alive between requests
// (EtcdConnectionPool). It replaces URLSession on Linux, whose FoundationNetworking traps ("Transfer completed, but
// there's no response", swift-corelibs-foundation issue 5285) when a connection drops right after a request was
// sent: exactly what a failing etcd member does.
//
// Invariants:
// - A failure before the request's first byte is written means nothing was sent (`unreachable`); any failure after
//   that may have reached the server (`outcomeUnknown`). Callers rely on this split to decide what may be retried.
// - Every blocking call waits in poll() with the remaining time of the request's deadline; `abort()` (cancellation)
//   shuts the socket down, which wakes any poll at once. A new socket is attached to its request before it waits to
//   connect, so cancellation wakes the connect too. A request that must not be cut short once sent (a commit's Txn)
//   is aborted by cancellation only until just before its first byte is written. Writes use MSG_NOSIGNAL, so a
//   closed peer never raises SIGPIPE.
// - The descriptor is guarded by a lock (`Locked`) and closed exactly once.
// - Bodies are read by Content-Length, by chunked transfer encoding, or to end of stream (a watch's request says
//   `Connection: close`).
// - A pooled connection whose request could not be written at all (the server had closed it while idle) is replaced
//   by a new one once: nothing reached the server, so that is not a failure of the member.
// - A connection goes back to the pool only after a whole response was read without error, delimited by length or
//   chunks, with no byte left over and no `Connection: close`: so a later request can never read an earlier answer.
//   Any failure, timeout or cancellation closes it instead.
// - Blocking calls run on a Dispatch serial queue of their own (Dispatch's overcommit threads, reused between
//   requests), never on the cooperative pool.

import EventStore
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

final class EtcdHTTPConnection: Sendable {
    private let descriptor: Locked<Int32>

    /// Wraps a connected, non-blocking socket; the connection owns it from now on.
    init(descriptor fd: Int32) { descriptor = Locked(fd) }

    /// Connects to `host:port` before `deadline`. Each socket is attached to `request` before it waits to connect, so
    /// cancelling the request wakes the wait at once.
    static func open(host: String, port: Int, deadline: ContinuousClock.Instant, request: EtcdCancellableRequest?)
        throws -> EtcdHTTPConnection
    {
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
            guard request?.isCancelled != true else { throw EtcdCallError.unreachable("cancelled while connecting") }
            current = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { continue }
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            if connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 || errno == EINPROGRESS {
                let connection = EtcdHTTPConnection(descriptor: fd)
                request?.attach(connection)
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

    /// Has the kernel probe the peer after `idle` without traffic (whole seconds, rounded up, at most Linux's limit
    /// of 32,767; then every 10 s, 3 times), so that a connection whose peer vanished without a word (a dropped NAT
    /// or firewall entry, a host gone) fails its reads instead of waiting for ever; the probes also keep such entries
    /// alive. A hung process's kernel still answers them: a watch finds that out by asking the member (EtcdWatch).
    func keepAlive(idle: Duration) {
        let fd = descriptor.withLock { $0 }
        guard fd >= 0 else { return }
        let size = socklen_t(MemoryLayout<Int32>.size)
        var one: Int32 = 1
        var seconds = Self.keepAliveSeconds(idle)
        var interval: Int32 = 10
        var count: Int32 = 3
        _ = setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, size)
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &seconds, size)
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, size)
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &count, size)
    }

    /// Linux refuses a TCP_KEEPIDLE above this (EINVAL).
    static let maximumKeepAliveIdle: Int32 = 32_767

    /// `idle` in whole seconds, rounded up, from 1 to ``maximumKeepAliveIdle``: without a conversion that traps.
    static func keepAliveSeconds(_ idle: Duration) -> Int32 {
        let (seconds, attoseconds) = idle.components
        let whole = attoseconds > 0 && seconds < Int64(maximumKeepAliveIdle) ? seconds + 1 : seconds
        return Int32(min(max(whole, 1), Int64(maximumKeepAliveIdle)))
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

    /// The detail of the error a wait past its deadline throws.
    static let timedOut = "timed out"

    /// Waits until the socket is ready for `events`; `sent` says which error to report on failure.
    private func wait(for events: Int16, until deadline: ContinuousClock.Instant, sent: Bool) throws {
        while true {
            let fd = descriptor.withLock { $0 }
            guard fd >= 0 else { throw failure("the connection was closed", sent: sent) }
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { throw failure(Self.timedOut, sent: sent) }
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
            var failure: Int32 = 0
            let bytes = [UInt8](unsafeUninitializedCapacity: 65_536) { raw, initialized in
                let count = recv(fd, raw.baseAddress, raw.count, 0)
                initialized = max(0, count)
                if count < 0 { failure = errno }
            }
            if failure == 0 { return bytes }
            errno = failure
            if errno != EAGAIN && errno != EINTR { throw EtcdCallError.outcomeUnknown(String(cString: strerror(errno))) }
        }
    }

    /// Whether an idle connection can carry another request: open, with nothing to read (a readable idle connection
    /// means the server closed it or sent something unasked).
    func isIdleAndOpen() -> Bool {
        let fd = descriptor.withLock { $0 }
        guard fd >= 0 else { return false }
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&poller, 1, 0) == 0
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
    /// For streams: the deadline of each read, asked for before it, instead of all reads sharing `deadline`.
    var readDeadline: (() -> ContinuousClock.Instant)?
    /// For streams: called when a read waited until its deadline with nothing read; true waits again (with a new
    /// deadline), false fails with the timeout. Nothing of the response is lost either way.
    var whenIdle: (() -> Bool)?
    private var buffer: [UInt8] = []
    private(set) var status = 0
    private var contentLength: Int?
    private var chunked = false
    /// HTTP/1.1 without `Connection: close`: the server keeps the connection open after this response.
    private var serverKeepsAlive = false
    private var bodyRead = false

    /// Whether the connection may carry another request: the whole response was read, it was delimited by its length
    /// or by chunks, nothing follows it, and the server keeps the connection open.
    var connectionIsReusable: Bool {
        bodyRead && serverKeepsAlive && (chunked || contentLength != nil) && buffer.isEmpty
    }

    init(connection: EtcdHTTPConnection, deadline: ContinuousClock.Instant) {
        self.connection = connection
        self.deadline = deadline
    }

    private mutating func fill() throws -> Bool {
        let more = try readMore()
        buffer.append(contentsOf: more)
        return !more.isEmpty
    }

    /// What the connection has next (empty at its end), waiting again while `whenIdle` says so.
    private mutating func readMore() throws -> [UInt8] {
        while true {
            if let readDeadline { deadline = readDeadline() }
            do {
                return try connection.read(deadline: deadline)
            } catch EtcdCallError.outcomeUnknown(let detail) where detail == EtcdHTTPConnection.timedOut {
                // The wait timed out before anything was received: the response's state is untouched.
                guard let whenIdle, whenIdle() else { throw EtcdCallError.outcomeUnknown(detail) }
            }
        }
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
            serverKeepsAlive = parts[0] == "HTTP/1.1"
            contentLength = nil
            chunked = false
            while true {
                let header = try line()
                if header.isEmpty { break }
                // Byte-level trimming: Foundation's trimmingCharacters goes through NSString and was 9% of the
                // client's CPU per request.
                let pair = header.split(separator: ":", maxSplits: 1).map(Self.trimmed)
                guard pair.count == 2 else { continue }
                switch pair[0].lowercased() {
                case "content-length":
                    guard let length = Self.size(pair[1], radix: 10) else {
                        throw EtcdCallError.outcomeUnknown("malformed Content-Length \(pair[1].prefix(20))")
                    }
                    contentLength = length
                case "transfer-encoding": chunked = pair[1].lowercased().contains("chunked")
                case "connection": if pair[1].lowercased().contains("close") { serverKeepsAlive = false }
                default: break
                }
            }
        } while status >= 100 && status < 200
    }

    /// `text` without leading and trailing spaces and tabs (HTTP's optional whitespace).
    private static func trimmed(_ text: Substring) -> Substring {
        var result = text
        while let first = result.first, first == " " || first == "\t" { result.removeFirst() }
        while let last = result.last, last == " " || last == "\t" { result.removeLast() }
        return result
    }

    /// A chunk size (`radix` 16) or Content-Length (10): digits only, no sign, at most 15 of them, so it is below
    /// 2^60 and no arithmetic on it can overflow; nil otherwise.
    private static func size(_ text: Substring, radix: Int) -> Int? {
        let digits = radix == 16 ? "0123456789abcdefABCDEF" : "0123456789"
        guard !text.isEmpty, text.count <= 15, text.allSatisfy({ digits.contains($0) }) else { return nil }
        return Int(text, radix: radix)
    }

    /// Reads the body, handing each piece to `receive` as it arrives.
    mutating func readBody(_ receive: ([UInt8]) throws -> Void) throws {
        if chunked {
            while true {
                let sizeLine = try line()
                let sizeField = sizeLine.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false)[0]
                guard let size = Self.size(Self.trimmed(sizeField), radix: 16) else {
                    throw EtcdCallError.outcomeUnknown("malformed chunk size \(sizeLine.prefix(20))")
                }
                if size == 0 {
                    while try !line().isEmpty {}  // trailers, up to the blank line that ends the response
                    bodyRead = true
                    return
                }
                try receive(try take(size))
                _ = try line()
            }
        } else if let contentLength {
            try receive(try take(contentLength))
            bodyRead = true
        } else {
            if !buffer.isEmpty { try receive(buffer) }
            buffer.removeAll()
            while true {
                let more = try readMore()
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
    static func requestHead(_ url: URL, bodyLength: Int, keepAlive: Bool, requireLeader: Bool = false) -> [UInt8] {
        let host = url.host ?? "localhost"
        let port = url.port ?? 80
        // The gateway passes Grpc-Metadata-* headers on as gRPC metadata; etcd ends a stream with "hasleader" once
        // its member has had no leader for a few election timeouts (etcd's WithRequireLeader), so that a watch on a
        // partitioned member, which would stay open and silent, ends instead and is reopened elsewhere.
        let head = "POST \(url.path) HTTP/1.1\r\nHost: \(host):\(port)\r\nContent-Type: application/json\r\n"
            + (requireLeader ? "Grpc-Metadata-hasleader: true\r\n" : "")
            + "Content-Length: \(bodyLength)\r\n" + (keepAlive ? "" : "Connection: close\r\n") + "\r\n"
        return Array(head.utf8)
    }

    /// Opens a new connection to `url`; cancelling `request` aborts the connect.
    static func open(_ url: URL, deadline: ContinuousClock.Instant, request: EtcdCancellableRequest? = nil)
        throws -> EtcdHTTPConnection
    {
        guard url.scheme?.lowercased() == "http" else {
            throw EtcdCallError.unreachable("\(url): only http:// endpoints are supported")
        }
        return try EtcdHTTPConnection.open(
            host: url.host ?? "localhost", port: url.port ?? 80, deadline: deadline, request: request)
    }

    /// Opens a connection to `url` and sends a request that ends it (for streams, which require a leader); the caller
    /// reads the response.
    /// Cancelling `request` aborts the connect and the write.
    static func start(
        _ url: URL, body: Data, deadline: ContinuousClock.Instant, keepAliveAfter idle: Duration,
        request: EtcdCancellableRequest? = nil
    ) throws -> EtcdHTTPConnection {
        let connection = try open(url, deadline: deadline, request: request)
        connection.keepAlive(idle: idle)
        do {
            try request?.willSend()
            let head = requestHead(url, bodyLength: body.count, keepAlive: false, requireLeader: true)
            try connection.write(head + [UInt8](body), deadline: deadline)
        } catch {
            connection.close()
            throw error
        }
        return connection
    }

    /// Sends one request on `connection` and reads the whole answer, and whether the connection can carry another
    /// request. The connection is closed on any failure.
    static func exchange(
        _ url: URL, body: Data, on connection: EtcdHTTPConnection, deadline: ContinuousClock.Instant,
        requireLeader: Bool = false
    ) throws -> (status: Int, body: Data, reusable: Bool) {
        do {
            let head = requestHead(url, bodyLength: body.count, keepAlive: true, requireLeader: requireLeader)
            try connection.write(head + [UInt8](body), deadline: deadline)
            var reader = EtcdHTTPResponseReader(connection: connection, deadline: deadline)
            try reader.readHead()
            var data = Data()
            try reader.readBody { data.append(contentsOf: $0) }
            return (reader.status, data, reader.connectionIsReusable)
        } catch {
            connection.close()
            throw error
        }
    }

    /// Posts `body` to `url` over a pooled connection and returns the status and the whole body, off the cooperative
    /// thread pool. Cancelling the calling task cancels `request`: that aborts the exchange at once when the request
    /// is `cancellableOnceSent`; otherwise it aborts only a request not yet sent (its connect, or its wait for a
    /// connection to write on): once the first byte is written, the exchange runs to its answer or its deadline (a
    /// commit, whose outcome a cancelled caller must still learn). `request.abort()` ends it at any point.
    static func post(_ url: URL, body: Data, timeout: Duration, pool: EtcdConnectionPool, request: EtcdCancellableRequest)
        async throws -> (status: Int, body: Data)
    {
        let deadline = ContinuousClock.now.advanced(by: timeout)
        let exchange = {
            try await withCheckedThrowingContinuation { continuation in
                // A serial queue of its own targets Dispatch's overcommit pool: its threads are reused between requests
                // (no thread is created per request) and a blocked one never holds up the cooperative pool.
                DispatchQueue(label: "EtcdHTTP.post").async {
                    do {
                        continuation.resume(returning: try send(url, body: body, pool: pool, request: request, deadline: deadline))
                    } catch {
                        continuation.resume(throwing: error)
                    }
                }
            }
        }
        return try await withTaskCancellationHandler {
            try await exchange()
        } onCancel: {
            request.cancel()
        }
    }

    /// The blocking part of `post`: a pooled connection first, a new one if the pooled one had been closed while idle.
    private static func send(
        _ url: URL, body: Data, pool: EtcdConnectionPool, request: EtcdCancellableRequest,
        deadline: ContinuousClock.Instant
    ) throws -> (status: Int, body: Data) {
        let pooled = pool.checkOut(for: url)
        var reused = pooled != nil
        var connection = try pooled ?? pool.open(for: url, deadline: deadline, request: request)
        while true {
            request.attach(connection)
            do {
                try request.willSend()
            } catch {
                connection.close()
                throw error
            }
            do {
                let answer = try exchange(url, body: body, on: connection, deadline: deadline)
                // Out of the cancellation handler's reach before it can carry another request.
                let cancelled = request.detach()
                if answer.reusable && !cancelled { pool.checkIn(connection, for: url) } else { connection.close() }
                return (answer.status, answer.body)
            } catch EtcdCallError.unreachable(let detail) where reused {
                // Not one byte was written: the member had closed this idle connection. A new one tells more.
                _ = request.detach()
                guard !request.isCancelled else { throw EtcdCallError.unreachable(detail) }
                connection = try pool.open(for: url, deadline: deadline, request: request)
                reused = false
            }
        }
    }
}

/// The connection a request is using, so that cancelling the request's task can wake its blocking calls. A request
/// that is not `cancellableOnceSent` (a commit's Txn) is out of cancellation's reach from just before its first byte
/// is written (`willSend`) until it is detached: the check and the mark are one step under the lock, so cancellation
/// either aborts it before anything is sent or leaves it to run to its answer.
final class EtcdCancellableRequest: Sendable {
    private let cancellableOnceSent: Bool
    private let state = Locked<(connection: EtcdHTTPConnection?, cancelled: Bool, sending: Bool)>((nil, false, false))

    init(cancellableOnceSent: Bool = true) { self.cancellableOnceSent = cancellableOnceSent }

    /// Makes `connection` the one cancellation aborts (at once, if the request was cancelled already).
    func attach(_ connection: EtcdHTTPConnection) {
        state.withLock { state in
            state.connection = connection
            if state.cancelled && !state.sending { connection.abort() }
        }
    }

    /// Called just before the request's first byte is written on the attached connection.
    /// - Throws: `EtcdCallError.unreachable` when the request was cancelled already: nothing is sent.
    func willSend() throws {
        try state.withLock { state in
            guard !state.cancelled else { throw EtcdCallError.unreachable("cancelled before sending") }
            if !cancellableOnceSent { state.sending = true }
        }
    }

    /// Releases the connection from cancellation's reach (and back within it, for a request that must be sent
    /// again on a new connection); returns whether the request was cancelled.
    func detach() -> Bool {
        state.withLock { state in
            state.connection = nil
            state.sending = false
            return state.cancelled
        }
    }

    var isCancelled: Bool { state.withLock { $0.cancelled } }

    /// Aborts the attached connection and any connection attached later, unless the request is being sent and is
    /// not `cancellableOnceSent`.
    func cancel() {
        state.withLock { state in
            state.cancelled = true
            if !state.sending { state.connection?.abort() }
        }
    }

    /// Aborts the attached connection whatever it is doing, and any connection attached later (the store closed:
    /// a Txn being sent ends as a lost answer, its outcome unknown).
    func abort() {
        state.withLock { state in
            state.cancelled = true
            state.connection?.abort()
        }
    }
}
