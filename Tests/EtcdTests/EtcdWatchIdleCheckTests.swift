// A silent etcd watch's check of its member, and its keep-alive (found by a review, twenty-third session): closing the
// store must end a check in progress; a very long watchIdleTimeout must not trap when the keep-alive time is set; and
// the keep-alive time asked for must be within what Linux accepts. Fake members on loopback, no cluster needed.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

#if canImport(Glibc)
    import Glibc
#endif

@Suite("etcd: a silent watch's check of its member", .timeLimit(.minutes(2)))
struct EtcdWatchIdleCheckTests {
    /// A fake gateway member: the first connection gets a created watch and then silence (kept open); every later
    /// connection (a check of the member) is accepted, read and never answered: a member whose handler hangs.
    /// `probes` yields each probe's descriptor.
    private final class SilentAfterCreatedMember: Sendable {
        let listener: Int32
        let url: String
        let held = Locked<[Int32]>([])

        init() throws {
            let (fd, address) = try loopbackSocket(listening: 16)
            listener = fd
            url = "http://127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))"
        }

        func run(probes: AsyncStream<Int32>.Continuation) {
            let (listener, held) = (listener, held)
            Thread.detachNewThread {
                var first = true
                while true {
                    let client = accept(listener, nil, nil)
                    if client < 0 { break }
                    var buffer = [UInt8](repeating: 0, count: 65_536)
                    _ = read(client, &buffer, buffer.count)
                    held.withLock { $0.append(client) }
                    if first {
                        first = false
                        let message = "{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}\n"
                        let answer =
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                            + String(message.utf8.count, radix: 16) + "\r\n" + message + "\r\n"
                        _ = Array(answer.utf8).withUnsafeBufferPointer { write(client, $0.baseAddress, $0.count) }
                    } else {
                        probes.yield(client)
                    }
                }
                probes.finish()
            }
        }

        func stop() { stopLoopbackMember(listener: listener, held: held) }
    }

    /// Whether the peer of `fd` closed its end within `bound` (a read returns end of stream or an error).
    private static func peerCloses(_ fd: Int32, within bound: Duration) -> Bool {
        let deadline = ContinuousClock.now.advanced(by: bound)
        while ContinuousClock.now < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&poller, 1, 100) > 0 {
                var byte: UInt8 = 0
                if recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) <= 0 { return true }
            }
        }
        return false
    }

    /// close() (or the consumer's cancellation) must end the watch's thread at once, also while it is inside a check
    /// of its member on a connection of its own, which finish() did not know about: the thread stayed blocked,
    /// holding that connection (and the watch's descriptor) for up to requestTimeout after the store was closed.
    @Test("closing the store ends a check of the member in progress, not requestTimeout later")
    func closeEndsProbe() async throws {
        let member = try SilentAfterCreatedMember()
        let (probes, signal) = AsyncStream<Int32>.makeStream()
        member.run(probes: signal)
        let store = try EtcdKeyValueStore(
            configuration: EtcdConfiguration(
                endpoints: try EtcdConfiguration.endpoints(parsing: member.url),
                namespace: Array("probe-close".utf8), requestTimeout: .seconds(60), retryBudget: .seconds(60),
                maximumTransactionOperations: 10_000, maximumRequestBytes: 10 << 20,
                watchIdleTimeout: .seconds(1)))
        let watch = Task {
            do {
                for try await _ in store.changes(after: 4, prefix: []) {}
            } catch {}
        }
        var iterator = probes.makeAsyncIterator()
        let probe = await iterator.next()  // the watch was created, stayed silent 1 s, and is now asking its member
        #expect(probe != nil)
        try await store.close()
        watch.cancel()
        await watch.value
        if let probe {
            // The probe's own deadline is 60 s away; ending it is what close() must do.
            #expect(
                Self.peerCloses(probe, within: .seconds(5)),
                "the check's connection was still open 5 s after close(): its thread waits out requestTimeout")
        }
        member.stop()
    }

    /// `watchIdleTimeout: .seconds(Int64.max)` passes validation (it is positive) and means "never check"; setting
    /// the keep-alive converted it with `Int64(Double)`, where Double(Int64.max) is 2^63: a trap, not an error, on
    /// the watch's first connection.
    @Test("a very long watchIdleTimeout is no crash when a watch connects")
    func hugeIdleTimeoutDoesNotTrap() async throws {
        // A listening socket nobody accepts from: the connect completes (the kernel's backlog), nothing answers.
        let (silent, address) = try loopbackSocket(listening: 16)
        defer { Glibc.close(silent) }
        let url = "http://127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))"
        let store = try EtcdKeyValueStore(
            configuration: EtcdConfiguration(
                endpoints: try EtcdConfiguration.endpoints(parsing: url),
                namespace: Array("idle-huge".utf8), requestTimeout: .milliseconds(500),
                retryBudget: .milliseconds(500), maximumTransactionOperations: 10_000,
                maximumRequestBytes: 10 << 20, watchIdleTimeout: .seconds(Int64.max)))
        var ending: (any Error)?
        do {
            for try await _ in store.changes(after: 0, prefix: []) {}
        } catch {
            ending = error
        }
        // The member never answers: the watch ends with unavailable once its retry budget has passed.
        #expect(ending is KeyValueStoreError, "\(String(describing: ending))")
        try await store.close()
    }

    /// ETCD.md: "A watch's connection sends TCP keep-alive probes after `watchIdleTimeout` without traffic". Linux
    /// refuses TCP_KEEPIDLE above 32767 s (EINVAL), and the refusal is ignored: the kernel's default (7200 s) applies.
    @Test("a watch connection's keep-alive idle time is what the configuration asks, within the kernel's limit")
    func keepAliveIdleWithinKernelLimit() throws {
        let (listener, address) = try loopbackSocket(listening: 4)
        defer { Glibc.close(listener) }
        let url = try #require(URL(string: "http://127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))"))
        let connection = try EtcdHTTP.open(url, deadline: ContinuousClock.now.advanced(by: .seconds(5)))
        defer { connection.close() }
        connection.keepAlive(idle: .seconds(40_000))  // 11 hours: a "check rarely" setting
        // The descriptor is private: find it as the socket whose peer is the listener's port, and read the option.
        var found: Int32 = -1
        for fd in Int32(3)..<Int32(1 << 16) where fd != listener {
            var peer = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &peer) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
            }
            if ok == 0, peer.sin_port == address.sin_port { found = fd }
        }
        try #require(found >= 0)
        var idle: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(found, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, &length)
        #expect(idle >= 32_767, "TCP_KEEPIDLE is \(idle) s: the setting was refused and the kernel default applies")
    }

    @Test("the keep-alive idle time is whole seconds rounded up, from 1 to Linux's limit")
    func keepAliveSeconds() {
        #expect(EtcdHTTPConnection.keepAliveSeconds(.milliseconds(1)) == 1)
        #expect(EtcdHTTPConnection.keepAliveSeconds(.seconds(60)) == 60)
        #expect(EtcdHTTPConnection.keepAliveSeconds(.milliseconds(60_001)) == 61)
        #expect(EtcdHTTPConnection.keepAliveSeconds(.seconds(32_767)) == 32_767)
        #expect(EtcdHTTPConnection.keepAliveSeconds(.milliseconds(32_766_500)) == 32_767)
        #expect(EtcdHTTPConnection.keepAliveSeconds(.seconds(Int64.max)) == 32_767)
    }
}
