// EtcdKeyValueStore: the key-value contract on an etcd cluster, through etcd's v3 JSON gateway.
//
// Invariants:
// - Every contract key `k` is stored as etcd key `namespace + k`; nothing outside the namespace is read or written.
//   The etcd key equal to the namespace itself is this store's revision marker: every transaction also writes it,
//   so its mod_revision is the revision of the namespace's last commit. It is never read as a contract key, and the
//   contract's empty key is therefore refused with a non-empty namespace.
// - `currentRevision` is the cluster's current revision (a read's header revision), not the marker's: revisions are
//   cluster-wide, so it bounds every change of the namespace visible to reads, and a watch from it is never refused
//   as compacted (the marker's revision can be older than the cluster's compaction point).
// - Versions, mod revisions and revisions are etcd's own (`version`, `mod_revision`, `header.revision`), so the
//   contract's semantics (version resets on delete or expiry; revisions strictly increase) are etcd's.
// - Reads are linearizable (etcd's default): they observe every commit acknowledged before they started.
// - A batch get from several round trips pins every chunk to the revision of the first, so it reads one state.

import EventStore
import Foundation

/// A ``KeyValueStore`` on an etcd cluster (v3 API, 3.4 or later), reached over HTTP/JSON with failover between
/// members. Transactions are replicated to a quorum before they are acknowledged; TTL keys are etcd leases and
/// expire on the server; ``changes(after:prefix:)`` is an etcd watch.
public final class EtcdKeyValueStore: KeyValueStore {
    /// How this store reaches its cluster.
    public let configuration: EtcdConfiguration
    let transport: EtcdTransport
    let leases: EtcdLeases
    let namespace: [UInt8]

    struct State {
        var closed = false
        var watchers: [UInt64: EtcdWatch] = [:]
        var nextWatcherID: UInt64 = 0
        /// The highest revision any answer has reported: a lower bound for the revision of a commit sent later.
        var observedRevision: UInt64 = 0
    }

    let state = Locked(State())
    /// Serializes this process's read-modify-write updates: every event-store append reads and writes the global
    /// head, so optimistic updates from many tasks of one process would all conflict and retry round after round
    /// against the cluster. Taking turns locally (FIFO; a task cancelled before its turn never runs its body) leaves
    /// only other processes as a source of conflicts, which the optimistic conditions still catch.
    let writerLock = WriterLock()

    /// Connects lazily to the cluster described by `configuration`; the first call reaches it.
    /// - Throws: ``KeyValueStoreError/unavailable(_:)`` when the configuration is unusable.
    public init(configuration: EtcdConfiguration) throws {
        try configuration.validate()
        self.configuration = configuration
        self.namespace = configuration.namespace
        self.transport = EtcdTransport(configuration: configuration)
        self.leases = EtcdLeases(transport: transport)
    }

    /// Connects lazily to the members at `endpoints`, keeping every key under `namespace`.
    public convenience init(endpoints: [URL], namespace: String = "") throws {
        try self.init(configuration: EtcdConfiguration(endpoints: endpoints, namespace: Array(namespace.utf8)))
    }

    // MARK: Keys

    /// The etcd key for contract key `key`.
    func etcdKey(_ key: Key) throws -> [UInt8] {
        if key.isEmpty {
            throw KeyValueStoreError.unavailable(
                namespace.isEmpty ? "etcd does not accept an empty key" : "the empty key is reserved for the namespace's revision marker")
        }
        return namespace + key
    }

    /// The end of the namespace: the first etcd key after every key in it ("\0" means no end in etcd).
    var namespaceEnd: [UInt8] { Key.successor(ofPrefix: namespace) ?? [0] }

    /// The etcd range for a contract range, or nil when it is empty.
    func etcdRange(_ range: KeyRange) -> (key: [UInt8], end: [UInt8])? {
        // The empty key is never stored, so the lowest key of a range starting at the empty key is [0].
        let lower = namespace + (range.lowerBound.isEmpty ? [0] : range.lowerBound)
        guard let upper = range.upperBound else { return (lower, namespaceEnd) }
        guard !upper.isEmpty, range.lowerBound.lexicographicallyPrecedes(upper) else { return nil }
        return (lower, namespace + upper)
    }

    func checkOpen() throws {
        if state.withLock({ $0.closed }) { throw KeyValueStoreError.closed }
    }

    /// The revision of an answer's `header`, which also raises `observedRevision`.
    /// - Throws: ``KeyValueStoreError/unavailable(_:)`` when the header has no usable revision.
    @discardableResult
    func observe(_ header: EtcdWire.Header?) throws -> UInt64 {
        let revision = try EtcdWire.revision(header?.revision, field: "header revision")
        state.withLock { $0.observedRevision = max($0.observedRevision, revision) }
        return revision
    }

    /// A safe-to-retry call, with transport failures turned into contract errors.
    func read<Response: Decodable>(_ path: String, body: some Encodable, as type: Response.Type) async throws
        -> Response
    {
        try checkOpen()
        do {
            return try await transport.call(path, body: body, idempotent: true, as: type)
        } catch let error as EtcdCallError {
            throw Self.contractError(error)
        }
    }

