// A fake etcd gateway member on loopback that answers each request by its path, for tests of how a watch and the
// client treat members that stall, hang or answer oddly.
//
// Invariants:
// - Every connection is served on a thread of its own, one request per read (the client's requests are small).
// - stop() ends every connection it accepted and its accept loop, so no test leaves a thread blocked on a socket.

import EventStore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// What a fake member does with one request.
enum FakeReply: Sendable {
    /// A watch stream: its head and these messages, one chunk each, then held open.
    case stream([String])
    /// A whole answer with this status line's code and text, on a connection kept alive.
    case answer(status: String = "200 OK", body: String)
    /// Nothing at all: the connection is held open, never answered.
    case hold
    /// The request was read, and the connection is closed unanswered: an answer lost on the way back.
    case drop
}

final class FakeGatewayMember: Sendable {
    let listener: Int32
    /// The member's client URL.
    let url: String
    private let held = Locked<[Int32]>([])

    /// Starts a member answering each request with `reply(path, whole request)`.
    init(_ reply: @escaping @Sendable (_ path: String, _ request: String) -> FakeReply) throws {
        let (fd, address) = try loopbackSocket(listening: 64)
        listener = fd
        url = "http://127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))"
        let held = held
        Thread.detachNewThread {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { break }
                held.withLock { $0.append(client) }
                Thread.detachNewThread { Self.serve(client, reply) }
            }
        }
    }

    private static func serve(_ client: Int32, _ reply: @Sendable (String, String) -> FakeReply) {
        while true {
            var buffer = [UInt8](repeating: 0, count: 65_536)
            let count = read(client, &buffer, buffer.count)
            if count <= 0 { return }
            let text = String(decoding: buffer[0..<count], as: UTF8.self)
            let path = String(text.split(separator: " ").dropFirst().first ?? "")
            var out = ""
            switch reply(path, text) {
            case .stream(let messages):
                out = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                for message in messages {
                    out += String(message.utf8.count + 1, radix: 16) + "\r\n" + message + "\n\r\n"
                }
            case .answer(let status, let body):
                out = "HTTP/1.1 \(status)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n"
                    + body
            case .hold:
                return
            case .drop:
                _ = shutdown(client, Int32(SHUT_RDWR))
                return
            }
            _ = Array(out.utf8).withUnsafeBufferPointer { write(client, $0.baseAddress, $0.count) }
        }
    }

    func stop() { stopLoopbackMember(listener: listener, held: held) }
}
