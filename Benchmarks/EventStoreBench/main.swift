// EventStoreBench: the event-store workloads of ../shared/bench/sqlite_events.c, on the default page-file engine
// with full durability, through the public API only. Run in a release build:
//
//     swift run -c release EventStoreBench all --dir "$(mktemp -d)" --json
//
// Each workload mirrors the SQLite program exactly (256-byte payloads, event type "Deposited", exact expected
// versions). Figures are compared as ratios against SQLite run on the same machine in the same session.

import EventStore
import EventStoreKV
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

struct Options {
    var workload = ""
    var directory = ""
    var json = false
    /// Multiplies every workload's size; the test suite's smoke test runs at a tiny scale.
    var scale = 1.0
    /// The page size of the engine, to compare page sizes; the engine's default unless given.
    var pageSize: Int?
    /// The page cache size of the engine, to see what memory buys; the engine's default unless given.
    var cacheSizeMB: Int?
    /// How many times read-stream and read-all time their read (the first is reported); more runs give a profiler
    /// something to sample besides the setup.
    var repeatReads = 1
    /// Whether read-stream and read-all use the array-returning reads (a RecordedEvent and a payload copy per event)
    /// instead of the visiting reads that lend each event in place, as SQLite's cursor lends its columns.
    var copyingReads = false
}

struct Measurement {
    var workload: String
    var events: Int
    var seconds: Double
    var peakRSSMegabytes: Int
    var eventsPerSecond: Double { seconds > 0 ? Double(events) / seconds : 0 }
}

let workloads = ["append-single", "append-batch", "append-concurrent", "read-stream", "read-all"]
let payload = Data(repeating: UInt8(ascii: "e"), count: 256)

func usageText() -> String {
    """
    usage: EventStoreBench <workload> --dir <empty dir> [--json] [--scale F] [--page-size BYTES] [--cache-mb MB]
                          [--repeat-reads N] [--copying-reads]
    workloads: \(workloads.joined(separator: ", ")), all
    """
}

func parse(_ arguments: [String]) throws -> Options {
    var options = Options()
    var rest = arguments.makeIterator()
    while let argument = rest.next() {
        switch argument {
        case "--dir":
            guard let value = rest.next() else { throw BenchError.usage("--dir needs a directory") }
            options.directory = value
        case "--json": options.json = true
        case "--scale":
            guard let value = rest.next(), let scale = Double(value), scale > 0, scale <= 1 else {
                throw BenchError.usage("--scale needs a number in (0, 1]")
            }
            options.scale = scale
        case "--repeat-reads":
            guard let value = rest.next(), let count = Int(value), count >= 1 else {
                throw BenchError.usage("--repeat-reads needs a positive count")
            }
            options.repeatReads = count
        case "--copying-reads": options.copyingReads = true
        case "--cache-mb":
            guard let value = rest.next(), let megabytes = Int(value), megabytes >= 1 else {
                throw BenchError.usage("--cache-mb needs a whole number of megabytes, at least 1")
            }
            options.cacheSizeMB = megabytes
        case "--page-size":
            guard let value = rest.next(), let size = Int(value) else {
                throw BenchError.usage("--page-size needs a number of bytes (4096 to 65536, a power of two)")
            }
            options.pageSize = size
        case "-h", "--help": throw BenchError.help
        default:
            guard options.workload.isEmpty, !argument.hasPrefix("-") else {
                throw BenchError.usage("unexpected argument \(argument)")
            }
            options.workload = argument
        }
    }
    guard workloads.contains(options.workload) || options.workload == "all" else {
        throw BenchError.usage(options.workload.isEmpty ? "missing workload" : "unknown workload \(options.workload)")
    }
    guard !options.directory.isEmpty else { throw BenchError.usage("--dir is required") }
    return options
}

enum BenchError: Error, CustomStringConvertible {
    case usage(String)
    case help
    case failed(String)

    var description: String {
        switch self {
        case .usage(let detail): "\(detail)\n\(usageText())"
        case .help: usageText()
        case .failed(let detail): detail
        }
    }
}

/// The peak resident set size of this process so far, from /proc/self/status (VmHWM), in MiB.
func peakRSSMegabytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
        let kilobytes = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kilobytes / 1024
    }
    return 0
}

/// Resets the peak RSS counter so each workload reports its own peak (Linux: write 5 to clear_refs).
func resetPeakRSS() {
    try? "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
}

func progress(_ text: String) {
    FileHandle.standardError.write(Data("\(text)\n".utf8))
}

func event() -> EventData { EventData(type: "Deposited", data: payload) }