    static func contractError(_ error: EtcdCallError) -> KeyValueStoreError {
        switch error {
        case .closed: .closed
        case .unreachable(let detail): .unavailable(detail)
        case .outcomeUnknown(let detail): .unavailable("etcd did not answer: \(detail)")
        case .server(let code, let message): .unavailable("etcd refused the request (gRPC code \(code)): \(message)")
        }
    }

    // MARK: Reads

    public func get(_ key: Key) async throws -> KeyValueEntry? {
        let request = EtcdWire.RangeRequest(key: EtcdWire.encode(try etcdKey(key)))
        let response = try await read("v3/kv/range", body: request, as: EtcdWire.RangeResponse.self)
        try observe(response.header)
        return try response.kvs?.first.map { try $0.entry(droppingNamespace: namespace.count) }
    }

    public func get(_ keys: [Key]) async throws -> [KeyValueEntry?] {
        try await get(keys, at: nil).entries
    }

    /// The entries of `keys` at `revision` (now when nil), read as one state, with the revision read.
    func get(_ keys: [Key], at revision: UInt64?) async throws -> (entries: [KeyValueEntry?], revision: UInt64) {
        try checkOpen()
        var pinned = revision
        var entries: [KeyValueEntry?] = []
        entries.reserveCapacity(keys.count)
        let chunkSize = max(1, configuration.maximumTransactionOperations)
        var start = 0
        repeat {
            let chunk = keys[start..<min(keys.count, start + chunkSize)]
            let operations = try chunk.map { key in
                EtcdWire.RequestOp(requestRange: EtcdWire.RangeRequest(
                    key: EtcdWire.encode(try etcdKey(key)), revision: pinned.map { String($0) }))
            }
            let request = EtcdWire.TxnRequest(compare: [], success: operations, failure: [])
            let response = try await read("v3/kv/txn", body: request, as: EtcdWire.TxnResponse.self)
            let revision = try observe(response.header)
            if pinned == nil { pinned = revision }
            let ranges = response.responses ?? []
            guard ranges.count == chunk.count else {
                throw KeyValueStoreError.unavailable("etcd answered \(ranges.count) reads for \(chunk.count) keys")
            }
            for range in ranges {
                entries.append(try range.responseRange?.kvs?.first.map { try $0.entry(droppingNamespace: namespace.count) })
            }
            start += chunkSize
        } while start < keys.count
        return (entries, pinned ?? 0)
    }

    public func scan(_ range: KeyRange, direction: ScanDirection, limit: Int) async throws -> [KeyValueEntry] {
        try checkOpen()
        guard limit > 0, let (key, end) = etcdRange(range) else { return [] }
        // Ascending key order is etcd's natural order; asking for it explicitly would make etcd drop the limit.
        let request = EtcdWire.RangeRequest(
            key: EtcdWire.encode(key), rangeEnd: EtcdWire.encode(end), limit: String(limit),
            sortOrder: direction == .backward ? "DESCEND" : nil, sortTarget: direction == .backward ? "KEY" : nil)
        let response = try await read("v3/kv/range", body: request, as: EtcdWire.RangeResponse.self)
        try observe(response.header)
        let marker = namespace
        return try (response.kvs ?? []).compactMap { kv in
            let entry = try kv.entry(droppingNamespace: marker.count)
            return entry.key.isEmpty ? nil : entry
        }
    }

    /// The cluster's current revision, from a count-only read of one key of the namespace: every change of the
    /// namespace visible to reads has a revision at or below it, every later one a larger revision. etcd's revisions
    /// are cluster-wide, so a watch from it is never refused as compacted, whatever other tenants wrote meanwhile.
    public func currentRevision() async throws -> UInt64 {
        let request = EtcdWire.RangeRequest(key: EtcdWire.encode(namespace + [0]), countOnly: true)
        let response = try await read("v3/kv/range", body: request, as: EtcdWire.RangeResponse.self)
        return try observe(response.header)
    }

    // MARK: Updates

    /// Runs the contract's optimistic update while holding this process's writer lock, so updates from one process
    /// take turns instead of conflicting; updates from other processes are still caught by the read conditions.
    public func update<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value> {
        try checkOpen()
        return try await writerLock.withLockUnlessCancelled { try await optimisticUpdate(body) }
    }

    // MARK: Lifecycle

    /// Closes the store: every watch ends, every request in flight is aborted (one that had sent nothing, or a read,
    /// fails with ``KeyValueStoreError/closed``; a sent commit's outcome is reported as unknown), and this returns
    /// once each has ended. Further calls fail with ``KeyValueStoreError/closed``.
    public func close() async throws {
        let watchers = state.withLock { state in
            state.closed = true
            defer { state.watchers.removeAll() }
            return Array(state.watchers.values)
        }
        for watcher in watchers { watcher.finish(throwing: nil) }
        await transport.invalidate()
    }

    /// Deletes every key of this store's namespace, including its revision marker (for tests and decommissioning).
    /// Refuses to run without a namespace, where it would empty the whole cluster.
    public func removeAllKeys() async throws {
        try checkOpen()
        guard !namespace.isEmpty else {
            throw KeyValueStoreError.unavailable("removeAllKeys needs a namespace; it would empty the whole cluster")
        }
        let request = EtcdWire.DeleteRangeRequest(key: EtcdWire.encode(namespace), rangeEnd: EtcdWire.encode(namespaceEnd))
        _ = try await read("v3/kv/deleterange", body: request, as: EtcdWire.Empty.self)
    }
}
