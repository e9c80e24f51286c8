// Power-loss tests: power cuts simulated from a recording of every file mutation of a store (IORecorder, FileIO.swift).
//
// The SIGKILL crash tests (CrashTests.swift) leave every write in the OS page cache, so they cannot see a missing or
// misordered fdatasync. Here a workload runs on a store whose fault plan records, in one global order, every write,
// truncate and fdatasync of a file, and every create, rename, remove and fsync in the directory. A power cut after
// event N is then built the way SQLite's crash VFS (test6.c) and LevelDB's fault-injection Env do it: each file keeps
// its durable image (what its last fdatasync covered) plus an arbitrary subset of the writes and truncates pending
// since then, each kept whole, dropped, or torn (only some of its 512-byte sectors kept); the directory keeps its
// durable entries plus a prefix of the creates, renames and removes since its last fsync (so compaction's rename of
// data.compact over data is durable only once the directory is synced, and may or may not have reached the disk
// before). The crashed files are written into a fresh directory and opened writable: the store must open, verify()
// must find nothing, and the state must be exactly the state after some prefix of the commit order (commits are
// serialised by the writer: revision r is the r-th commit) that includes every commit acknowledged at or before N.
//
// Steady state only: the store is created, closed and reopened with the recorder, so the directory and its files
// data, wal and lock exist durably when recording starts, and their bytes then are their durable images; the
// creation of a new store is not cut. The lock file's content (an informational pid DirectoryLock writes outside the
// file layer) is not modelled: its image is its content when recording started.
//
// EVENTSTORE_POWERLOSS_ITERATIONS sets the number of random cut points (default 30), besides the cuts before every
// fdatasync of the page file and around every directory operation; EVENTSTORE_POWERLOSS_SEED sets the seed (default
// fixed). The workload's interleaving (group commit) depends on thread timing, so a seed reproduces the cuts and
// subsets chosen for a given recording; a failing crashed directory is kept (its path is in the failure) to look at.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

/// The durable and pending state of every file of a store directory, as a power cut would find it.
struct PowerLossModel {
    enum Pending {
        case write(offset: Int, bytes: [UInt8])
        case truncate(Int)
    }

    enum DirectoryChange {
        case create(String, Int)
        case rename(String, String)
        case remove(String)
    }

    struct File {
        var durable: [UInt8]
        var pending: [Pending] = []
    }

    struct ModelError: Error, CustomStringConvertible {
        var description: String
    }

    /// What one simulated power cut kept.
    struct Crash {
        var files: [String: [UInt8]]
        var summary: String
    }

    let directory: String
    private var files: [Int: File] = [:]
    /// Names in the directory as the running process sees them.
    private var current: [String: Int] = [:]
    /// Names in the directory as of its last fsync.
    private var durableNames: [String: Int] = [:]
    /// Creates, renames and removes since the directory's last fsync, in order.
    private var directoryChanges: [DirectoryChange] = []
    private var nextID = 0

    static let sectorSize = 512

    /// A model of `directory` whose files `initial` (name: bytes) are all durable.
    init(directory: String, files initial: [String: [UInt8]]) {
        self.directory = directory
        for (name, bytes) in initial.sorted(by: { $0.key < $1.key }) {
            files[nextID] = File(durable: bytes)
            current[name] = nextID
            nextID += 1
        }
        durableNames = current
    }

    private func name(_ path: String) -> String? {
        guard path.hasPrefix(directory + "/") else { return nil }
        return String(path.dropFirst(directory.count + 1))
    }

    private func file(_ path: String) throws -> Int {
        guard let name = name(path), let id = current[name] else {
            throw ModelError(description: "a mutation of \(path), which is not a file of the store's directory")
        }
        return id
    }

