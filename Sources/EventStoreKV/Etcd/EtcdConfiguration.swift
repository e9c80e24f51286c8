// How an EtcdKeyValueStore reaches its cluster and which of the cluster's limits it respects.
//
// Invariants: at least one endpoint, each an http:// URL with a host (the backend has no TLS); timeouts are
// positive; the transaction limits mirror the server's --max-txn-ops and --max-request-bytes, so that an oversized
// transaction fails before it is sent, naming the limit.

import Foundation

/// Where an etcd cluster is and how the etcd backend talks to it.
public struct EtcdConfiguration: Sendable {
    /// Client URLs of the cluster's members (for example `http://10.0.0.1:2379`); requests fail over between them.
    public var endpoints: [URL]
    /// A prefix under which every key of this store lives, so that several stores can share one cluster.
    /// Empty means the store owns the whole keyspace.
    public var namespace: [UInt8]
    /// How long one request to one member may take before the next member is tried.
    public var requestTimeout: Duration
    /// How long a safe-to-retry operation keeps failing over between members before it gives up.
    public var retryBudget: Duration
    /// The cluster's `--max-txn-ops` (etcd's default is 128).
    public var maximumTransactionOperations: Int
    /// The cluster's `--max-request-bytes` (etcd's default is 1.5 MiB).
    public var maximumRequestBytes: Int
    /// How long a created watch may stay silent before it checks its member: a member that does not answer a
    /// linearizable read within ``requestTimeout`` (hung, stalled, or without a leader) is left, and the watch
    /// reconnects to the next one from where it left off; otherwise the watch stays open. Also how long a watch's
    /// connection may be idle before TCP keep-alive probes check its peer (at most 32,767 s, Linux's limit).
    public var watchIdleTimeout: Duration
    /// How many undelivered changes a watcher may hold before it is dropped with `watcherOverflow`.
    public var watchBufferLimit: Int

    /// Creates a configuration.
    public init(
        endpoints: [URL], namespace: [UInt8] = [], requestTimeout: Duration = .seconds(5),
        retryBudget: Duration = .seconds(30), maximumTransactionOperations: Int = 128,
        maximumRequestBytes: Int = 1_572_864, watchIdleTimeout: Duration = .seconds(60),
        watchBufferLimit: Int = 100_000
    ) {
        self.endpoints = endpoints
        self.namespace = namespace
        self.requestTimeout = requestTimeout
        self.retryBudget = retryBudget
        self.maximumTransactionOperations = maximumTransactionOperations
        self.maximumRequestBytes = maximumRequestBytes
        self.watchIdleTimeout = watchIdleTimeout
        self.watchBufferLimit = watchBufferLimit
    }

    /// Parses a comma-separated list of client URLs, as in the `ETCD_ENDPOINTS` environment variable.
    /// - Throws: ``KeyValueStoreError/unavailable(_:)`` naming the entry that is not an `http://` URL with a host
    ///   (`https://` included: the backend does not speak TLS).
    public static func endpoints(parsing list: String) throws -> [URL] {
        let parts = list.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        return try parts.map { part in
            guard let url = URL(string: part), url.scheme != nil, url.host != nil else {
                throw KeyValueStoreError.unavailable("\"\(part)\" is not an etcd client URL like http://127.0.0.1:2379")
            }
            try checkScheme(url)
            return url
        }
    }

    /// The backend talks plain HTTP/1.1 to etcd's JSON gateway over its own sockets (EtcdHTTPConnection.swift);
    /// it has no TLS, so an `https://` member would fail every request. Say so before anything is sent.
    private static func checkScheme(_ url: URL) throws {
        switch url.scheme?.lowercased() {
        case "http": return
        case "https":
            throw KeyValueStoreError.unavailable(
                "\(url.absoluteString): https:// (TLS) endpoints are not supported; the etcd backend speaks plain "
                    + "HTTP, so reach the cluster over a private network or through a local TLS-terminating proxy")
        default:
            throw KeyValueStoreError.unavailable(
                "\(url.absoluteString) is not an etcd client URL like http://127.0.0.1:2379")
        }
    }

    func validate() throws {
        guard !endpoints.isEmpty else { throw KeyValueStoreError.unavailable("no etcd endpoints were given") }
        for endpoint in endpoints {
            guard endpoint.host != nil else {
                throw KeyValueStoreError.unavailable("\(endpoint.absoluteString) is not an etcd client URL like http://127.0.0.1:2379")
            }
            try Self.checkScheme(endpoint)
        }
        guard requestTimeout > .zero, retryBudget > .zero, watchIdleTimeout > .zero else {
            throw KeyValueStoreError.unavailable("etcd timeouts must be positive")
        }
        guard maximumTransactionOperations > 0, maximumRequestBytes > 0, watchBufferLimit > 0 else {
            throw KeyValueStoreError.unavailable("etcd limits must be positive")
        }
    }
}
