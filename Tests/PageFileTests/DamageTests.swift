// Damage tests on copies of stores: a torn, garbled or extended WAL tail, a stale WAL from an earlier generation,
// a damaged checkpointed page, and files that are not (this version's) stores. Each must give the last good commit
// or a typed error, never wrong data, and never overwrite anything.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Damage")
struct DamageTests {
    /// A closed-by-crash store whose WAL holds `count` small commits after a checkpoint; returns the WAL offsets
    /// where each commit ends (index 0: the header end).
    private func crashedStore(commits count: Int) async throws -> (TemporaryDirectory, [UInt64]) {
        let directory = TemporaryDirectory("tail")
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put([0], [0])]))
        try await store.checkpoint()
        var ends = [try store.statistics().walBytes]
        for index in 1...count {
            _ = try await store.commit(
                KeyValueTransaction(writes: [.put([UInt8(index)], [UInt8(index), 1, 2]), .put([0], [UInt8(index)])]))
            ends.append(try store.statistics().walBytes)
        }
        await store.closeWithoutCheckpoint()
        return (directory, ends)
    }

    /// Opens `directory` and checks it holds exactly the first `commits` commits of `crashedStore`.
    private func expectState(_ directory: String, commits: Int, _ context: String) async throws {
        let store = try await PageFileKeyValueStore.open(directory: directory, options: smallOptions())
        let entries = try await allEntries(store)
        var expected: [[UInt8]: [UInt8]] = [[0]: [UInt8(commits)]]
        for index in stride(from: 1, through: commits, by: 1) { expected[[UInt8(index)]] = [UInt8(index), 1, 2] }
        #expect(Dictionary(uniqueKeysWithValues: entries.map { ($0.key, $0.value) }) == expected, "\(context)")
        #expect(try await store.currentRevision() == UInt64(commits + 1), "\(context)")
        let report = try await store.verify()
        #expect(report.isClean, "\(context): \(report.problems)")
        try await store.close()
    }

    private func damagedCopy(_ source: String, _ damage: (inout [UInt8]) -> Void) throws -> TemporaryDirectory {
        let copy = try copyDirectory(source)
        var wal = [UInt8](try Data(contentsOf: URL(fileURLWithPath: copy.file("wal"))))
        damage(&wal)
        try Data(wal).write(to: URL(fileURLWithPath: copy.file("wal")))
        return copy
    }

    @Test("a WAL cut at every byte offset of its last records recovers to the last whole commit")
    func truncatedTail() async throws {
        let (directory, ends) = try await crashedStore(commits: 5)
        defer { directory.remove() }
        let intact = try copyDirectory(directory.path)
        defer { intact.remove() }
        try await expectState(intact.path, commits: 5, "intact")
        for offset in ends[3]..<ends[5] {
            let copy = try damagedCopy(directory.path) { $0.removeLast($0.count - Int(offset)) }
            defer { copy.remove() }
            let whole = ends.lastIndex { $0 <= offset } ?? 0
            try await expectState(copy.path, commits: whole, "WAL cut at byte \(offset)")
        }
    }

    /// A damaged last record may be a torn write that was never acknowledged: the log is cut before it. A damaged
    /// record followed by one logged after it was durable is damage to an acknowledged commit: cutting there used to
    /// drop it and every commit after it, silently; the open now fails with `corrupted`, naming the record, and
    /// changes nothing.
    @Test("flipped bits in the last WAL record cut the log before it; in an earlier, durable one, the open fails")
    func flippedBits() async throws {
        let (directory, ends) = try await crashedStore(commits: 4)
        defer { directory.remove() }
        for offset in stride(from: Int(ends[3]), to: Int(ends[4]), by: 5) {
            let copy = try damagedCopy(directory.path) { $0[offset] ^= 0x10 }
            defer { copy.remove() }
            try await expectState(copy.path, commits: 3, "bit flipped at byte \(offset) of the last record")
        }
        for offset in stride(from: Int(ends[2]), to: Int(ends[3]), by: 5) {
            let copy = try damagedCopy(directory.path) { $0[offset] ^= 0x10 }
            defer { copy.remove() }
            let wal = try Data(contentsOf: URL(fileURLWithPath: copy.file("wal")))
            await #expect(throws: EventStoreError.self, "bit flipped at byte \(offset) of record 3") {
                try await PageFileKeyValueStore.open(directory: copy.path, options: smallOptions())
            }
            do {
                _ = try await PageFileKeyValueStore.open(directory: copy.path, options: smallOptions())
            } catch EventStoreError.corrupted(let location, let detail) {
                #expect(location.hasSuffix("wal offset \(ends[2]) (record LSN 4)"), "\(location)")
                #expect(detail.contains("LSN 5 at offset \(ends[3])"), "\(detail)")
            }
            #expect(try Data(contentsOf: URL(fileURLWithPath: copy.file("wal"))) == wal, "the WAL was changed")
        }
    }

    @Test("a WAL of the previous format (no synced LSN) is replayed, then replaced before anything is logged")
    func previousWALFormat() async throws {
        let (directory, _) = try await crashedStore(commits: 3)
        defer { directory.remove() }
        // Rewrite the WAL as the previous build wrote it: version 1, 16-byte frames.
        let url = URL(fileURLWithPath: directory.file("wal"))
        let current = [UInt8](try Data(contentsOf: url))
        let salt = current.loadLE(UInt64.self, at: 16)
        let firstLSN = current.loadLE(UInt64.self, at: 24)
        let scan = WriteAheadLog.scan(current, salt: salt, firstLSN: firstLSN)
        #expect(scan.transactions.count == 3)
        var old = WriteAheadLog.header(salt: salt, firstLSN: firstLSN, version: 1)
        var offset = WriteAheadLog.headerSize
        while offset < scan.validEnd {
            let length = Int(current.loadLE(UInt32.self, at: offset))
            var record = Array(current[offset..<(offset + 16)]) + current[(offset + 24)..<(offset + 24 + length)]
            var checksum = CRC32C.checksum(record, 0..<4, seed: FuzzReview.saltSeed(salt))
            checksum = CRC32C.checksum(record, 8..<record.count, seed: checksum)
            record.storeLE(checksum, at: 4)
            old += record
            offset += 24 + length
        }
        old += [UInt8](repeating: 0, count: 4096)
        try Data(old).write(to: url)
        var readOnly = smallOptions()
        readOnly.readOnly = true
        let reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly)
        #expect(try await reader.currentRevision() == 4, "a read-only open replays the old format too")
        try await reader.close()
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(store.recovery.replayedTransactions == 3)
        let header = WriteAheadLog.decodeHeader([UInt8](try Data(contentsOf: url)))
        guard case .valid(_, _, let version) = header else {
            Issue.record("no valid WAL header after the open: \(header)")
            return
        }
        #expect(version == WriteAheadLog.formatVersion, "the old WAL was not replaced before logging")
        _ = try await store.commit(KeyValueTransaction(writes: [.put([9], [9])]))
        await store.closeWithoutCheckpoint()
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(try await reopened.get([9])?.value == [9])
        #expect(try await reopened.currentRevision() == 5)
        try await reopened.close()

        // A store the previous build closed cleanly: an old header and no records. Nothing is replayed, yet the
        // header must still be replaced, or the next commit's record would follow it in the new format.
        let closed = [UInt8](try Data(contentsOf: url))
        let oldHeader = WriteAheadLog.header(
            salt: closed.loadLE(UInt64.self, at: 16), firstLSN: closed.loadLE(UInt64.self, at: 24), version: 1)
        try Data(oldHeader + [UInt8](repeating: 0, count: 4096)).write(to: url)
        let upgraded = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(upgraded.recovery.replayedTransactions == 0)
        _ = try await upgraded.commit(KeyValueTransaction(writes: [.put([10], [10])]))
        await upgraded.closeWithoutCheckpoint()
        let last = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(try await last.get([10])?.value == [10], "a commit logged after an old header was lost")
        try await last.close()
    }

    @Test("garbage appended after the last record is ignored")
    func appendedGarbage() async throws {
        let (directory, _) = try await crashedStore(commits: 3)
        defer { directory.remove() }
        var random = SeededRandom(seed: 42)
        for length in [1, 15, 16, 17, 100, 5000] {
            let copy = try damagedCopy(directory.path) { wal in
                wal.append(contentsOf: (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) })
            }
            defer { copy.remove() }
            try await expectState(copy.path, commits: 3, "\(length) garbage bytes")
        }
    }

    @Test("a stale WAL from an earlier generation is ignored, not replayed")
    func staleWAL() async throws {
        let directory = TemporaryDirectory("stale")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], Array("old".utf8))]))
        let stale = try Data(contentsOf: URL(fileURLWithPath: directory.file("wal")))
        try await store.checkpoint()
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], Array("new".utf8))]))
        try await store.checkpoint()
        await store.closeWithoutCheckpoint()
        try stale.write(to: URL(fileURLWithPath: directory.file("wal")))

        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(reopened.recovery.ignoredStaleWAL)
        #expect(reopened.recovery.replayedTransactions == 0)
        let entry = try #require(try await reopened.get([1]))
        #expect(entry.value == Array("new".utf8) && entry.version == 2)
        #expect(try await reopened.currentRevision() == 2)
        try await reopened.close()
    }

    @Test("a damaged checkpointed page is reported as corruption naming the page, by reads and by verify")
    func damagedPage() async throws {
        let directory = TemporaryDirectory("page")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        for batch in 0..<10 {
            let writes = (0..<50).map { KeyWrite.put(Array("key-\(batch)-\($0)".utf8), [UInt8](repeating: 1, count: 100)) }
            _ = try await store.commit(KeyValueTransaction(writes: writes))
        }
        try await store.close()

        let dataPath = directory.file("data")
        var data = [UInt8](try Data(contentsOf: URL(fileURLWithPath: dataPath)))
        let pageCount = data.count / 4096
        let leaf = try #require((2..<pageCount).first { data[$0 * 4096 + Page.typeOffset] == PageType.leaf.rawValue })
        let keys = try NodeCodec.decode(Array(data[(leaf * 4096)..<((leaf + 1) * 4096)]), number: UInt64(leaf), path: dataPath).allKeys
        data[leaf * 4096 + 200] ^= 0xFF
        try Data(data).write(to: URL(fileURLWithPath: dataPath))

        let damaged = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let location = "\(dataPath) page \(leaf)"
        do {
            _ = try await damaged.get(try #require(keys.first))
            Issue.record("reading a key on the damaged page succeeded")
        } catch EventStoreError.corrupted(let found, _) {
            #expect(found == location)
        }
        do {
            _ = try await allEntries(damaged)
            Issue.record("scanning over the damaged page succeeded")
        } catch EventStoreError.corrupted(let found, _) {
            #expect(found == location)
        }
        let report = try await damaged.verify()
        #expect(!report.isClean)
        #expect(report.problems.contains { $0.contains(location) }, "\(report.problems)")
        try await damaged.close()
    }

    @Test("garbage, a newer format version and another page size are refused and left untouched")
    func incompatibleFiles() async throws {
        let garbage = TemporaryDirectory("garbage")
        defer { garbage.remove() }
        try FileManager.default.createDirectory(atPath: garbage.path, withIntermediateDirectories: true)
        var random = SeededRandom(seed: 7)
        let noise = Data((0..<20_000).map { _ in UInt8.random(in: 0...255, using: &random) })
        try noise.write(to: URL(fileURLWithPath: garbage.file("data")))
        await #expect { try await PageFileKeyValueStore.open(directory: garbage.path, options: smallOptions()) } throws: { error in
            guard case EventStoreError.incompatibleStore = error else { return false }
            return true
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: garbage.file("data"))) == noise)

        let store = TemporaryDirectory("version")
        defer { store.remove() }
        let opened = try await PageFileKeyValueStore.open(directory: store.path, options: smallOptions())
        _ = try await opened.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await opened.close()

        // Another page size.
        let before = try Data(contentsOf: URL(fileURLWithPath: store.file("data")))
        await #expect { try await PageFileKeyValueStore.open(directory: store.path, options: PageFileOptions(pageSize: 8192)) }
            throws: { error in
                guard case EventStoreError.incompatibleStore(_, let reason) = error else { return false }
                return reason.contains("4096")
            }
        #expect(try Data(contentsOf: URL(fileURLWithPath: store.file("data"))) == before)

        // A newer format version, in otherwise valid meta pages.
        var data = [UInt8](before)
        for slot in 0..<2 {
            var page = Array(data[(slot * 4096)..<((slot + 1) * 4096)])
            page.storeLE(UInt32(99), at: Page.headerSize + 8)
            Page.seal(&page)
            data.replaceSubrange((slot * 4096)..<((slot + 1) * 4096), with: page)
        }
        try Data(data).write(to: URL(fileURLWithPath: store.file("data")))
        await #expect { try await PageFileKeyValueStore.open(directory: store.path, options: smallOptions()) } throws: { error in
            guard case EventStoreError.incompatibleStore(_, let reason) = error else { return false }
            return reason.contains("99")
        }
        #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: store.file("data")))) == data)
    }

    /// Either slot may hold the newest meta. A build that probed only slot 0 took a newer build's meta in slot 1 for
    /// damage, opened the store at slot 0's older state and wrote its recovery checkpoint over the newer meta. No
    /// build writes format version 0, so a sealed meta page declaring it was made by hand or by a defect: it was read
    /// as version 1, and is refused the same way now.
    @Test(
        "a newer format version, or version 0, in either meta slot alone is refused, and nothing is written",
        arguments: [(0, 2), (1, 2), (0, 0), (1, 0)] as [(Int, UInt32)])
    func unreadableVersionInOneSlot(slot: Int, version: UInt32) async throws {
        let directory = TemporaryDirectory("newer-slot")
        defer { directory.remove() }
        let options = smallOptions()
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await store.close()

        // Make `slot` the same meta with another format version, resealed (2: what a newer build would write).
        let url = URL(fileURLWithPath: directory.file("data"))
        var data = [UInt8](try Data(contentsOf: url))
        let range = (slot * options.pageSize)..<((slot + 1) * options.pageSize)
        var page = Array(data[range])
        page.storeLE(version, at: Page.headerSize + 8)
        Page.seal(&page)
        data.replaceSubrange(range, with: page)
        try Data(data).write(to: url)

        await #expect { try await PageFileKeyValueStore.open(directory: directory.path, options: options) } throws: { error in
            guard case EventStoreError.incompatibleStore(_, let reason) = error else { return false }
            return reason.contains("format version \(version)")
        }
        #expect([UInt8](try Data(contentsOf: url)) == data, "the store was changed")
    }

    /// `readMeta` used to trust the version field of slot 0 before any checksum was checked: one flipped bit there
    /// (1 -> 3) reported a newer format, and the store was refused as `incompatibleStore` although slot 0 failed its
    /// checksum and slot 1 held the newest, intact meta. Damage to a meta page falls back to the other slot, as a torn
    /// meta write does.
    @Test("a flipped bit in the version field of the older meta slot does not make the store unopenable")
    func damagedVersionInOlderSlot() async throws {
        let directory = TemporaryDirectory("review-slot0")
        defer { directory.remove() }
        let options = smallOptions()
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await store.close()  // epoch 1 in slot 1 is the durable state; slot 0 holds the older epoch 0

        let url = URL(fileURLWithPath: directory.file("data"))
        var data = [UInt8](try Data(contentsOf: url))
        data[40] ^= 0x02  // format version 1 -> 3, in slot 0 only; its checksum no longer matches
        try Data(data).write(to: url)

        do {
            let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
            #expect(try await reopened.get([1])?.value == [1])
            try await reopened.close()
        } catch {
            Issue.record("the intact slot 1 was not used: \(error)")
        }
    }

    /// A damaged newest meta page (here one flipped bit, so its checksum fails) makes recovery fall back to the
    /// older slot, which is right for a torn meta write. But then the WAL header carries the damaged meta's salt and
    /// a first LSN past the older meta's checkpoint LSN + 1: proof that the newer meta had been committed (the WAL
    /// header is only rewritten after the meta's fdatasync) and that commits are missing. Recovery used to take the
    /// WAL for a stale generation "whose records are already in the tree", open the older state as if current, and
    /// its recovery checkpoint overwrote the damaged meta and reused the pages of the newer tree: acknowledged
    /// commits were silently and permanently gone, where a `corrupted` error naming the pages was due (it is now).
    @Test("a damaged newest meta page is reported, not silently replaced by the older one")
    func damagedNewestMeta() async throws {
        let directory = TemporaryDirectory("review-newest-meta")
        defer { directory.remove() }
        let options = smallOptions()
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await store.checkpoint()  // epoch 1, slot 1
        _ = try await store.commit(KeyValueTransaction(writes: [.put([2], [2])]))
        try await store.checkpoint()  // epoch 2, slot 0: the durable state
        _ = try await store.commit(KeyValueTransaction(writes: [.put([3], [3])]))  // in the WAL only
        await store.closeWithoutCheckpoint()

        let url = URL(fileURLWithPath: directory.file("data"))
        var data = [UInt8](try Data(contentsOf: url))
        data[200] ^= 0x01  // inside meta page 0 (epoch 2), so its checksum fails
        try Data(data).write(to: url)

        await #expect { try await PageFileKeyValueStore.open(directory: directory.path, options: options) } throws: { error in
            guard case EventStoreError.corrupted(let location, let detail) = error else { return false }
            return location.contains("meta pages") && detail.contains("newest meta page is damaged")
        }
        #expect([UInt8](try Data(contentsOf: url)) == data, "the store was changed")
    }

    /// A flipped bit in the WAL header made recovery take the whole WAL for a stale generation and drop every commit
    /// since the last checkpoint, silently. The records behind it still carry the meta's salt and the next LSNs,
    /// which only the current generation's records can, so they are replayed.
    @Test("commits behind a damaged WAL header are replayed, not dropped with it", arguments: [0, 20, 35])
    func damagedWALHeader(byte: Int) async throws {
        let directory = TemporaryDirectory("wal-header")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await store.checkpoint()
        _ = try await store.commit(KeyValueTransaction(writes: [.put([2], [2])]))
        let last = try await store.commit(KeyValueTransaction(writes: [.put([3], [3])]))
        await store.closeWithoutCheckpoint()

        let url = URL(fileURLWithPath: directory.file("wal"))
        var wal = [UInt8](try Data(contentsOf: url))
        wal[byte] ^= 0x10
        try Data(wal).write(to: url)

        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(try await allEntries(reopened).map(\.key) == [[1], [2], [3]])
        #expect(try await reopened.currentRevision() == last)
        #expect(reopened.recovery.replayedTransactions == 2)
        try await reopened.close()
    }

    /// A WAL header of another format version used to read as damage, so a build meeting a newer build's WAL took it
    /// for a stale generation, and its recovery checkpoint reset the WAL: the newer build's acknowledged commits since
    /// its last checkpoint were gone. A whole header (its checksum holds) of a newer version refuses the store.
    @Test("a WAL of a newer format version is refused and left untouched", arguments: ["EVSTWAL1", "EVSTWAL3"])
    func newerWALVersion(magic: String) async throws {
        let directory = TemporaryDirectory("wal-version")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        await store.closeWithoutCheckpoint()

        // What a newer build would write: the same header with version 3 (and maybe its own magic), resealed.
        let url = URL(fileURLWithPath: directory.file("wal"))
        var wal = [UInt8](try Data(contentsOf: url))
        wal.replaceSubrange(0..<8, with: Array(magic.utf8))
        wal.storeLE(WriteAheadLog.formatVersion + 1, at: 8)
        wal.storeLE(CRC32C.checksum(wal, 0..<32), at: 32)
        try Data(wal).write(to: url)
        let data = try Data(contentsOf: URL(fileURLWithPath: directory.file("data")))

        var readOnly = smallOptions()
        readOnly.readOnly = true
        for options in [smallOptions(), readOnly] {
            await #expect { try await PageFileKeyValueStore.open(directory: directory.path, options: options) } throws: { error in
                guard case EventStoreError.incompatibleStore(let path, let reason) = error else { return false }
                return path.hasSuffix("/wal") && reason.contains("WAL format version 3")
            }
        }
        #expect([UInt8](try Data(contentsOf: url)) == wal, "the WAL was changed")
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory.file("data"))) == data, "the data file was changed")
    }

    /// verify() walked the state of the current meta page only: damage to the other slot (the previous checkpoint's
    /// meta, the one to fall back on) went unreported. Zeros there are fine: a new or just compacted store has them.
    @Test("verify reports a damaged older meta slot, and accepts an empty one")
    func verifyChecksTheOtherMetaSlot() async throws {
        let directory = TemporaryDirectory("verify-meta")
        defer { directory.remove() }
        let options = smallOptions()
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        for key: UInt8 in 1...3 {
            _ = try await store.commit(KeyValueTransaction(writes: [.put([key], [key])]))
            try await store.checkpoint()
        }
        try await store.close()
        let url = URL(fileURLWithPath: directory.file("data"))
        let written = [UInt8](try Data(contentsOf: url))
        let current = try #require(
            (0..<2).compactMap { slot -> MetaPage? in
                MetaPage.decode(
                    Array(written[(slot * options.pageSize)..<((slot + 1) * options.pageSize)]), slot: UInt64(slot),
                    pageSize: options.pageSize, path: "")
            }.max { $0.epoch < $1.epoch })
        let older = Int(1 - current.epoch % 2) * options.pageSize

        for damage in ["flip", "zero"] {
            var data = [UInt8](try Data(contentsOf: url))
            if damage == "flip" {
                data[older + 100] ^= 0x40
            } else {
                data.replaceSubrange(older..<(older + options.pageSize), with: [UInt8](repeating: 0, count: options.pageSize))
            }
            try Data(data).write(to: url)
            var readOnly = options
            readOnly.readOnly = true
            let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: readOnly)
            let report = try await reopened.verify()
            try await reopened.close()
            if damage == "flip" {
                #expect(report.problems.contains { $0.contains("meta slot \(1 - current.epoch % 2): damaged") }, "\(report.problems)")
            } else {
                #expect(report.isClean, "\(report.problems)")
            }
        }
    }

    @Test("options beyond their ranges are refused when the store opens, before anything is created")
    func optionBounds() async throws {
        let directory = TemporaryDirectory("option-bounds")
        defer { directory.remove() }
        for options in [
            PageFileOptions(cacheSizeMB: 0), PageFileOptions(cacheSizeMB: Int.max),
            PageFileOptions(checkpointThresholdMB: 0), PageFileOptions(checkpointThresholdMB: 1 << 43),
        ] {
            await #expect { try await PageFileKeyValueStore.open(directory: directory.path, options: options) } throws: { error in
                guard case EventStoreError.invalidArgument(let message) = error else { return false }
                return message.contains("MB must be from 1 to 1048576")
            }
        }
        #expect(!FileManager.default.fileExists(atPath: directory.file("data")))
    }

    @Test("a second opener gets the lock error naming the holder, in this process and from another process")
    func directoryLock() async throws {
        let directory = TemporaryDirectory("lock")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        await #expect { try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions()) } throws: { error in
            guard case EventStoreError.storeLocked(_, let pid) = error else { return false }
            return pid == ProcessInfo.processInfo.processIdentifier
        }
        try await store.close()

        var highest = -1
        let child = try CrashChildProcess(directory: directory.path, transactions: 1_000_000)
        _ = await follow(child, acks: 1, highest: &highest)
        await #expect { try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions()) } throws: { error in
            guard case EventStoreError.storeLocked(_, let pid) = error else { return false }
            return pid == child.process.pid
        }
        await child.kill()
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        try await reopened.close()
    }

    @Test("a new store directory gets mode 0700 and its files 0600")
    func permissions() async throws {
        try await withStore { _, directory in
            let attributes = try FileManager.default.attributesOfItem(atPath: directory.path)
            #expect((attributes[.posixPermissions] as? Int) == 0o700)
            for name in ["data", "wal", "lock"] {
                let file = try FileManager.default.attributesOfItem(atPath: directory.file(name))
                #expect((file[.posixPermissions] as? Int) == 0o600, "\(name)")
            }
        }
    }

    /// Writes the newest meta of the store in `directory` (a closed store of 4 KiB pages), changed by `change`, as a
    /// newer meta whose checksum holds, and returns it. `listed`, if given, is written as a free-list page appended to
    /// the file and made the meta's free list (`linked`: its chain comes back to itself).
    @discardableResult
    private func rewriteMeta(
        _ directory: TemporaryDirectory, listing listed: [UInt64]? = nil, linked: Bool = false,
        _ change: (inout MetaPage) -> Void = { _ in }
    ) throws -> MetaPage {
        try rewriteNewestMeta(in: directory) { next in
            if let listed {
                let listPage = next.pageCount
                var list = FreeList.encode(listed, into: [listPage], lsn: next.checkpointLSN, pageSize: 4096)[0]
                if linked {
                    list.storeLE(listPage, at: Page.headerSize)  // the chain goes on to this same page
                    Page.seal(&list)
                }
                next.freeListHead = listPage
                next.pageCount = listPage + 1
                let data = try #require(FileHandle(forUpdatingAtPath: directory.file("data")))
                defer { try? data.close() }
                try data.seek(toOffset: listPage * 4096)
                try data.write(contentsOf: Data(list))
            }
            change(&next)
        }
    }

    private func expectCorrupted(_ directory: TemporaryDirectory, at suffix: String) async {
        for readOnly in [false, true] {
            var options = smallOptions()
            options.readOnly = readOnly
            await #expect {
                _ = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
            } throws: { error in
                guard case EventStoreError.corrupted(let location, _) = error else { return false }
                return location.hasSuffix(suffix)
            }
        }
    }

    @Test(
        "a free list that names a page outside the file, one page twice, or comes back to itself is corruption naming it",
        arguments: ["outside", "twice", "loop"])
    func freeListEntries(_ kind: String) async throws {
        let directory = TemporaryDirectory("free-list-entries")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await store.close()
        let entries: [UInt64] = kind == "outside" ? [1_000] : kind == "twice" ? [2, 2] : []
        let meta = try rewriteMeta(directory, listing: entries, linked: kind == "loop")
        await expectCorrupted(directory, at: "page \(meta.freeListHead)")
    }

    /// FORMAT.md says a duplicate in the free list is corruption "naming the list page"; the error named the chain's
    /// first page whichever page held the duplicate (twenty-first session's format review).
    @Test("a free list whose second page names a page its first page named is corruption naming the second page")
    func freeListDuplicateOnALaterPage() async throws {
        let directory = TemporaryDirectory("free-list-later-page")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        try await store.close()
        let perPage = FreeList.capacity(pageSize: 4096)
        let (first, second) = (UInt64(perPage + 100), UInt64(perPage + 101))
        try rewriteNewestMeta(in: directory) { next in
            // A full first page of pages nobody uses, then the second page repeats the first entry.
            let entries = (0..<UInt64(perPage)).map { 10 + $0 } + [10]
            let pages = FreeList.encode(entries, into: [first, second], lsn: next.checkpointLSN, pageSize: 4096)
            let data = try #require(FileHandle(forUpdatingAtPath: directory.file("data")))
            defer { try? data.close() }
            for (number, page) in zip([first, second], pages) {
                try data.seek(toOffset: number * 4096)
                try data.write(contentsOf: Data(page))
            }
            next.freeListHead = first
            next.pageCount = second + 1
        }
        await expectCorrupted(directory, at: "page \(second)")
    }

    @Test(
        "a meta page whose checksum holds over a page count or page numbers the file cannot have is corruption",
        arguments: ["huge", "max", "beyond the file", "root", "free list"])
    func impossibleMeta(_ kind: String) async throws {
        let directory = TemporaryDirectory("impossible-meta")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], Array(repeating: 7, count: 20_000))]))
        // WAL records to replay: a writable open would checkpoint by the meta's numbers at once.
        await store.closeWithoutCheckpoint()
        let meta = try rewriteMeta(directory) { meta in
            switch kind {
            case "huge": meta.pageCount = 1 << 63
            case "max": meta.pageCount = .max
            case "beyond the file": meta.pageCount += 1
            case "root": meta.root = meta.pageCount
            default: meta.freeListHead = 1
            }
        }
        // Named by the meta page's slot.
        await expectCorrupted(directory, at: "page \(meta.epoch % 2)")
    }
}
