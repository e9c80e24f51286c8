// The etcd watch against fake members on loopback, which no real cluster can be made to play (twenty-first
// session's second review): one that answers `created` and closes at once was reconnected to in a tight loop, with
// no pause, because `created` started every failure run afresh; and one that sends the answer's head and then
// nothing held the watch for watchIdleTimeout (60 s) instead of requestTimeout, because the idle timeout began at
// the head rather than at `created`. Neither needs an etcd cluster.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

#if canImport(Glibc)
    import Glibc
#endif

@Suite("etcd: a watch against fake members", .timeLimit(.minutes(1)))
struct EtcdWatchFakeMemberTests {
    /// A fake gateway member on loopback that answers every watch with a `created` message and closes at once.
    /// Counts the connections; `reached` finishes once `count` were served.
    private final class CreatedThenClosedMember: Sendable {
        let fd: Int32
        let url: String
        let served = Locked(0)

        init() throws {
            let (fd, address) = try loopbackSocket(listening: 64)
            self.fd = fd
            url = "http://127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))"
        }

        func run(until count: Int, reached: AsyncStream<Void>.Continuation) {
            Thread.detachNewThread { [self] in
                while true {
                    let client = accept(fd, nil, nil)
                    if client < 0 { break }
                    var buffer = [UInt8](repeating: 0, count: 65_536)
                    _ = read(client, &buffer, buffer.count)  // the request (small, in one segment on loopback)
                    let response =
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                        + "{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}\n"
                    _ = Array(response.utf8).withUnsafeBufferPointer { write(client, $0.baseAddress, $0.count) }
                    Glibc.close(client)
                    let served = self.served.withLock { served -> Int in
                        served += 1
                        return served
                    }
                    if served == count { reached.finish() }
                }
                reached.finish()
            }
        }

        func stop() { _ = shutdown(fd, Int32(SHUT_RDWR)) }
    }

    @Test("a member that creates the watch and closes it at once is not reconnected to in a tight loop")
    func createdThenClosedPauses() async throws {
        let member = try CreatedThenClosedMember()
        defer { Glibc.close(member.fd) }
        let store = try EtcdKeyValueStore(
            configuration: EtcdConfiguration(
                endpoints: try EtcdConfiguration.endpoints(parsing: member.url),
                namespace: Array("fake-pause".utf8), requestTimeout: .seconds(5), retryBudget: .seconds(30),
                maximumTransactionOperations: 10_000, maximumRequestBytes: 10 << 20,
                watchIdleTimeout: .seconds(60)))
        let (reached, signal) = AsyncStream<Void>.makeStream()
        let connections = 10
        member.run(until: connections, reached: signal)
        let started = ContinuousClock.now
        let watch = Task {
            do {
                for try await _ in store.changes(after: 1, prefix: []) {}
            } catch {}
        }
        for await _ in reached {}
        let elapsed = ContinuousClock.now - started
        // Ends the watch (its stream finishes), then the member.
        watch.cancel()
        await watch.value
        member.stop()
        try await store.close()
        // Connections after a failure start at least 200 ms apart: 9 reconnects take 1.8 s at least.
        #expect(
            elapsed >= .milliseconds(900),
            "\(connections) connections in \(elapsed): the watch reconnects to the member with no pause")
    }

    /// A fake member that answers each connection with a 200 head of a chunked stream and then nothing, keeping the
    /// connection open. `connections` yields once per accepted connection.
    private final class HeadOnlyMember: Sendable {
        let fd: Int32
        let url: String
        let held = Locked<[Int32]>([])

        init() throws {
            let (fd, address) = try loopbackSocket(listening: 16)
            self.fd = fd
            url = "http://127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))"
        }

        func run(connections: AsyncStream<Void>.Continuation) {
            Thread.detachNewThread { [self] in
                while true {
                    let client = accept(fd, nil, nil)
                    if client < 0 { break }
                    var buffer = [UInt8](repeating: 0, count: 65_536)
                    _ = read(client, &buffer, buffer.count)
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                    _ = Array(head.utf8).withUnsafeBufferPointer { write(client, $0.baseAddress, $0.count) }
                    held.withLock { $0.append(client) }
                    connections.yield()
                }
                connections.finish()
            }
        }

        func stop() {
            _ = shutdown(fd, Int32(SHUT_RDWR))
            for client in held.withLock({ $0 }) { Glibc.close(client) }
        }
    }

    @Test("a watch whose member sends the head but never `created` is reopened after requestTimeout")
    func headWithoutCreatedCostsRequestTimeout() async throws {
        let member = try HeadOnlyMember()
        defer { Glibc.close(member.fd) }
        let store = try EtcdKeyValueStore(
            configuration: EtcdConfiguration(
                endpoints: try EtcdConfiguration.endpoints(parsing: member.url),
                namespace: Array("fake-head".utf8), requestTimeout: .seconds(1), retryBudget: .seconds(30),
                maximumTransactionOperations: 10_000, maximumRequestBytes: 10 << 20,
                watchIdleTimeout: .seconds(600)))
        let (connections, signal) = AsyncStream<Void>.makeStream()
        member.run(connections: signal)
        let watch = Task {
            do {
                for try await _ in store.changes(after: 1, prefix: []) {}
            } catch {}
        }
        // A bound far above requestTimeout (1 s) and far below watchIdleTimeout (600 s).
        let bound = Task {
            try? await Task.sleep(for: .seconds(20))
            member.stop()
        }
        var count = 0
        for await _ in connections {
            count += 1
            if count == 2 { break }
        }
        bound.cancel()
        watch.cancel()
        await watch.value
        member.stop()
        try await store.close()
        #expect(count == 2, "the watch never left a member that sent only the head (waited watchIdleTimeout)")
    }
}
