// Power cuts beyond PowerLossTests' steady state, on its recording model (found by a crash-consistency review,
// twenty-fourth session):
// - a WAL that a writable open creates (the old one moved away, as the damaged-WAL error advises) has its directory
//   entry synced before a commit logged in it is acknowledged;
// - so does a writable open that finds a wal whose entry an earlier open may not have synced (one killed first, or
//   one with durability none), and a backup into a directory that already existed syncs that directory's parent
//   (both found by the second-round review of the first fix), and every writable open syncs the directory holding
//   the store's, as the kernel resolves it (a store left by an open killed before that sync, or copied by hand, or
//   named by a path ending in ".."; found by the third round);
// - creating a store in a directory that already exists syncs the parent, which holds the store's entry;
// - a second power cut during the reopen that recovered the first (its recovery checkpoint, commits and close)
//   loses nothing the first recovery found or that was acknowledged since.

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

/// The directories `events` fsynced, in order.
func syncedDirectories(_ events: [IOEvent]) -> [String] {
    events.compactMap {
        if case .syncDirectory(let path) = $0 { return path }
        return nil
    }
}

/// The files of a closed store directory, name -> bytes.
private func storeFiles(_ directory: String) throws -> [String: [UInt8]] {
    var files: [String: [UInt8]] = [:]
    for name in try FileManager.default.contentsOfDirectory(atPath: directory) {
        files[name] = [UInt8](try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name)))
    }
    return files
}

private func writeStoreFiles(_ files: [String: [UInt8]], into directory: String) throws {
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    for (name, bytes) in files {
        guard FileManager.default.createFile(atPath: directory + "/" + name, contents: Data(bytes)) else {
            throw PowerLossModel.ModelError(description: "cannot write \(directory)/\(name)")
        }
    }
}

/// A crash of `model` that keeps only what was synced, and none of the directory changes since its last fsync.
private func syncedOnlyCrash(_ model: PowerLossModel) -> PowerLossModel.Crash? {
    for seed in UInt64(0)..<256 {
        var random = SeededRandom(seed: seed)
        let crash = model.crash(keep: 0, tear: 0, using: &random)
        if crash.summary.contains("directory: 0 of") { return crash }
    }
    return nil
}

/// `count` sequential commits of mixed sizes (some overflow pages), each one acknowledged after its fdatasync.
private func sequentialCommits(
    _ store: PageFileKeyValueStore, recorder: IORecorder, ids: Range<Int>, checkpointAt: Set<Int> = []
) async throws -> [PowerLossCommit] {
    var random = SeededRandom(seed: UInt64(ids.lowerBound) &+ 0x35)
    var done: [PowerLossCommit] = []
    for id in ids {
        if checkpointAt.contains(id) { try await store.checkpoint() }
        var writes: [KeyWrite] = []
        for index in 0..<Int.random(in: 1...3, using: &random) {
            let slot = Int.random(in: 0..<40, using: &random)
            guard !writes.contains(where: { $0.key == Array("cut/\(slot)".utf8) }) else { continue }
            if Int.random(in: 0..<5, using: &random) == 0 {
                writes.append(.delete(Array("cut/\(slot)".utf8)))
            } else {
                let size = [40, 900, 6_000][Int.random(in: 0..<3, using: &random)]
                writes.append(.put(Array("cut/\(slot)".utf8), powerLossValue(id: id, index: index, size: size)))
            }
        }
        let revision = try await store.commit(KeyValueTransaction(writes: writes))
        done.append(PowerLossCommit(id: id, writes: writes, revision: revision, acknowledgedAt: recorder.count))
    }
    return done
}

private func crashScratchRoot() -> String {
    access("/dev/shm", W_OK) == 0 ? "/dev/shm" : FileManager.default.temporaryDirectory.path
}

