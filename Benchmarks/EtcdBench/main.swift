// EtcdBench: append throughput of the event store on an etcd cluster, through the public API only. Run in a
// release build against a running cluster (each run uses a fresh namespace and removes it afterwards):
//
//     scripts/etcd-cluster.sh start
//     swift run -c release EtcdBench "$ETCD_ENDPOINTS" [events]
//
// Workloads (256-byte payloads, like EventStoreBench): append-single (one event per append, one writer),
// append-batch (100 events per append), append-concurrent (16 tasks of one process, one stream each).

import EventStore
import EventStoreKV
import Foundation

let payload = Data(repeating: UInt8(ascii: "e"), count: 256)

func event() -> EventData { EventData(type: "Deposited", data: payload) }

func makeStore(_ endpoints: String) throws -> (KeyValueEventStore, EtcdKeyValueStore) {
    let backend = try EtcdKeyValueStore(configuration: EtcdConfiguration(
        endpoints: try EtcdConfiguration.endpoints(parsing: endpoints),
        namespace: Array("bench/\(UUID().uuidString)/".utf8),
        maximumTransactionOperations: 10_000, maximumRequestBytes: 10 << 20))
    return (KeyValueEventStore(backend: backend), backend)
}

func measure(_ name: String, events: Int, endpoints: String, _ body: (KeyValueEventStore) async throws -> Void)
    async throws
{
    let (store, backend) = try makeStore(endpoints)
    let clock = ContinuousClock()
    let started = clock.now
    try await body(store)
    let elapsed = clock.now - started
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    let rate = Double(events) / seconds
    print("\(name): \(events) events in \(String(format: "%.2f", seconds)) s = \(Int(rate)) events/s")
    try await backend.removeAllKeys()
    try await store.close()
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    FileHandle.standardError.write(Data("usage: EtcdBench <endpoints> [events]\n".utf8))
    exit(2)
}
let endpoints = arguments[1]
let count = arguments.count > 2 ? Int(arguments[2]) ?? 2_000 : 2_000

do {
    try await measure("append-single", events: count, endpoints: endpoints) { store in
        let stream = try StreamName("single")
        for version in 0..<count {
            _ = try await store.append([event()], to: stream, expectedVersion: .exact(UInt64(version)))
        }
    }
    try await measure("append-batch (100 per append)", events: count * 5, endpoints: endpoints) { store in
        let stream = try StreamName("batch")
        for _ in 0..<(count * 5 / 100) {
            _ = try await store.append((0..<100).map { _ in event() }, to: stream, expectedVersion: .any)
        }
    }
    let writers = 16
    try await measure("append-concurrent (\(writers) tasks)", events: count, endpoints: endpoints) { store in
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
} catch {
    FileHandle.standardError.write(Data("EtcdBench failed: \(error)\n".utf8))
    exit(1)
}
