// close() (or the consumer's cancellation) ended a silent watch's check of its member, but not the watch's own
// connect: the connection was registered only after the connect and the request's write, so finish() could not abort
// it, and a member that does not complete the handshake (a dead host; here a full accept queue, where the kernel
// drops SYNs) kept the watch's thread and socket for up to requestTimeout after the store closed (found by a review,
// twenty-third session).

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

#if canImport(Glibc)
    import Glibc
#endif

@Suite("etcd: close() ends a watch that is still connecting", .timeLimit(.minutes(2)))
struct EtcdWatchConnectCloseTests {
    /// Sockets of this network namespace in SYN_SENT towards 127.0.0.1:`port` (from /proc/net/tcp).
    private static func connecting(to port: UInt16) -> Int {
        guard let table = readWhole("/proc/net/tcp") else { return -1 }
        let hex = String(port, radix: 16, uppercase: true)
        let remote = "0100007F:" + String(repeating: "0", count: 4 - hex.count) + hex
        return table.split(separator: "\n").dropFirst().filter { line in
            let fields = line.split(separator: " ")
            return fields.count > 3 && fields[2] == remote && fields[3] == "02"
        }.count
    }

    /// The whole of a procfs file, read until its end (its size reads as 0, and a one-read loader may stop at a page).
    private static func readWhole(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = read(fd, &buffer, buffer.count)
            if count < 0 { return nil }
            if count == 0 { return String(decoding: bytes, as: UTF8.self) }
            bytes += buffer[0..<count]
        }
    }

    @Test("closing the store ends a watch's connect, not requestTimeout later")
    func closeEndsWatchConnect() async throws {
        // A full accept queue: the kernel drops further SYNs, so connect() waits, as for a dead host.
        let (address, fds) = try fullAcceptQueue()
        defer { for fd in fds { Glibc.close(fd) } }
        let port = UInt16(bigEndian: address.sin_port)
        // Hang guards only: every wait below ends on the event it waits for.
        var guardDeadline = ContinuousClock.now.advanced(by: .seconds(30))
        var baseline = -1
        while ContinuousClock.now < guardDeadline {  // the fill connections have settled (queue full, rest waiting)
            let now = Self.connecting(to: port)
            if now == baseline && now >= 1 { break }
            baseline = now
            try await Task.sleep(for: .milliseconds(100))
        }
        let store = try EtcdKeyValueStore(
            configuration: EtcdConfiguration(
                endpoints: [try #require(URL(string: "http://127.0.0.1:\(port)"))],
                namespace: Array("connect-close".utf8), requestTimeout: .seconds(90), retryBudget: .seconds(90)))
        let watch = Task {
            do {
                for try await _ in store.changes(after: 0, prefix: []) {}
            } catch {}
        }
        guardDeadline = ContinuousClock.now.advanced(by: .seconds(30))
        while Self.connecting(to: port) <= baseline, ContinuousClock.now < guardDeadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(Self.connecting(to: port) == baseline + 1, "the watch's connect was not seen")
        try await store.close()
        watch.cancel()
        await watch.value
        // The watch's socket must go with the store, not 90 s later.
        guardDeadline = ContinuousClock.now.advanced(by: .seconds(10))
        while Self.connecting(to: port) > baseline, ContinuousClock.now < guardDeadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(
            Self.connecting(to: port) == baseline,
            "10 s after close() the closed store's watch was still connecting (its socket lives until requestTimeout)")
    }
}