func timed(_ body: () async throws -> Void) async rethrows -> Double {
    let clock = ContinuousClock()
    let start = clock.now
    try await body()
    let elapsed = clock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

func scaled(_ count: Int, _ options: Options) -> Int { max(1, Int((Double(count) * options.scale).rounded())) }

/// Opens the store a workload runs on: the default engine on `directory`, with full durability.
func openStore(_ directory: String, _ options: Options) async throws -> KeyValueEventStore {
    var engine = PageFileOptions()
    if let cacheSizeMB = options.cacheSizeMB { engine.cacheSizeMB = cacheSizeMB }
    if let pageSize = options.pageSize { engine.pageSize = pageSize }
    return KeyValueEventStore(backend: try await PageFileKeyValueStore.open(directory: directory, options: engine))
}

func appendSingle(_ store: KeyValueEventStore, _ options: Options) async throws -> Measurement {
    let count = scaled(10_000, options)
    let streams = try (0..<100).map { try StreamName("account-\($0)") }
    var versions = [UInt64](repeating: 0, count: 100)
    let seconds = try await timed {
        for index in 0..<count {
            let slot = index % 100
            versions[slot] = try await store.append(
                [event()], to: streams[slot], expectedVersion: .exact(versions[slot])).version
            if index % 2_000 == 1_999 { progress("append-single: \(index + 1)/\(count)") }
        }
    }
    printEngineMetrics(store, "after append-single")
    return Measurement(workload: "append-single", events: count, seconds: seconds, peakRSSMegabytes: peakRSSMegabytes())
}

func appendBatch(_ store: KeyValueEventStore, _ options: Options) async throws -> Measurement {
    let appends = scaled(1_000, options)
    let streams = try (0..<100).map { try StreamName("batch-\($0)") }
    var versions = [UInt64](repeating: 0, count: 100)
    let seconds = try await timed {
        for index in 0..<appends {
            let slot = index % 100
            let batch = (0..<100).map { _ in event() }
            versions[slot] = try await store.append(
                batch, to: streams[slot], expectedVersion: .exact(versions[slot])).version
            if index % 200 == 199 { progress("append-batch: \(index + 1)/\(appends)") }
        }
    }
    printEngineMetrics(store, "after append-batch")
    return Measurement(
        workload: "append-batch", events: appends * 100, seconds: seconds, peakRSSMegabytes: peakRSSMegabytes())
}

func appendConcurrent(_ store: KeyValueEventStore, _ options: Options) async throws -> Measurement {
    let perWriter = scaled(2_000, options)
    let seconds = try await timed {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<8 {
                group.addTask {
                    let stream = try StreamName("writer-\(writer)")
                    for version in 0..<perWriter {
                        _ = try await store.append([event()], to: stream, expectedVersion: .exact(UInt64(version)))
                    }
                }
            }
            try await group.waitForAll()
        }
    }
    printEngineMetrics(store, "after append-concurrent")
    return Measurement(
        workload: "append-concurrent", events: 8 * perWriter, seconds: seconds, peakRSSMegabytes: peakRSSMegabytes())
}

/// Writes the 100,000-event stream that read-stream and read-all time.
func writeBigStream(_ store: KeyValueEventStore, _ options: Options) async throws -> (StreamName, Int) {
    let stream = try StreamName("big")
    let batches = scaled(100, options)
    for index in 0..<batches {
        _ = try await store.append(
            (0..<1_000).map { _ in event() }, to: stream, expectedVersion: .exact(UInt64(index * 1_000)))
        if index % 20 == 19 { progress("read-stream setup: \(index + 1)/\(batches) batches") }
    }
    return (stream, batches * 1_000)
}

/// Times one full forward read of the big stream. Every payload is touched: its length and its last byte are added
/// to a check that must come out as expected.
func readStream(_ store: KeyValueEventStore, stream: StreamName, expected: Int, _ options: Options) async throws
    -> Measurement
{
    var touched = 0
    var count = 0
    let seconds = try await timed {
        if options.copyingReads {
            let events = try await store.read(stream, from: .start, direction: .forward, limit: .max)
            for event in events { touched &+= event.data.count &+ Int(event.data.last ?? 0); count += 1 }
        } else {
            _ = try await store.read(stream, from: .start, direction: .forward, limit: .max) { event in
                touched &+= event.data.count &+ Int(event.data.last ?? 0)
                count += 1
                return true
            }
        }
    }
    guard count == expected, touched == expected * (payload.count + Int(payload.last ?? 0)) else {
        throw BenchError.failed("read-stream read \(count) events (payload check \(touched)), expected \(expected)")
    }
    return Measurement(workload: "read-stream", events: count, seconds: seconds, peakRSSMegabytes: peakRSSMegabytes())
}

/// With EVENTSTORE_BENCH_METRICS=1 in the environment, prints the engine's counters to stderr (cache hits and
/// misses, fsyncs, checkpoints), to tell what bounds a figure.
func printEngineMetrics(_ store: KeyValueEventStore, _ label: String) {
    guard ProcessInfo.processInfo.environment["EVENTSTORE_BENCH_METRICS"] == "1",
        let engine = store.backend as? PageFileKeyValueStore
    else { return }
    let metrics = engine.metrics()
    progress(
        "\(label): commits \(metrics.commits), fsyncs \(metrics.fsyncs), checkpoints \(metrics.checkpoints), "
            + "checkpoint time \(metrics.checkpointDuration), WAL bytes written \(metrics.walBytesWritten), "
            + "cache hits \(metrics.cacheHits), misses \(metrics.cacheMisses)")
}

