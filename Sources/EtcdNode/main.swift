// EtcdNode: one application node of the etcd multi-node tests, run as its own process so that two nodes share
// nothing but the cluster. Every line it prints is a fact the test checks; it never decides pass or fail itself.
//
//   EtcdNode hold   <endpoints> <namespace> <stream> <session seconds>   prints HELD, then renews until killed
//   EtcdNode open   <endpoints> <namespace> <stream> <open seconds>      prints OPENED or LOCKED <holder>
//   EtcdNode append <endpoints> <namespace> <stream,stream,...> <count> <label>
//                   prints ACK <stream> <version> <position> <event id> per acknowledged append

import EventStore
import EventStoreKV
import Foundation
import ProcessSupport

func say(_ line: String) {
    FileHandle.standardOutput.write(Data((line + "\n").utf8))
}

func makeStore(_ endpoints: String, _ namespace: String) throws -> KeyValueEventStore {
    let backend = try EtcdKeyValueStore(configuration: EtcdConfiguration(
        endpoints: try EtcdConfiguration.endpoints(parsing: endpoints), namespace: Array(namespace.utf8),
        maximumTransactionOperations: 10_000, maximumRequestBytes: 10 << 20))
    return KeyValueEventStore(backend: backend)
}

func hold(_ store: KeyValueEventStore, stream: StreamName, seconds: Int) async throws {
    let session = try await store.openSession(on: stream, sessionTimeout: .seconds(seconds), openTimeout: .zero)
    say("HELD \(session.id)")
    while true {
        try await Task.sleep(for: .seconds(seconds) / 3)
        try await session.renew()
    }
}

func open(_ store: KeyValueEventStore, stream: StreamName, seconds: Int) async throws {
    do {
        let session = try await store.openSession(on: stream, sessionTimeout: .seconds(30), openTimeout: .seconds(seconds))
        say("OPENED \(session.id)")
        try await session.close()
    } catch EventStoreError.streamLocked(_, let holder, _) {
        say("LOCKED \(holder)")
    }
}

func append(_ store: KeyValueEventStore, streams: [StreamName], count: Int, label: String) async throws {
    for index in 0..<count {
        let stream = streams[index % streams.count]
        let event = EventData(type: "Appended", data: Data("\(label)-\(index)".utf8))
        // Re-sending the same event id is idempotent, so an append whose outcome was unknown can be retried.
        var attempts = 0
        while true {
            do {
                let result = try await store.append([event], to: stream, expectedVersion: .any)
                say("ACK \(stream) \(result.version) \(result.positions.lowerBound) \(event.id)")
                break
            } catch {
                attempts += 1
                say("RETRY \(error)")
                if attempts > 20 { throw error }
            }
        }
    }
    say("DONE")
}

// A test run that dies must not leave this child running (and holding its output open).
ParentWatch.exitWhenParentExits()
let arguments = CommandLine.arguments
guard arguments.count >= 6 else {
    FileHandle.standardError.write(Data("usage: EtcdNode hold|open|append <endpoints> <namespace> ...\n".utf8))
    exit(2)
}
do {
    let store = try makeStore(arguments[2], arguments[3])
    switch arguments[1] {
    case "hold": try await hold(store, stream: try StreamName(arguments[4]), seconds: Int(arguments[5]) ?? 3)
    case "open": try await open(store, stream: try StreamName(arguments[4]), seconds: Int(arguments[5]) ?? 0)
    case "append":
        let streams = try arguments[4].split(separator: ",").map { try StreamName(String($0)) }
        try await append(store, streams: streams, count: Int(arguments[5]) ?? 10, label: arguments.count > 6 ? arguments[6] : "node")
    default:
        FileHandle.standardError.write(Data("unknown mode \(arguments[1])\n".utf8))
        exit(2)
    }
    try await store.close()
} catch {
    say("FAILED \(error)")
    exit(1)
}
