// An etcd configuration that cannot work is refused when it is made, with a message naming what is wrong, before
// any request is sent. These tests need no cluster.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("etcd: configuration checks")
struct EtcdConfigurationTests {
    /// The message of the `unavailable` error `body` throws, or nil if it throws something else or nothing.
    private func unavailableMessage(_ body: () throws -> Void) -> String? {
        do {
            try body()
            return nil
        } catch KeyValueStoreError.unavailable(let message) {
            return message
        } catch {
            return nil
        }
    }

    @Test("a comma-separated list gives its http URLs in order, ignoring blanks and empty entries")
    func parsesEndpointLists() throws {
        let endpoints = try EtcdConfiguration.endpoints(parsing: " http://10.0.0.1:2379 ,,HTTP://etcd-2:2379, ")
        #expect(endpoints.map(\.absoluteString) == ["http://10.0.0.1:2379", "HTTP://etcd-2:2379"])
    }

    @Test("https endpoints are refused, saying that the backend has no TLS", arguments: [
        "https://10.0.0.1:2379", "http://10.0.0.1:2379,https://10.0.0.2:2379",
    ])
    func refusesHTTPS(list: String) {
        let message = unavailableMessage { _ = try EtcdConfiguration.endpoints(parsing: list) }
        #expect(message?.contains("https://10.0.0.") == true)
        #expect(message?.contains("TLS") == true)
    }

    @Test("entries that are not http URLs with a host are refused, naming the entry", arguments: [
        "10.0.0.1:2379", "etcd", "ftp://10.0.0.1:2379", "http://", "http:///v3/kv",
    ])
    func refusesOtherEntries(entry: String) {
        let message = unavailableMessage { _ = try EtcdConfiguration.endpoints(parsing: "http://ok:2379,\(entry)") }
        #expect(message?.contains(entry) == true)
    }

    @Test("a store is not made from an https endpoint, no endpoint, or a non-positive timeout")
    func storeRefusesUnusableConfigurations() throws {
        let secure = try #require(URL(string: "https://127.0.0.1:2379"))
        let plain = try #require(URL(string: "http://127.0.0.1:2379"))
        let refused: [(EtcdConfiguration, String)] = [
            (EtcdConfiguration(endpoints: [plain, secure]), "TLS"),
            (EtcdConfiguration(endpoints: []), "no etcd endpoints"),
            (EtcdConfiguration(endpoints: [plain], requestTimeout: .zero), "positive"),
            (EtcdConfiguration(endpoints: [plain], maximumTransactionOperations: 0), "positive"),
        ]
        for (configuration, expected) in refused {
            let message = unavailableMessage { _ = try EtcdKeyValueStore(configuration: configuration) }
            #expect(message?.contains(expected) == true, "\(configuration.endpoints): \(message ?? "no error")")
        }
        // The same checks pass a usable configuration (the store connects lazily, so nothing is sent here).
        let store = try EtcdKeyValueStore(configuration: EtcdConfiguration(endpoints: [plain]))
        #expect(store.configuration.endpoints == [plain])
    }
}
