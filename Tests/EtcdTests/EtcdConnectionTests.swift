// The etcd client keeps HTTP connections alive between requests, and never hands out one that cannot carry a request.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("etcd: kept-alive connections", .enabled(if: EtcdTestCluster.isConfigured, EtcdTestCluster.skipReason))
struct EtcdConnectionTests {
    @Test("sequential requests to one member share one connection")
    func sequentialRequestsReuseOneConnection() async throws {
        let store = try EtcdTestCluster.makeStore(namespace: EtcdTestCluster.uniqueNamespace("pool"))
        let key = Array("k".utf8)
        for round in 0..<10 {
            _ = try await store.commit(KeyValueTransaction(writes: [.put(key, Array("\(round)".utf8))]))
            #expect(try await store.get(key)?.value == Array("\(round)".utf8))
        }
        #expect(store.transport.connections.connectionsOpened == 1)
        try await store.removeAllKeys()
        try await store.close()
    }

    @Test("concurrent requests each get a connection of their own, and all of them come back")
    func concurrentRequestsUseSeparateConnections() async throws {
        let store = try EtcdTestCluster.makeStore(namespace: EtcdTestCluster.uniqueNamespace("pool"))
        let keys = (0..<8).map { Array("k\($0)".utf8) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for key in keys {
                group.addTask { _ = try await store.commit(KeyValueTransaction(writes: [.put(key, key)])) }
            }
            try await group.waitForAll()
        }
        let opened = store.transport.connections.connectionsOpened
        #expect(opened >= 1 && opened <= keys.count)
        #expect(store.transport.connections.idleConnections == opened)
        for key in keys { #expect(try await store.get(key)?.value == key) }
        #expect(store.transport.connections.connectionsOpened == opened)
        try await store.removeAllKeys()
        try await store.close()
    }

    @Test("a request after the store closed is refused and leaves no connection open")
    func closingReleasesConnections() async throws {
        let store = try EtcdTestCluster.makeStore(namespace: EtcdTestCluster.uniqueNamespace("pool"))
        _ = try await store.get(Array("k".utf8))
        #expect(store.transport.connections.idleConnections == 1)
        try await store.close()
        await #expect(throws: KeyValueStoreError.closed) { _ = try await store.get(Array("k".utf8)) }
        #expect(store.transport.connections.idleConnections == 0)
    }
}