    /// Takes in the next recorded event.
    mutating func apply(_ event: IOEvent) throws {
        switch event {
        case .write(let path, let offset, let bytes):
            files[try file(path)]!.pending.append(.write(offset: Int(offset), bytes: bytes))
        case .truncate(let path, let size):
            files[try file(path)]!.pending.append(.truncate(Int(size)))
        case .sync(let path):
            let id = try file(path)
            var synced = files[id]!
            for change in synced.pending { Self.apply(change, to: &synced.durable, sectors: nil) }
            synced.pending = []
            files[id] = synced
        case .create(let path):
            guard let name = name(path) else {
                throw ModelError(description: "a file created outside the store: \(path)")
            }
            files[nextID] = File(durable: [])
            current[name] = nextID
            directoryChanges.append(.create(name, nextID))
            nextID += 1
        case .createDirectory:
            break
        case .syncDirectory(let path):
            if path == directory {
                durableNames = current
                directoryChanges = []
            }
        case .rename(let source, let destination):
            guard let from = name(source), let to = name(destination), let id = current[from] else {
                throw ModelError(description: "a rename of \(source) to \(destination) outside the store's files")
            }
            current[from] = nil
            current[to] = id
            directoryChanges.append(.rename(from, to))
        case .remove(let path):
            guard let name = name(path) else {
                throw ModelError(description: "a file removed outside the store: \(path)")
            }
            current[name] = nil
            directoryChanges.append(.remove(name))
        case .detached(let path, let operation):
            throw ModelError(
                description: "\(operation) through a descriptor whose path \(path) no longer names its file")
        }
    }

    /// Applies `change` to `image`; for a write, only the sectors (512-byte units of the file) in `sectors`, if given.
    private static func apply(_ change: Pending, to image: inout [UInt8], sectors: Set<Int>?) {
        switch change {
        case .truncate(let size):
            if size < image.count {
                image.removeLast(image.count - size)
            } else {
                image.append(contentsOf: repeatElement(0, count: size - image.count))
            }
        case .write(let offset, let bytes):
            guard let sectors else {
                put(bytes[...], at: offset, into: &image)
                return
            }
            var start = offset
            while start < offset + bytes.count {
                let end = min(offset + bytes.count, (start / sectorSize + 1) * sectorSize)
                if sectors.contains(start / sectorSize) {
                    put(bytes[(start - offset)..<(end - offset)], at: start, into: &image)
                }
                start = end
            }
        }
    }

    private static func put(_ bytes: ArraySlice<UInt8>, at offset: Int, into image: inout [UInt8]) {
        if image.count < offset + bytes.count {
            image.append(contentsOf: repeatElement(0, count: offset + bytes.count - image.count))
        }
        image.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
    }

    /// A power cut now: every durable byte survives; each pending write or truncate is kept whole with probability
    /// `keep`, torn (each of its sectors kept or not, at random) with probability `tear`, and dropped otherwise; a
    /// random prefix of the directory changes since its last fsync survives.
    func crash(keep: Double, tear: Double, using random: inout SeededRandom) -> Crash {
        var names = durableNames
        let survivingChanges = Int.random(in: 0...directoryChanges.count, using: &random)
        for change in directoryChanges.prefix(survivingChanges) {
            switch change {
            case .create(let name, let id): names[name] = id
            case .rename(let from, let to): names[to] = names.removeValue(forKey: from)
            case .remove(let name): names[name] = nil
            }
        }
        var images: [String: [UInt8]] = [:]
        var notes: [String] = []
        for (name, id) in names.sorted(by: { $0.key < $1.key }) {
            let file = files[id]!
            var image = file.durable
            var (kept, torn, dropped) = (0, 0, 0)
            for change in file.pending {
                let roll = Double.random(in: 0..<1, using: &random)
                if roll < keep {
                    kept += 1
                    Self.apply(change, to: &image, sectors: nil)
                } else if roll < keep + tear, case .write(let offset, let bytes) = change, !bytes.isEmpty {
                    torn += 1
                    let sectors = (offset / Self.sectorSize)...((offset + bytes.count - 1) / Self.sectorSize)
                    Self.apply(change, to: &image, sectors: Set(sectors.filter { _ in Bool.random(using: &random) }))
                } else {
                    dropped += 1
                }
            }
            images[name] = image
            notes.append(
                "\(name): \(file.durable.count) durable bytes, \(file.pending.count) pending (\(kept) kept, "
                    + "\(torn) torn, \(dropped) dropped) -> \(image.count) bytes")
        }
        let directoryNote = "directory: \(survivingChanges) of \(directoryChanges.count) unsynced changes kept"
        return Crash(files: images, summary: (notes + [directoryNote]).joined(separator: "; "))
    }
}