/// Times one full read of the global log, touching every payload as readStream does.
func readAll(_ store: KeyValueEventStore, expected: Int, _ options: Options) async throws -> Measurement {
    var touched = 0
    var count = 0
    printEngineMetrics(store, "before read-all")
    defer { printEngineMetrics(store, "after read-all") }
    let seconds = try await timed {
        if options.copyingReads {
            let events = try await store.readAll(from: 1, limit: .max)
            for event in events { touched &+= event.data.count &+ Int(event.data.last ?? 0); count += 1 }
        } else {
            _ = try await store.readAll(from: 1, limit: .max) { event in
                touched &+= event.data.count &+ Int(event.data.last ?? 0)
                count += 1
                return true
            }
        }
    }
    guard count == expected, touched == expected * (payload.count + Int(payload.last ?? 0)) else {
        throw BenchError.failed("read-all read \(count) events, expected \(expected)")
    }
    return Measurement(workload: "read-all", events: count, seconds: seconds, peakRSSMegabytes: peakRSSMegabytes())
}

/// Runs one workload (read-stream and read-all share their setup) in a fresh directory under `root`.
func run(_ workload: String, root: String, _ options: Options) async throws -> [Measurement] {
    let directory = (root as NSString).appendingPathComponent(workload)
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    resetPeakRSS()
    let store = try await openStore(directory, options)
    defer { Task { try? await store.close() } }
    switch workload {
    case "append-single": return [try await appendSingle(store, options)]
    case "append-batch": return [try await appendBatch(store, options)]
    case "append-concurrent": return [try await appendConcurrent(store, options)]
    case "read-stream":
        let (stream, count) = try await writeBigStream(store, options)
        let first = try await readStream(store, stream: stream, expected: count, options)
        try await repeatRead(first, options) { try await readStream(store, stream: stream, expected: count, options) }
        return [first]
    case "read-all":
        let (_, count) = try await writeBigStream(store, options)
        let first = try await readAll(store, expected: count, options)
        try await repeatRead(first, options) { try await readAll(store, expected: count, options) }
        return [first]
    default: throw BenchError.usage("unknown workload \(workload)")
    }
}

/// Runs a read workload's timed read again, --repeat-reads times in all, and prints the best rate to stderr (the best
/// of several is the figure least disturbed by other work on the machine, for comparing two builds).
func repeatRead(_ first: Measurement, _ options: Options, _ read: () async throws -> Measurement) async throws {
    guard options.repeatReads > 1 else { return }
    var best = first.eventsPerSecond
    for _ in 1..<options.repeatReads { best = max(best, try await read().eventsPerSecond) }
    progress("\(first.workload): best of \(options.repeatReads) reads: \(Int(best)) events/s")
}

func report(_ measurement: Measurement, json: Bool) {
    if json {
        let line =
            "{\"workload\":\"\(measurement.workload)\",\"events\":\(measurement.events),"
            + "\"seconds\":\(String(format: "%.6f", measurement.seconds)),"
            + "\"events_per_sec\":\(Int(measurement.eventsPerSecond.rounded())),"
            + "\"peak_rss_mb\":\(measurement.peakRSSMegabytes)}"
        print(line)
    } else {
        let name = measurement.workload.padding(toLength: 18, withPad: " ", startingAt: 0)
        let events = String(measurement.events).leftPadded(to: 9)
        let seconds = String(format: "%.3f", measurement.seconds).leftPadded(to: 9)
        let rate = String(Int(measurement.eventsPerSecond.rounded())).leftPadded(to: 12)
        let rss = String(measurement.peakRSSMegabytes).leftPadded(to: 8)
        print("\(name) \(events) \(seconds) \(rate) \(rss)")
    }
}

extension String {
    func leftPadded(to width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}

let options: Options
do {
    options = try parse(Array(CommandLine.arguments.dropFirst()))
} catch BenchError.help {
    print(usageText())
    exit(0)
} catch {
    FileHandle.standardError.write(Data("EventStoreBench: \(error)\n".utf8))
    exit(2)
}

var root = options.directory
var isDirectory: ObjCBool = false
if FileManager.default.fileExists(atPath: root, isDirectory: &isDirectory) {
    let contents = (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []
    guard isDirectory.boolValue, contents.isEmpty else {
        FileHandle.standardError.write(Data("EventStoreBench: --dir must be an empty directory: \(root)\n".utf8))
        exit(2)
    }
}
let selected = options.workload == "all" ? workloads : [options.workload]
if !options.json {
    print("workload              events   seconds   events/sec  peakMB")
}
do {
    for workload in selected {
        for measurement in try await run(workload, root: root, options) { report(measurement, json: options.json) }
    }
} catch {
    FileHandle.standardError.write(Data("EventStoreBench: \(error)\n".utf8))
    exit(1)
}
