// One contract transaction as one etcd Txn: conditions become compares, writes become puts and deletes in the
// success branch, and the failure branch reads every condition's key so the first failed condition can be named.
//
// Invariants:
// - The mapping is exact: absent(k) is CREATE == 0; present(k) is VERSION > 0; version(k, v) is VERSION == v;
//   modRevision(k, r) is MOD == r. A version or mod revision of 0 can never match a live key, so those conditions
//   become a compare that is never true (VERSION < 0) instead of etcd's "0 means absent".
// - etcd refuses two writes to one key in a Txn; the contract says the later write wins, so only each key's last
//   write is sent. The namespace's revision marker is written by every transaction (see EtcdKeyValueStore).
// - The transaction is checked against the configured --max-txn-ops and --max-request-bytes before anything is
//   sent or any lease granted; it is never split, since that would break its atomicity.

import Foundation

struct EtcdTransaction {
    /// The keys of the puts, with the values written, for reading back an unknown outcome.
    var puts: [(key: Key, value: [UInt8])] = []
    /// Whether a failed compare guarantees that this transaction cannot commit twice: a condition its own commit makes
    /// false for good. Only a mod-revision condition on a key it puts or deletes is one (revisions never repeat). An
    /// absence condition proves nothing: a delete of the key, in this transaction or by another writer after the
    /// first attempt committed, makes it hold again, and a version or presence condition can hold again the same way.
    var failsIfRepeated = false
    var request: EtcdWire.TxnRequest
    var grantedLeases: [Int64] = []

    /// Builds the request, granting one lease per TTL put.
    static func make(_ transaction: KeyValueTransaction, store: EtcdKeyValueStore) async throws -> EtcdTransaction {
        let writes = lastWritePerKey(transaction.writes)
        try checkSize(transaction, writes: writes, limits: store.configuration)
        let compares = try transaction.conditions.map { try compare($0, store: store) }
        let failure = try transaction.conditions.map { condition in
            EtcdWire.RequestOp(requestRange: EtcdWire.RangeRequest(
                key: EtcdWire.encode(try store.etcdKey(condition.key)), keysOnly: true))
        }
        var built = EtcdTransaction(request: EtcdWire.TxnRequest(compare: compares, success: [], failure: failure))
        let written = Set(writes.map(\.key))
        built.failsIfRepeated = transaction.conditions.contains { condition in
            guard case .modRevision(let key, _) = condition else { return false }
            return written.contains(key)
        }
        do {
            for write in writes { built.request.success.append(try await built.operation(for: write, store: store)) }
        } catch {
            store.leases.revokeLater(built.grantedLeases)
            throw error
        }
        if !store.namespace.isEmpty {
            built.request.success.append(EtcdWire.RequestOp(requestPut: EtcdWire.PutRequest(
                key: EtcdWire.encode(store.namespace), value: "")))
        }
        return built
    }

    private mutating func operation(for write: KeyWrite, store: EtcdKeyValueStore) async throws -> EtcdWire.RequestOp {
        switch write {
        case .put(let key, let value, let ttl):
            var lease: String?
            if let ttl {
                let id = try await store.leases.grant(ttl: ttl)
                grantedLeases.append(id)
                lease = String(id)
            }
            puts.append((key, value))
            return EtcdWire.RequestOp(requestPut: EtcdWire.PutRequest(
                key: EtcdWire.encode(try store.etcdKey(key)), value: EtcdWire.encode(value), lease: lease, prevKV: true))
        case .delete(let key):
            return EtcdWire.RequestOp(requestDeleteRange: EtcdWire.DeleteRangeRequest(
                key: EtcdWire.encode(try store.etcdKey(key)), prevKV: true))
        }
    }

    static func lastWritePerKey(_ writes: [KeyWrite]) -> [KeyWrite] {
        var last: [Key: Int] = [:]
        for (index, write) in writes.enumerated() { last[write.key] = index }
        return writes.enumerated().filter { last[$0.element.key] == $0.offset }.map(\.element)
    }

    static func compare(_ condition: KeyCondition, store: EtcdKeyValueStore) throws -> EtcdWire.Compare {
        let key = EtcdWire.encode(try store.etcdKey(condition.key))
        switch condition {
        case .absent:
            return EtcdWire.Compare(result: "EQUAL", target: "CREATE", key: key, createRevision: "0")
        case .present:
            return EtcdWire.Compare(result: "GREATER", target: "VERSION", key: key, version: "0")
        case .version(_, let version) where version > 0:
            return EtcdWire.Compare(result: "EQUAL", target: "VERSION", key: key, version: String(version))
        case .modRevision(_, let revision) where revision > 0:
            return EtcdWire.Compare(result: "EQUAL", target: "MOD", key: key, modRevision: String(revision))
        case .version, .modRevision:
            return EtcdWire.Compare(result: "LESS", target: "VERSION", key: key, version: "0")
        }
    }

    /// Rough protobuf size: key and value bytes plus a small overhead per operation.
    static func estimatedBytes(_ transaction: KeyValueTransaction, writes: [KeyWrite], namespace: Int) -> Int {
        let conditionBytes = transaction.conditions.reduce(0) { $0 + 2 * ($1.key.count + namespace + 24) }
        let writeBytes = writes.reduce(0) { total, write in
            switch write {
            case .put(let key, let value, _): total + key.count + namespace + value.count + 32
            case .delete(let key): total + key.count + namespace + 16
            }
        }
        return conditionBytes + writeBytes + 64
    }

    static func checkSize(_ transaction: KeyValueTransaction, writes: [KeyWrite], limits: EtcdConfiguration) throws {
        let operations = writes.count + 1
        let bytes = estimatedBytes(transaction, writes: writes, namespace: limits.namespace.count)
        if operations > limits.maximumTransactionOperations || transaction.conditions.count > limits.maximumTransactionOperations {
            throw KeyValueStoreError.transactionTooLarge(
                operations: max(operations, transaction.conditions.count), bytes: bytes,
                limit: "etcd's --max-txn-ops of \(limits.maximumTransactionOperations) operations per transaction")
        }
        if bytes > limits.maximumRequestBytes {
            throw KeyValueStoreError.transactionTooLarge(
                operations: operations, bytes: bytes,
                limit: "etcd's --max-request-bytes of \(limits.maximumRequestBytes) bytes per request")
        }
    }
}