/// One acknowledged commit of the workload.
struct PowerLossCommit: Sendable {
    let id: Int
    let writes: [KeyWrite]
    let revision: UInt64
    /// The recorder's event count when commit() returned: a cut at or after it must keep the commit.
    let acknowledgedAt: Int
}

/// The value written by transaction `id` for its `index`-th write: it names the transaction, so a crashed image can
/// be checked exactly.
func powerLossValue(id: Int, index: Int, size: Int) -> [UInt8] {
    var bytes = Array("tx\(id).\(index):".utf8)
    while bytes.count < size { bytes.append(UInt8(truncatingIfNeeded: id &* 31 &+ bytes.count)) }
    return bytes
}

/// A root for scratch store directories: tmpfs if there is one (the simulated power cuts need no real fsync, and
/// thousands of opens are much faster there), else the temporary directory.
private func powerLossScratchRoot() -> String {
    var info = stat()
    if stat("/dev/shm", &info) == 0, access("/dev/shm", W_OK) == 0 { return "/dev/shm" }
    return FileManager.default.temporaryDirectory.path
}

private func writeFiles(_ files: [String: [UInt8]], into directory: String) throws {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    for (name, bytes) in files {
        guard FileManager.default.createFile(atPath: directory + "/" + name, contents: Data(bytes)) else {
            throw PowerLossModel.ModelError(description: "cannot write \(directory)/\(name)")
        }
    }
}