@Suite("Power cuts beyond the steady state", .serialized)
struct PowerLossBeyondSteadyStateTests {
    /// The documented way past a damaged WAL ("moving the wal file away opens the store at its last checkpoint in a
    /// writable open") makes open create a new `wal`. Its directory entry must be durable before a commit logged in
    /// it is acknowledged, or a power cut takes the whole file, and every acknowledged commit since the open.
    @Test("commits acknowledged in a wal that open re-created survive a power cut")
    func recreatedWALEntryIsDurable() async throws {
        let directory = TemporaryDirectory("powercut-wal-moved")
        defer { directory.remove() }
        let first = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let baseWrites: [KeyWrite] = [.put(Array("base".utf8), [1])]
        let baseCommit = PowerLossCommit(
            id: -1, writes: baseWrites, revision: try await first.commit(KeyValueTransaction(writes: baseWrites)),
            acknowledgedAt: 0)
        try await first.close()
        // The user moves the wal away (as walDamage's message advises), and opens the store again.
        try FileManager.default.removeItem(atPath: directory.file("wal"))
        let initial = try storeFiles(directory.path)
        #expect(Set(initial.keys) == ["data", "lock"])

        let recorder = IORecorder()
        let store = try await PageFileKeyValueStore.open(
            directory: directory.path, options: smallOptions(faults: IOFaultPlan([], recorder: recorder)))
        let base = try await store.currentRevision()
        let commits = try await sequentialCommits(store, recorder: recorder, ids: 0..<5)
        let events = recorder.recorded
        await store.closeWithoutCheckpoint()

        var model = PowerLossModel(directory: directory.path, files: initial)
        for event in events { try model.apply(event) }
        let crash = try #require(syncedOnlyCrash(model))
        let required = try #require(commits.last).revision
        let problems = await PowerLossTests.check(
            crash.files, root: crashScratchRoot(), required: required, base: base, commits: [baseCommit] + commits)
        #expect(
            problems.isEmpty,
            """
            power cut after \(commits.count) acknowledged commits (\(crash.summary)); events: \
            \(events.map(PowerLossTests.describe).joined(separator: ", "))
            \(problems.joined(separator: "\n"))
            """)
    }

    /// A double crash: a power cut during a workload, an open that recovers (and checkpoints) it, a few commits and a
    /// close, and a second power cut anywhere in that reopen. Everything the first recovery found must stay, and so
    /// must every commit acknowledged after it.
    @Test("a second power cut during the recovery checkpoint (and later commits and close) loses nothing")
    func doubleCrash() async throws {
        let root = crashScratchRoot()
        let directory = root + "/eventstore-powercut-double-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await PageFileKeyValueStore.open(directory: directory, options: smallOptions()).close()
        let initial = try storeFiles(directory)
        let recorder = IORecorder()
        let store = try await PageFileKeyValueStore.open(
            directory: directory, options: smallOptions(faults: IOFaultPlan([], recorder: recorder)))
        let base = try await store.currentRevision()
        let commits = try await sequentialCommits(store, recorder: recorder, ids: 0..<120, checkpointAt: [30, 70])
        let events = recorder.recorded
        await store.closeWithoutCheckpoint()

        var random = SeededRandom(seed: 0x0D0B1E)
        var firstCuts = Set((0..<3).map { _ in Int.random(in: 0...events.count, using: &random) })
        firstCuts.insert(events.count)
        var model = PowerLossModel(directory: directory, files: initial)
        var applied = 0
        var failures: [String] = []
        var secondImages = 0
        for cut in firstCuts.sorted() {
            while applied < cut {
                try model.apply(events[applied])
                applied += 1
            }
            let keep = Double.random(in: 0..<1, using: &random)
            let first = model.crash(keep: keep, tear: (1 - keep) / 2, using: &random)
            let acknowledged = commits.last { $0.acknowledgedAt <= cut }?.revision ?? base
            // The first reopen: recovery (and its checkpoint), three commits, close; every mutation recorded.
            let reopened = root + "/eventstore-powercut-reopen-\(UUID().uuidString)"
            defer { try? FileManager.default.removeItem(atPath: reopened) }
            try writeStoreFiles(first.files, into: reopened)
            let recorder2 = IORecorder()
            let store2 = try await PageFileKeyValueStore.open(
                directory: reopened, options: smallOptions(faults: IOFaultPlan([], recorder: recorder2)))
            let recovered = try await store2.currentRevision()
            #expect(recovered >= acknowledged)
            let later = try await sequentialCommits(store2, recorder: recorder2, ids: 1_000..<1_003)
            try await store2.close()
            let events2 = recorder2.recorded
            let history = commits.filter { $0.revision <= recovered } + later
            var model2 = PowerLossModel(directory: reopened, files: first.files)
            var applied2 = 0
            for cut2 in 0...events2.count where cut2 % 2 == 0 || cut2 == events2.count {
                while applied2 < cut2 {
                    try model2.apply(events2[applied2])
                    applied2 += 1
                }
                let required = later.last { $0.acknowledgedAt <= cut2 }?.revision ?? recovered
                for image in 0..<2 {
                    let keep2 = image == 0 ? 0 : Double.random(in: 0..<1, using: &random)
                    let second = model2.crash(keep: keep2, tear: image == 0 ? 0 : (1 - keep2) / 2, using: &random)
                    secondImages += 1
                    let problems = await PowerLossTests.check(
                        second.files, root: root, required: required, base: base, commits: history)
                    guard !problems.isEmpty else { continue }
                    let recent = events2[max(0, cut2 - 4)..<cut2].map(PowerLossTests.describe).joined(separator: ", ")
                    failures.append(
                        "first cut \(cut) (\(first.summary)), recovered \(recovered); second cut \(cut2) of "
                            + "\(events2.count) after [\(recent)] (\(second.summary)): "
                            + problems.joined(separator: " | "))
                }
                if failures.count >= 3 { break }
            }
            if failures.count >= 3 { break }
        }
        print("double crash: \(firstCuts.count) first cuts, \(secondImages) second images, \(failures.count) failing")
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
    }

    /// A store directory that exists but whose entry in its parent was never made durable (an earlier open was
    /// killed between its mkdir and the parent's fsync, or that fsync failed and the open was run again): the open
    /// that creates the store in it must make that entry durable before it acknowledges a commit, or a power cut
    /// takes the whole store. Directory.create syncs the parent only when its own mkdir succeeded.
    @Test("creating a store in a directory whose entry is not yet durable syncs the parent before acknowledging")
    func parentEntryIsDurableBeforeFirstAck() async throws {
        let parent = TemporaryDirectory("powercut-parent")
        defer { parent.remove() }
        try FileManager.default.createDirectory(atPath: parent.path, withIntermediateDirectories: true)
        let directory = parent.file("store")
        // The killed open's mkdir: in the page cache, never fsynced into the parent.
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: false)
        let recorder = IORecorder()
        let store = try await PageFileKeyValueStore.open(
            directory: directory, options: smallOptions(faults: IOFaultPlan([], recorder: recorder)))
        #expect(store.recovery.created)
        _ = try await store.commit(KeyValueTransaction(writes: [.put(Array("acknowledged".utf8), [1])]))
        let events = recorder.recorded
        try await store.close()
        let parentSynced = syncedDirectories(events).contains(parent.path)
        let message =
            "a commit was acknowledged, but \(parent.path) (which holds the store's directory entry) was never "
            + "fsynced: \(events.map(PowerLossTests.describe).joined(separator: ", "))"
        #expect(parentSynced, "\(message)")
    }

    @Test("an empty wal left by an open killed before its directory fsync gets its entry synced")
    func walLeftByKilledOpen() async throws {
        let directory = TemporaryDirectory("powercut-wal-killed")
        defer { directory.remove() }
        try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions()).close()
        // The user moves the damaged wal away; an open creates a new one and is killed before it fsyncs the
        // directory: the new, empty wal's entry is in the page cache only.
        try FileManager.default.removeItem(atPath: directory.file("wal"))
        #expect(FileManager.default.createFile(atPath: directory.file("wal"), contents: Data()))
        let recorder = IORecorder()
        let store = try await PageFileKeyValueStore.open(
            directory: directory.path, options: smallOptions(faults: IOFaultPlan([], recorder: recorder)))
        _ = try await store.commit(KeyValueTransaction(writes: [.put(Array("acknowledged".utf8), [1])]))
        let events = recorder.recorded  // everything up to the acknowledgement
        await store.closeWithoutCheckpoint()
        let trace = events.map(PowerLossTests.describe).joined(separator: ", ")
        #expect(
            syncedDirectories(events).contains(directory.path),
            "a commit was acknowledged in a wal whose directory entry was never fsynced: \(trace)")
    }

    @Test("a wal created by a durability-none open gets its entry synced by the next full open before it acknowledges")
    func walCreatedUnderNoneDurability() async throws {
        let directory = TemporaryDirectory("powercut-wal-none")
        defer { directory.remove() }
        try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions()).close()
        try FileManager.default.removeItem(atPath: directory.file("wal"))
        let noneRecorder = IORecorder()
        var none = smallOptions(faults: IOFaultPlan([], recorder: noneRecorder))
        none.durability = .none
        try await PageFileKeyValueStore.open(directory: directory.path, options: none).close()
        let recorder = IORecorder()
        let store = try await PageFileKeyValueStore.open(
            directory: directory.path, options: smallOptions(faults: IOFaultPlan([], recorder: recorder)))
        _ = try await store.commit(KeyValueTransaction(writes: [.put(Array("acknowledged".utf8), [1])]))
        let events = noneRecorder.recorded + recorder.recorded
        await store.closeWithoutCheckpoint()
        let trace = events.map(PowerLossTests.describe).joined(separator: ", ")
        #expect(
            syncedDirectories(events).contains(directory.path),
            "a full commit was acknowledged in a wal (created by a none open) whose entry was never fsynced: \(trace)")
    }

    @Test("a backup into a directory that already existed syncs that directory's entry in its parent")
    func backupIntoExistingDirectory() async throws {
        let source = TemporaryDirectory("powercut-backup-source")
        let parent = TemporaryDirectory("powercut-backup-parent")
        defer {
            source.remove()
            parent.remove()
        }
        try FileManager.default.createDirectory(atPath: parent.path, withIntermediateDirectories: true)
        let destination = parent.file("copy")
        // Made by the user (or by a backup killed before it synced the parent): its entry is not yet durable.
        try FileManager.default.createDirectory(atPath: destination, withIntermediateDirectories: false)
        let recorder = IORecorder()
        let store = try await PageFileKeyValueStore.open(
            directory: source.path, options: smallOptions(faults: IOFaultPlan([], recorder: recorder)))
        _ = try await store.commit(KeyValueTransaction(writes: [.put(Array("backed-up".utf8), [1])]))
        try await store.backup(to: destination)
        let events = recorder.recorded
        try await store.close()
        #expect(
            syncedDirectories(events).contains(parent.path),
            "the backup returned, but \(parent.path) (which holds its entry) was never fsynced")
        let copy = try await PageFileKeyValueStore.open(directory: destination, options: smallOptions())
        let keys = try await allEntries(copy).map(\.key)
        try await copy.close()
        #expect(keys == [Array("backed-up".utf8)])
    }

    @Test("a store whose parent was never synced gets its entry synced before a commit is acknowledged")
    func storeLeftBeforeParentSync() async throws {
        let parent = TemporaryDirectory("powercut-parent-left")
        let template = TemporaryDirectory("powercut-template")
        defer {
            parent.remove()
            template.remove()
        }
        try await PageFileKeyValueStore.open(directory: template.path, options: smallOptions()).close()
        // What an open killed between its rename of data and its parent's fsync leaves (or a copy by hand): a whole
        // store in a directory whose entry in its parent was never fsynced.
        try FileManager.default.createDirectory(atPath: parent.path, withIntermediateDirectories: true)
        let store = parent.file("store")
        try FileManager.default.copyItem(atPath: template.path, toPath: store)
        let recorder = IORecorder()
        let opened = try await PageFileKeyValueStore.open(
            directory: store, options: smallOptions(faults: IOFaultPlan([], recorder: recorder)))
        _ = try await opened.commit(KeyValueTransaction(writes: [.put(Array("acknowledged".utf8), [1])]))
        let synced = syncedDirectories(recorder.recorded)  // everything up to the acknowledgement
        await opened.closeWithoutCheckpoint()
        #expect(
            synced.contains(parent.path),
            "a commit was acknowledged, but \(parent.path) (which holds the store's entry) was never synced: \(synced)")
    }

    @Test("a store named by a path ending in .. syncs the directory that really holds its entry")
    func dotDotStorePath() async throws {
        let parent = TemporaryDirectory("powercut-dotdot")
        defer { parent.remove() }
        let store = parent.file("store")
        try FileManager.default.createDirectory(atPath: store + "/sub", withIntermediateDirectories: true)
        let recorder = IORecorder()
        let opened = try await PageFileKeyValueStore.open(
            directory: store + "/sub/..", options: smallOptions(faults: IOFaultPlan([], recorder: recorder)))
        _ = try await opened.commit(KeyValueTransaction(writes: [.put(Array("acknowledged".utf8), [1])]))
        let synced = syncedDirectories(recorder.recorded)
        await opened.closeWithoutCheckpoint()
        #expect(FileManager.default.fileExists(atPath: store + "/data"))
        #expect(
            synced.contains(parent.path),
            "the store in \(store) acknowledged a commit, but its parent \(parent.path) was never fsynced: \(synced)")
    }
}
