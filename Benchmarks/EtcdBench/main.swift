// EtcdBench: append throughput of the event store on an etcd cluster, through the public API only. Run in a
// release build against a running cluster (each run uses a fresh namespace and removes it afterwards):
//
//     scripts/etcd-cluster.sh start
//     swift build -c release --product EtcdBench
//     .build/release/EtcdBench "$ETCD_ENDPOINTS" [events] [workload ...]
//
// Workloads (256-byte payloads, like EventStoreBench; all of them when none is named):
//   single      one event per append, one writer, expected version checked
//   batch       100 events per append (5 x events in all)
//   concurrent  16 tasks of one process, one stream each, one event per append
//   get         one key-value read of one key: the client's round trip for a linearizable read
//   commit      one key-value transaction of one put: the round trip for a write through Raft
// An append is one batch read (heads, lease, event ids) and one transaction, so `get` + `commit` bound `single`.

import EventStore
import EventStoreKV
import Foundation

let payload = Data(repeating: UInt8(ascii: "e"), count: 256)

func event() -> EventData { EventData(type: "Deposited", data: payload) }

func makeBackend(_ endpoints: String) throws -> EtcdKeyValueStore {
    try EtcdKeyValueStore(configuration: EtcdConfiguration(
        endpoints: try EtcdConfiguration.endpoints(parsing: endpoints),
        namespace: Array("bench/\(UUID().uuidString)/".utf8),
        maximumTransactionOperations: 10_000, maximumRequestBytes: 10 << 20))
}

/// Runs `body` on a fresh namespace and prints its rate in `unit`s per second.
func measure(
    _ name: String, count: Int, unit: String = "events", endpoints: String,
    _ body: (KeyValueEventStore, EtcdKeyValueStore) async throws -> Void
) async throws {
    let backend = try makeBackend(endpoints)
    let store = KeyValueEventStore(backend: backend)
    let clock = ContinuousClock()
    let started = clock.now
    try await body(store, backend)
    let elapsed = clock.now - started
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let rate = Double(count) / seconds
    let each = seconds / Double(count) * 1000
    print("\(name): \(count) \(unit) in \(String(format: "%.2f", seconds)) s = \(Int(rate)) \(unit)/s "
        + "(\(String(format: "%.2f", each)) ms each)")
    try await backend.removeAllKeys()
    try await store.close()
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    FileHandle.standardError.write(Data("usage: EtcdBench <endpoints> [events] [single|batch|concurrent|get|commit ...]\n".utf8))
    exit(2)
}
let endpoints = arguments[1]
let count = arguments.count > 2 ? Int(arguments[2]) ?? 2_000 : 2_000
let known = ["single", "batch", "concurrent", "get", "commit"]
let chosen = arguments.count > 3 ? Array(arguments[3...]) : known
if let unknown = chosen.first(where: { !known.contains($0) }) {
    FileHandle.standardError.write(Data("unknown workload \(unknown); known: \(known.joined(separator: " "))\n".utf8))
    exit(2)
}

do {
    if chosen.contains("single") {
        try await measure("append-single", count: count, endpoints: endpoints) { store, _ in
            let stream = try StreamName("single")
            for version in 0..<count {
                _ = try await store.append([event()], to: stream, expectedVersion: .exact(UInt64(version)))
            }
        }
    }
    if chosen.contains("batch") {
        try await measure("append-batch (100 per append)", count: count * 5, endpoints: endpoints) { store, _ in
            let stream = try StreamName("batch")
            for _ in 0..<(count * 5 / 100) {
                _ = try await store.append((0..<100).map { _ in event() }, to: stream, expectedVersion: .any)
            }
        }
    }
    if chosen.contains("concurrent") {
        let writers = 16
        try await measure("append-concurrent (\(writers) tasks)", count: count, endpoints: endpoints) { store, _ in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for writer in 0..<writers {
                    group.addTask {
                        let stream = try StreamName("writer-\(writer)")
                        for _ in 0..<(count / writers) {
                            _ = try await store.append([event()], to: stream, expectedVersion: .any)
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
    }
    if chosen.contains("get") {
        try await measure("kv-get (one key)", count: count, unit: "reads", endpoints: endpoints) { _, backend in
            _ = try await backend.commit(KeyValueTransaction(writes: [.put(Array("k".utf8), Array(payload))]))
            for _ in 0..<count { _ = try await backend.get(Array("k".utf8)) }
        }
    }
    if chosen.contains("commit") {
        try await measure("kv-commit (one put)", count: count, unit: "commits", endpoints: endpoints) { _, backend in
            for index in 0..<count {
                _ = try await backend.commit(KeyValueTransaction(writes: [.put(Array("k\(index)".utf8), Array(payload))]))
            }
        }
    }
} catch {
    FileHandle.standardError.write(Data("EtcdBench failed: \(error)\n".utf8))
    exit(1)
}