private func readFile(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

@Suite("Power loss", .serialized)
struct PowerLossTests {
    static let committers = 4
    static let transactionsPerCommitter = 100

    @Test("a power cut at any moment keeps every acknowledged commit, whole, and the store opens and verifies")
    func powerCuts() async throws {
        let environment = ProcessInfo.processInfo.environment
        let randomCuts = environment["EVENTSTORE_POWERLOSS_ITERATIONS"].flatMap(Int.init) ?? 30
        let seed = environment["EVENTSTORE_POWERLOSS_SEED"].flatMap(UInt64.init) ?? 0x5EED_0F_C0FFEE
        let imagesPerCut = 3
        let clock = ContinuousClock()
        let started = clock.now

        // Steady state: create the store, close it, reopen it with the recorder.
        let root = powerLossScratchRoot()
        let directory = root + "/eventstore-powerloss-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await PageFileKeyValueStore.open(directory: directory, options: smallOptions()).close()
        var initial: [String: [UInt8]] = [:]
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
            initial[name] = try readFile(directory + "/" + name)
        }
        #expect(Set(initial.keys) == ["data", "wal", "lock"])
        let recorder = IORecorder()
        let gate = IOGate(pathSuffix: "/wal")
        let store = try await PageFileKeyValueStore.open(
            directory: directory, options: smallOptions(faults: IOFaultPlan([], syncGate: gate, recorder: recorder)))
        let baseRevision = try await store.currentRevision()
        #expect(try await allEntries(store).isEmpty)

        // One group commit for certain (the workload's own depend on timing), then the concurrent workload.
        let commits =
            try await Self.runGroup(store, recorder: recorder, gate: gate)
            + Self.runWorkload(store, recorder: recorder, seed: seed)
        try await store.close()
        let events = recorder.recorded
        let workloadDone = clock.now

        // The commit order: revision r is the (r - base)-th commit.
        let ordered = commits.sorted { $0.revision < $1.revision }
        #expect(ordered.map(\.revision) == Array((baseRevision + 1)...(baseRevision + UInt64(ordered.count))))
        var dataSyncs = 0
        var walSyncs = 0
        // WAL syncs that made commit records durable (a checkpoint's sync of the rewritten header is not one).
        var commitSyncs = 0
        var walRecordsWritten = false
        var metaWrites = 0
        var renames = 0
        var cuts = Set<Int>()
        for (index, event) in events.enumerated() {
            switch event {
            case .sync(let path) where path.hasSuffix("/data") || path.hasSuffix("/data.compact"):
                dataSyncs += 1
                cuts.insert(index)
            case .write(let path, let offset, let bytes)
            where path.hasSuffix("/data") && offset < 8192 && bytes.count <= 4096:
                metaWrites += 1
                cuts.insert(index + 1)
            case .write(let path, let offset, _) where path.hasSuffix("/wal") && offset >= 40:
                walRecordsWritten = true
            case .sync(let path) where path.hasSuffix("/wal"):
                walSyncs += 1
                if walRecordsWritten { commitSyncs += 1 }
                walRecordsWritten = false
            case .rename, .syncDirectory, .create, .remove:
                if case .rename = event { renames += 1 }
                cuts.insert(index)
                cuts.insert(index + 1)
            default:
                break
            }
        }
        #expect(renames >= 1, "the workload did not compact")
        // Two explicit checkpoints, compaction's and close's; most runs also reach the WAL threshold once or twice.
        #expect(metaWrites >= 4, "the workload checkpointed only \(metaWrites) times")
        #expect(
            commitSyncs < ordered.count, "no group commit: \(commitSyncs) commit syncs for \(ordered.count) commits")
        var random = SeededRandom(seed: seed)
        for _ in 0..<randomCuts { cuts.insert(Int.random(in: 0...events.count, using: &random)) }
        cuts.insert(0)
        cuts.insert(events.count)

        var model = PowerLossModel(directory: directory, files: initial)
        var applied = 0
        var images = 0
        var failures = 0
        let keptRoot = FileManager.default.temporaryDirectory.path
        for cut in cuts.sorted() {
            while applied < cut {
                try model.apply(events[applied])
                applied += 1
            }
            let required = ordered.last { $0.acknowledgedAt <= cut }?.revision ?? baseRevision
            for image in 0..<imagesPerCut {
                // Image 0 keeps only what was synced; the others keep a random share of what was pending.
                let keep = image == 0 ? 0 : Double.random(in: 0..<1, using: &random)
                let tear = image == 0 ? 0 : Double.random(in: 0...(1 - keep), using: &random)
                let crash = model.crash(keep: keep, tear: tear, using: &random)
                images += 1
                let problems = await Self.check(
                    crash.files, root: root, required: required, base: baseRevision, commits: ordered)
                guard !problems.isEmpty else { continue }
                failures += 1
                let kept = keptRoot + "/eventstore-powerloss-seed\(seed)-cut\(cut)-image\(image)"
                try? writeFiles(crash.files, into: kept)
                let recent = events[max(0, cut - 6)..<cut].map(Self.describe).joined(separator: "\n  ")
                Issue.record(
                    """
                    power cut after event \(cut) of \(events.count) (seed \(seed), image \(image), keep \(keep), \
                    tear \(tear)); acknowledged up to revision \(required):
                    \(problems.joined(separator: "\n"))
                    crash: \(crash.summary)
                    last events before the cut:
                      \(recent)
                    crashed files kept in \(kept)
                    """)
            }
            if failures >= 5 { break }
        }
        let finished = clock.now
        print(
            """
            power loss: seed \(seed), \(ordered.count) commits, \(events.count) events (\(walSyncs) WAL syncs, \
            \(dataSyncs) page-file syncs, \(metaWrites) meta writes, \(renames) renames), \(cuts.count) cuts, \
            \(images) crashed images, \(failures) failing; workload \(workloadDone - started), \
            cuts \(finished - workloadDone)
            """)
    }

    /// Three commits of which the last two share one WAL write and sync: the first's sync is held until both have
    /// joined the group behind it.
    static func runGroup(
        _ store: PageFileKeyValueStore, recorder: IORecorder, gate: IOGate
    ) async throws -> [PowerLossCommit] {
        @Sendable func writes(_ id: Int) -> [KeyWrite] {
            [.put(Array("pl/group/\(id)".utf8), powerLossValue(id: id, index: 0, size: 200 + 3_000 * (id % 3)))]
        }
        gate.hold()
        let first = Task {
            let revision = try await store.commit(KeyValueTransaction(writes: writes(900_000)))
            return PowerLossCommit(
                id: 900_000, writes: writes(900_000), revision: revision, acknowledgedAt: recorder.count)
        }
        await gate.arrival()
        var joined: [Task<PowerLossCommit, any Error>] = []
        for id in [900_001, 900_002] {
            // Returns once the commit's body ran under the writer lock: it is in the group behind the held sync.
            let (applied, signal) = AsyncStream<Void>.makeStream()
            joined.append(
                Task {
                    defer { signal.finish() }
                    let update = try await store.update { _ in
                        signal.yield()
                        return (KeyValueTransaction(writes: writes(id)), ())
                    }
                    let revision = try #require(update.revision, "the update wrote nothing")
                    return PowerLossCommit(
                        id: id, writes: writes(id), revision: revision, acknowledgedAt: recorder.count)
                })
            for await _ in applied { break }
        }
        gate.release()
        var commits = [try await first.value]
        for task in joined { commits.append(try await task.value) }
        return commits
    }

    /// Concurrent committers (group commit) of mixed-size puts and deletes; committer 0 also checkpoints and compacts.
    static func runWorkload(
        _ store: PageFileKeyValueStore, recorder: IORecorder, seed: UInt64
    ) async throws -> [PowerLossCommit] {
        try await withThrowingTaskGroup(of: [PowerLossCommit].self) { group in
            for committer in 0..<committers {
                group.addTask {
                    var random = SeededRandom(seed: seed &+ UInt64(committer + 1) &* 0x9E37_79B9_7F4A_7C15)
                    var live = Set<Int>()
                    var done: [PowerLossCommit] = []
                    for number in 0..<transactionsPerCommitter {
                        if committer == 0 {
                            switch number {
                            case 20, 80: try await store.checkpoint()
                            case 50: try await store.compact()
                            default: break
                            }
                        }
                        let id = committer * 100_000 + number
                        var writes: [KeyWrite] = []
                        var used = Set<Int>()
                        for index in 0..<Int.random(in: 1...4, using: &random) {
                            if !live.isEmpty, Double.random(in: 0..<1, using: &random) < 0.25 {
                                let slot = live.randomElement(using: &random)!
                                guard used.insert(slot).inserted else { continue }
                                live.remove(slot)
                                writes.append(.delete(Array("pl/\(committer)/\(slot)".utf8)))
                            } else {
                                let slot = Int.random(in: 0..<48, using: &random)
                                guard used.insert(slot).inserted else { continue }
                                live.insert(slot)
                                let roll = Double.random(in: 0..<1, using: &random)
                                let size =
                                    roll < 0.45
                                    ? Int.random(in: 16...300, using: &random)
                                    : roll < 0.7
                                        ? Int.random(in: 500...3_000, using: &random)
                                        : Int.random(in: 8_000...30_000, using: &random)
                                writes.append(
                                    .put(
                                        Array("pl/\(committer)/\(slot)".utf8),
                                        powerLossValue(id: id, index: index, size: size)))
                            }
                        }
                        let revision = try await store.commit(KeyValueTransaction(writes: writes))
                        done.append(
                            PowerLossCommit(
                                id: id, writes: writes, revision: revision, acknowledgedAt: recorder.count))
                    }
                    return done
                }
            }
            var all: [PowerLossCommit] = []
            for try await done in group { all += done }
            return all
        }
    }

    /// The state after every commit up to `revision`: key -> (value, modRevision).
    static func state(at revision: UInt64, commits: [PowerLossCommit]) -> [Key: ([UInt8], UInt64)] {
        var state: [Key: ([UInt8], UInt64)] = [:]
        for commit in commits where commit.revision <= revision {
            for write in commit.writes {
                switch write {
                case .put(let key, let value, _): state[key] = (value, commit.revision)
                case .delete(let key): state[key] = nil
                }
            }
        }
        return state
    }

    /// Opens the crashed files in a fresh directory and returns every problem found.
    static func check(
        _ files: [String: [UInt8]], root: String, required: UInt64, base: UInt64, commits: [PowerLossCommit]
    ) async -> [String] {
        let directory = root + "/eventstore-powerloss-crash-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var problems: [String] = []
        do {
            try writeFiles(files, into: directory)
            let store = try await PageFileKeyValueStore.open(directory: directory, options: smallOptions())
            let report: PageFileVerifyReport
            let revision: UInt64
            let entries: [KeyValueEntry]
            do {
                report = try await store.verify()
                revision = try await store.currentRevision()
                entries = try await allEntries(store)
            } catch {
                try? await store.close()
                throw error
            }
            try await store.close()
            problems += report.problems.map { "verify: \($0)" }
            let last = commits.last?.revision ?? base
            if revision < required {
                problems.append("recovered revision \(revision), but revision \(required) was acknowledged")
            }
            if revision > last { problems.append("recovered revision \(revision), past the last commit \(last)") }
            let expected = state(at: min(revision, last), commits: commits)
            var differences: [String] = []
            var seen = Set<Key>()
            for entry in entries {
                seen.insert(entry.key)
                let key = String(decoding: entry.key, as: UTF8.self)
                let found = "\(key) = \(label(entry.value)) (modRevision \(entry.modRevision))"
                guard let (value, modRevision) = expected[entry.key] else {
                    differences.append("unexpected \(found)")
                    continue
                }
                if value != entry.value || modRevision != entry.modRevision {
                    differences.append("\(found), expected \(label(value)) (modRevision \(modRevision))")
                }
            }
            for (key, (value, modRevision)) in expected where !seen.contains(key) {
                differences.append(
                    "missing \(String(decoding: key, as: UTF8.self)) = \(label(value)) (modRevision \(modRevision))")
            }
            if !differences.isEmpty {
                let matching = ([base] + commits.map(\.revision)).first { candidate in
                    let state = state(at: candidate, commits: commits)
                    return state.count == entries.count
                        && entries.allSatisfy { entry in state[entry.key]?.0 == entry.value }
                }
                problems.append(
                    "the state is not that of revision \(revision) (\(differences.count) differences; "
                        + (matching.map { "it is that of revision \($0)" } ?? "it is no prefix of the commits") + "):")
                problems += differences.sorted().prefix(8).map { "  \($0)" }
            }
        } catch {
            problems.append("open, verify or read failed: \(error)")
        }
        return problems
    }

    /// "tx<id>.<write>" and the length of a workload value.
    static func label(_ value: [UInt8]) -> String {
        let head = value.prefix { $0 != UInt8(ascii: ":") }
        return "\(String(decoding: head, as: UTF8.self)) (\(value.count) bytes)"
    }

    static func describe(_ event: IOEvent) -> String {
        func short(_ path: String) -> String { String(path.split(separator: "/").last ?? "") }
        switch event {
        case .write(let path, let offset, let bytes): return "write \(short(path)) @\(offset) +\(bytes.count)"
        case .truncate(let path, let size): return "truncate \(short(path)) to \(size)"
        case .sync(let path): return "fdatasync \(short(path))"
        case .create(let path): return "create \(short(path))"
        case .createDirectory(let path): return "mkdir \(path)"
        case .syncDirectory(let path): return "fsync directory \(path)"
        case .rename(let source, let destination): return "rename \(short(source)) -> \(short(destination))"
        case .remove(let path): return "unlink \(short(path))"
        case .detached(let path, let operation): return "\(operation) on detached \(short(path))"
        }
    }
}
