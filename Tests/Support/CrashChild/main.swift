// CrashChild: the process the crash tests kill. It appends numbered transactions to a page-file event store and
// prints "ack <n>" after each append returns, so the parent knows exactly what was acknowledged.
//
// Invariants the parent relies on:
// - Transaction n appends 1 + n % 3 events to stream "crash-<n % 4>"; each event's payload starts with the text
//   "<n>:<index>:<count>:" and is padded to a size that depends on n (some payloads need overflow pages).
// - Transactions are attempted strictly in order, continuing after the highest one already stored, so the stored
//   state must always be a prefix of the attempted sequence.
// - "ack n" is printed (and flushed) only after append n returned.
//
// Usage: CrashChild <directory> <max transactions>   (EVENTSTORE_FAILPOINT selects a failpoint;
//        CRASH_DURABILITY=deferred|none selects a weaker durability mode)

import EventStore
import EventStoreKV
import Foundation
import ProcessSupport

/// The payload of event `index` of `count` in transaction `number`.
func payload(transaction number: Int, index: Int, count: Int) -> Data {
    var bytes = Array("\(number):\(index):\(count):".utf8)
    let size = number % 7 == 0 ? 6_000 : 40 + number % 200
    while bytes.count < size { bytes.append(UInt8(truncatingIfNeeded: number &+ bytes.count)) }
    return Data(bytes)
}

/// The transaction number stored in the last event of the log, or -1 for an empty store.
func lastTransaction(_ store: KeyValueEventStore) async throws -> Int {
    let last = try await store.lastPosition()
    guard last > 0, let event = try await store.readAll(from: last, limit: 1).first else { return -1 }
    let text = String(decoding: event.data.prefix(32), as: UTF8.self)
    return Int(text.split(separator: ":")[0]) ?? -1
}

// A test run that dies must not leave this child running (and holding its output open).
ParentWatch.exitWhenParentExits()
let arguments = CommandLine.arguments
guard arguments.count >= 3, let maximum = Int(arguments[2]) else {
    FileHandle.standardError.write(Data("usage: CrashChild <directory> <max transactions>\n".utf8))
    exit(2)
}
var options = PageFileOptions(pageSize: 4096, cacheSizeMB: 1, checkpointThresholdMB: 1)
options.historyLimit = 1_000
switch ProcessInfo.processInfo.environment["CRASH_DURABILITY"] {
case "deferred": options.durability = .deferred(maximumDelay: .milliseconds(20))
case "none": options.durability = .none
default: break
}
do {
    let store = try KeyValueEventStore.open(directory: arguments[1], options: options)
    var number = try await lastTransaction(store) + 1
    let end = number + maximum
    while number < end {
        let count = 1 + number % 3
        let events = (0..<count).map { index in
            EventData(type: "Crash", data: payload(transaction: number, index: index, count: count))
        }
        _ = try await store.append(events, to: try StreamName("crash-\(number % 4)"), expectedVersion: .any)
        FileHandle.standardOutput.write(Data("ack \(number)\n".utf8))
        number += 1
    }
    try await store.close()
    FileHandle.standardOutput.write(Data("done\n".utf8))
} catch {
    FileHandle.standardError.write(Data("CrashChild failed: \(error)\n".utf8))
    exit(1)
}
