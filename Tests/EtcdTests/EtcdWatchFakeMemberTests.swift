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
        let socket: FakeMemberSocket
        let served = Locked(0)
        var url: String { socket.url }

        init() throws { socket = try FakeMemberSocket(backlog: 64) }

        func run(until count: Int, reached: AsyncStream<Void>.Continuation) {
            socket.acceptLoop({ [served] client in
                var buffer = [UInt8](repeating: 0, count: 65_536)
                _ = read(client, &buffer, buffer.count)  // the request (small, in one segment on loopback)
                let response =
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                    + "{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}\n"
                _ = Array(response.utf8).withUnsafeBufferPointer { write(client, $0.baseAddress, $0.count) }
                Glibc.close(client)
                let total = served.withLock { served -> Int in
                    served += 1
                    return served
                }
                if total == count { reached.finish() }
            }, ended: { reached.finish() })
        }

        func stop() { socket.shutDown() }
    }

    @Test("a member that creates the watch and closes it at once is not reconnected to in a tight loop")
    func createdThenClosedPauses() async throws {
        let member = try CreatedThenClosedMember()
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
        let socket: FakeMemberSocket
        let held = Locked<[Int32]>([])
        var url: String { socket.url }

        init() throws { socket = try FakeMemberSocket(backlog: 16) }

        func run(connections: AsyncStream<Void>.Continuation) {
            socket.acceptLoop({ [held] client in
                var buffer = [UInt8](repeating: 0, count: 65_536)
                _ = read(client, &buffer, buffer.count)
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                _ = Array(head.utf8).withUnsafeBufferPointer { write(client, $0.baseAddress, $0.count) }
                held.withLock { $0.append(client) }
                connections.yield()
            }, ended: { connections.finish() })
        }

        /// Stops accepting and closes the connections it holds; a second call closes nothing again (a descriptor
        /// closed twice may by then be another test's: a pipe to a tool another test runs).
        func stop() {
            socket.shutDown()
            let clients = held.withLock { held -> [Int32] in
                defer { held.removeAll() }
                return held
            }
            for client in clients { Glibc.close(client) }
        }
    }

    @Test("a watch whose member sends the head but never `created` is reopened after requestTimeout")
    func headWithoutCreatedCostsRequestTimeout() async throws {
        let member = try HeadOnlyMember()
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
            // Only when the bound is reached: a cancelled sleep throws, and stops nothing.
            do {
                try await Task.sleep(for: .seconds(20))
                member.stop()
            } catch {}
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

/// A listening socket on loopback for a fake member. Its accept loop closes it when the loop ends, being its last
/// user; `shutDown()` ends the loop and never touches the descriptor once it is closed, whose number another test
/// may have been given by then (a descriptor closed twice, or shut down late, can be another test's pipe or socket).
private final class FakeMemberSocket: Sendable {
    let url: String
    private let descriptor: Locked<Int32?>

    init(backlog: Int32) throws {
        let (fd, address) = try loopbackSocket(listening: backlog)
        descriptor = Locked(fd)
        url = "http://127.0.0.1:\(Int(UInt16(bigEndian: address.sin_port)))"
    }

    /// Calls `serve` with each accepted connection on a thread of its own until `shutDown()`, then `ended`.
    func acceptLoop(_ serve: @escaping @Sendable (Int32) -> Void, ended: @escaping @Sendable () -> Void) {
        guard let fd = descriptor.withLock({ $0 }) else { return ended() }
        Thread.detachNewThread { [self] in
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { break }
                serve(client)
            }
            descriptor.withLock { descriptor in
                if let open = descriptor { Glibc.close(open) }
                descriptor = nil
            }
            ended()
        }
    }

    /// Makes the accept loop end.
    func shutDown() {
        descriptor.withLock { descriptor in
            if let fd = descriptor { _ = shutdown(fd, Int32(SHUT_RDWR)) }
        }
    }
}
