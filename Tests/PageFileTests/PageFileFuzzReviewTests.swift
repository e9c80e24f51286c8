// Review: structured, checksum-recomputing mutations of a closed store's data file and WAL. Each case must end in
// correct data or a thrown typed error: never a trap, a hang or wrong data. The harness case runs only when
// FUZZ_SEED is set (one seed per process, driven from a shell loop with a timeout); the defect tests below run a
// single case in a child process (this test binary, re-run with FUZZ_REVIEW_CHILD set) so that a trap shows as the
// child's signal instead of killing the test run.
//
// To run a range of seeds, one process each (build first with `swift build --build-tests`), from the package root:
//   for s in $(seq 1 150); do FUZZ_SEED=$s timeout 60 swift test --skip-build --filter harnessCase >/tmp/fuzz-$s.log 2>&1 || echo "seed $s: exit $?"; done
// Each log's "FUZZ seed n: ..." line says what the mutation was and how each step ended; a trap or a hang shows as the
// exit status (timeout's 124 for a hang). The first seed builds the shared base store, which takes a few seconds.

import EventStore
@testable import EventStoreKV
import Foundation
import ProcessSupport
import Testing

enum FuzzReview {
    static let pageSize = 4096

    static func options() -> PageFileOptions {
        PageFileOptions(pageSize: pageSize, cacheSizeMB: 1, durability: .full, checkpointThresholdMB: 64)
    }

    /// The deterministic build plan: batches of writes; a checkpoint after batch `checkpointAfter`.
    static func plan() -> (batches: [[KeyWrite]], checkpointAfter: Int) {
        var random = SeededRandom(seed: 42)
        var batches: [[KeyWrite]] = []
        var versions = [Int](repeating: 0, count: 6)
        for batch in 0..<44 {
            var writes: [KeyWrite] = []
            for _ in 0..<10 {
                let stream = Int(random.next() % 6)
                versions[stream] += 1
                var key = Array("s\(stream)/".utf8)
                key += withUnsafeBytes(of: UInt64(versions[stream]).bigEndian) { Array($0) }
                let big = random.next() % 25 == 0
                let length = big ? 1500 + Int(random.next() % 9000) : 20 + Int(random.next() % 180)
                writes.append(.put(key, (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }))
            }
            if batch % 7 == 3 {
                let stream = Int(random.next() % 6)
                writes.append(.put(Array("m/s\(stream)".utf8), Array("meta-\(batch)".utf8)))
            }
            if batch % 9 == 5 {
                writes.append(.delete(Array("s1/".utf8) + withUnsafeBytes(of: UInt64(1 + batch / 9).bigEndian) { Array($0) }))
            }
            batches.append(writes)
        }
        return (batches, 38)
    }

    /// The contents after each batch (index 0: empty).
    static func states() -> [[Key: [UInt8]]] {
        var state: [Key: [UInt8]] = [:]
        var result = [state]
        for batch in plan().batches {
            for write in batch {
                switch write {
                case .put(let key, let value, _): state[key] = value
                case .delete(let key): state[key] = nil
                }
            }
            result.append(state)
        }
        return result
    }

    /// A closed store built from `plan()`: checkpointed after batch 38, later batches only in the WAL.
    static func base() async throws -> String {
        let path = NSTemporaryDirectory() + "eventstore-fuzz-review-base-v4"
        if FileManager.default.fileExists(atPath: path + "/done") { return path }
        try? FileManager.default.removeItem(atPath: path)
        let store = try await PageFileKeyValueStore.open(directory: path, options: options())
        let (batches, checkpointAfter) = plan()
        for (index, batch) in batches.enumerated() {
            _ = try await store.commit(KeyValueTransaction(writes: batch))
            // Earlier checkpoints free the pages later ones replace: the last checkpoint writes a free list.
            if index + 1 == checkpointAfter || index + 1 == 15 || index + 1 == 27 { try await store.checkpoint() }
        }
        await store.closeWithoutCheckpoint()
        _ = FileManager.default.createFile(atPath: path + "/done", contents: Data())
        return path
    }

    static func copy(_ source: String) throws -> String {
        let path = NSTemporaryDirectory() + "eventstore-fuzz-review-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        for name in ["data", "wal"] { try FileManager.default.copyItem(atPath: source + "/" + name, toPath: path + "/" + name) }
        return path
    }

    static func read(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }
    static func write(_ bytes: [UInt8], _ path: String) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

    static func newestMeta(_ data: [UInt8]) -> MetaPage? { PageFileTests.newestMeta(in: data, pageSize: pageSize) }

    static func page(_ data: [UInt8], _ number: Int) -> [UInt8] { Array(data[(number * pageSize)..<((number + 1) * pageSize)]) }

    static func put(_ page: [UInt8], into data: inout [UInt8], at number: Int) {
        var sealed = page
        Page.seal(&sealed)
        data.replaceSubrange((number * pageSize)..<((number + 1) * pageSize), with: sealed)
    }

    /// Entry starts (page offsets) of a leaf page.
    static func leafEntries(_ page: [UInt8]) -> [Int] {
        let count = Int(page.loadLE(UInt16.self, at: Page.countOffset))
        var at = Page.headerSize
        var starts: [Int] = []
        for _ in 0..<count {
            starts.append(at)
            let keyLength = Int(page.loadLE(UInt16.self, at: at))
            let fields = at + 2 + keyLength
            let flags = page[fields]
            let valueLength = Int(page.loadLE(UInt32.self, at: fields + 25))
            at = fields + LeafLayout.valueFromFlags + (flags == 1 ? 8 : valueLength)
        }
        return starts
    }

    /// Entry starts of a branch page.
    static func branchEntries(_ page: [UInt8]) -> [Int] {
        let count = Int(page.loadLE(UInt16.self, at: Page.countOffset))
        var at = Page.headerSize
        var starts: [Int] = []
        for _ in 0..<count {
            starts.append(at)
            at += 2 + Int(page.loadLE(UInt16.self, at: at)) + 8
        }
        return starts
    }

    static func pick<T>(_ values: [T], _ random: inout SeededRandom) -> T { values[Int(random.next() % UInt64(values.count))] }

    static func u64Values(_ original: UInt64, pageCount: UInt64, root: UInt64, own: UInt64, _ random: inout SeededRandom)
        -> UInt64
    {
        pick(
            [0, 1, 2, original &+ 1, original &- 1, pageCount - 1, pageCount, pageCount + 1, .max, .max - 1, 1 << 40,
             2 + random.next() % (pageCount - 2), root, own, original &+ 2], &random)
    }

    static func u16Values(_ original: UInt16, _ random: inout SeededRandom) -> UInt16 {
        pick([0, 1, original &+ 1, original &- 1, 0xFFFF, 0x7FFF, UInt16(random.next() % 4096), original &* 2], &random)
    }

    static func u32Values(_ original: UInt32, _ random: inout SeededRandom) -> UInt32 {
        pick([0, 1, original &+ 1, original &- 1, .max, 1 << 25, (1 << 25) + 1, UInt32(random.next() % 100_000), 4064, 4065],
            &random)
    }

    /// Applies one structured mutation chosen by `random` to the store in `directory`; returns its description.
    static func mutate(_ directory: String, _ random: inout SeededRandom) throws -> String {
        var data = try read(directory + "/data")
        var wal = try read(directory + "/wal")
        guard let meta = newestMeta(data) else { return "no meta" }
        let pageCount = meta.pageCount
        var byType: [UInt8: [Int]] = [:]
        for number in 2..<Int(pageCount) { byType[page(data, number)[Page.typeOffset], default: []].append(number) }
        let target = random.next() % 100
        var description = ""
        if target < 25 {
            description = try mutateWAL(&wal, meta: meta, &random)
            try write(wal, directory + "/wal")
            return description
        } else if target < 37 {
            var changed = meta
            let field = random.next() % 8
            let original: UInt64
            switch field {
            case 0: original = meta.root
            case 1: original = meta.freeListHead
            case 2: original = meta.pageCount
            case 3: original = meta.checkpointLSN
            case 4: original = meta.revision
            case 5: original = meta.walSalt
            case 6: original = meta.keyCount
            default: original = meta.epoch
            }
            let value = u64Values(original, pageCount: pageCount, root: meta.root, own: meta.epoch % 2, &random)
            switch field {
            case 0: changed.root = value
            case 1: changed.freeListHead = value
            case 2: changed.pageCount = value
            case 3: changed.checkpointLSN = value
            case 4: changed.revision = value
            case 5: changed.walSalt = value
            case 6: changed.keyCount = value
            default: changed.epoch = value
            }
            let slot = Int(changed.epoch % 2)
            data.replaceSubrange((slot * pageSize)..<((slot + 1) * pageSize), with: changed.encoded())
            description = "meta field \(field): \(original) -> \(value)"
        } else if target < 55, let branches = byType[PageType.branch.rawValue] {
            let number = pick(branches, &random)
            var bytes = page(data, number)
            let entries = branchEntries(bytes)
            let field = random.next() % 4
            if field == 0 {
                let original = bytes.loadLE(UInt16.self, at: Page.countOffset)
                let value = u16Values(original, &random)
                bytes.storeLE(value, at: Page.countOffset)
                description = "branch \(number) count \(original) -> \(value)"
            } else if field == 1 {
                let entry = pick(entries, &random)
                let original = bytes.loadLE(UInt16.self, at: entry)
                let value = u16Values(original, &random)
                bytes.storeLE(value, at: entry)
                description = "branch \(number) key length at \(entry) \(original) -> \(value)"
            } else {
                let entry = pick(entries, &random)
                let at = entry + 2 + Int(bytes.loadLE(UInt16.self, at: entry))
                let original = bytes.loadLE(UInt64.self, at: at)
                let value = field == 3
                    ? pick([UInt64(number), meta.root] + branches.map(UInt64.init) + (byType[3] ?? []).map(UInt64.init), &random)
                    : u64Values(original, pageCount: pageCount, root: meta.root, own: UInt64(number), &random)
                bytes.storeLE(value, at: at)
                description = "branch \(number) child at \(at) \(original) -> \(value)"
            }
            put(bytes, into: &data, at: number)
        } else if target < 80, let leaves = byType[PageType.leaf.rawValue] {
            let number = pick(leaves, &random)
            var bytes = page(data, number)
            let entries = leafEntries(bytes)
            let field = random.next() % 6
            let entry = entries.isEmpty ? Page.headerSize : pick(entries, &random)
            let fields = entry + 2 + Int(bytes.loadLE(UInt16.self, at: entry))
            switch field {
            case 0:
                let original = bytes.loadLE(UInt16.self, at: Page.countOffset)
                let value = u16Values(original, &random)
                bytes.storeLE(value, at: Page.countOffset)
                description = "leaf \(number) count \(original) -> \(value)"
            case 1:
                let original = bytes.loadLE(UInt16.self, at: entry)
                let value = u16Values(original, &random)
                bytes.storeLE(value, at: entry)
                description = "leaf \(number) key length at \(entry) \(original) -> \(value)"
            case 2:
                let original = bytes[fields]
                bytes[fields] = pick([0, 1, 2, 255], &random)
                description = "leaf \(number) flags at \(fields) \(original) -> \(bytes[fields])"
            case 3:
                let original = bytes.loadLE(UInt32.self, at: fields + 25)
                let value = u32Values(original, &random)
                bytes.storeLE(value, at: fields + 25)
                description = "leaf \(number) value length at \(fields + 25) \(original) -> \(value)"
            case 4:
                // The overflow reference, if any; else the flags of an inline entry become overflow.
                let at = fields + LeafLayout.valueFromFlags
                let original = bytes.loadLE(UInt64.self, at: at)
                let value = u64Values(original, pageCount: pageCount, root: meta.root, own: UInt64(number), &random)
                bytes.storeLE(value, at: at)
                description = "leaf \(number) overflow ref at \(at) (flags \(bytes[fields])) \(original) -> \(value)"
            default:
                // Swap two adjacent keys' first bytes (order damage).
                let other = entries.count > 1 ? entries[1] : entry
                let a = bytes[entry + 2]
                bytes[entry + 2] = bytes[other + 2]
                bytes[other + 2] = a
                description = "leaf \(number) key bytes swapped \(entry) <-> \(other)"
            }
            put(bytes, into: &data, at: number)
        } else if target < 90, let lists = byType[PageType.freeList.rawValue] {
            let number = pick(lists, &random)
            var bytes = page(data, number)
            let count = Int(bytes.loadLE(UInt32.self, at: Page.countOffset))
            switch random.next() % 3 {
            case 0:
                let original = bytes.loadLE(UInt32.self, at: Page.countOffset)
                let value = u32Values(original, &random)
                bytes.storeLE(value, at: Page.countOffset)
                description = "free-list \(number) count \(original) -> \(value)"
            case 1:
                let original = bytes.loadLE(UInt64.self, at: Page.headerSize)
                let value = u64Values(original, pageCount: pageCount, root: meta.root, own: UInt64(number), &random)
                bytes.storeLE(value, at: Page.headerSize)
                description = "free-list \(number) next \(original) -> \(value)"
            default:
                let at = Page.headerSize + 8 + 8 * Int(random.next() % UInt64(max(count, 1)))
                let original = bytes.loadLE(UInt64.self, at: at)
                let value = u64Values(original, pageCount: pageCount, root: meta.root, own: UInt64(number), &random)
                bytes.storeLE(value, at: at)
                description = "free-list \(number) entry at \(at) \(original) -> \(value)"
            }
            put(bytes, into: &data, at: number)
        } else {
            // Any page's header: type, number or LSN.
            let number = 2 + Int(random.next() % (pageCount - 2))
            var bytes = page(data, number)
            switch random.next() % 3 {
            case 0:
                let original = bytes[Page.typeOffset]
                bytes[Page.typeOffset] = UInt8(random.next() % 7)
                description = "page \(number) type \(original) -> \(bytes[Page.typeOffset])"
            case 1:
                let value = u64Values(UInt64(number), pageCount: pageCount, root: meta.root, own: UInt64(number), &random)
                bytes.storeLE(value, at: Page.numberOffset)
                description = "page \(number) number -> \(value)"
            default:
                let original = bytes.loadLE(UInt64.self, at: Page.lsnOffset)
                let value = pick([0, original &+ 1, .max, meta.checkpointLSN + 1], &random)
                bytes.storeLE(value, at: Page.lsnOffset)
                description = "page \(number) lsn \(original) -> \(value)"
            }
            put(bytes, into: &data, at: number)
        }
        try write(data, directory + "/data")
        return description
    }

    static func saltSeed(_ salt: UInt64) -> UInt32 { withUnsafeBytes(of: salt.littleEndian) { CRC32C.checksum($0) } }

    /// Record starts of the valid WAL records.
    static func records(_ wal: [UInt8], salt: UInt64) -> [(start: Int, end: Int)] {
        var result: [(Int, Int)] = []
        var offset = WriteAheadLog.headerSize
        let scan = WriteAheadLog.scan(wal, salt: salt, firstLSN: wal.loadLE(UInt64.self, at: 24))
        while offset < scan.validEnd {
            let end = offset + WriteAheadLog.frameSize + Int(wal.loadLE(UInt32.self, at: offset))
            result.append((offset, end))
            offset = end
        }
        return result
    }

    static func resealRecord(_ wal: inout [UInt8], start: Int, salt: UInt64) {
        let length = Int(wal.loadLE(UInt32.self, at: start))
        let end = min(wal.count, start + WriteAheadLog.frameSize + length)
        guard end >= start + 8 else { return }
        var checksum = CRC32C.checksum(wal, start..<(start + 4), seed: saltSeed(salt))
        checksum = CRC32C.checksum(wal, (start + 8)..<end, seed: checksum)
        wal.storeLE(checksum, at: start + 4)
    }

    static func mutateWAL(_ wal: inout [UInt8], meta: MetaPage, _ random: inout SeededRandom) throws -> String {
        let salt = wal.loadLE(UInt64.self, at: 16)
        let records = records(wal, salt: salt)
        let choice = random.next() % 10
        if choice == 0 || records.isEmpty {
            // Header: first LSN or salt, resealed.
            let at = pick([16, 24], &random)
            let original = wal.loadLE(UInt64.self, at: at)
            let value = pick([0, 1, original &+ 1, original &- 1, .max, meta.checkpointLSN], &random)
            wal.storeLE(value, at: at)
            wal.storeLE(CRC32C.checksum(wal, 0..<32), at: 32)
            return "WAL header field \(at) \(original) -> \(value)"
        }
        if choice == 1 {
            // A new record after the last: a put with an odd key or value length, or a delete, at the next LSN.
            let end = records.last!.end
            let lsn = wal.loadLE(UInt64.self, at: records.last!.start + 8) + 1
            let revision = wal.loadLE(UInt64.self, at: records.last!.start + 24) + 1
            let keyLength = pick([0, 1, 977, 978, 2100, 4030, 4100, 9000, 65535], &random)
            let valueLength = pick([0, 10, 1000, 5000], &random)
            let key = [UInt8](repeating: 0x73, count: keyLength)
            let transaction = LoggedTransaction(
                lsn: lsn, revision: revision,
                writes: [.put(key: key, value: [UInt8](repeating: 1, count: valueLength), version: 1, expiresAt: 0)])
            let record = WriteAheadLog.encode(transaction, salt: salt)
            if wal.count < end + record.count { wal += [UInt8](repeating: 0, count: end + record.count - wal.count) }
            wal.replaceSubrange(end..<(end + record.count), with: record)
            return "WAL record injected: key \(keyLength) bytes, value \(valueLength) bytes"
        }
        let record = pick(records, &random)
        let field = random.next() % 6
        var description = ""
        switch field {
        case 0:
            let original = wal.loadLE(UInt32.self, at: record.start)
            let value = u32Values(original, &random)
            wal.storeLE(value, at: record.start)
            description = "WAL record at \(record.start) length \(original) -> \(value)"
        case 1:
            let original = wal.loadLE(UInt64.self, at: record.start + 8)
            let value = pick([0, original &+ 1, original &- 1, .max], &random)
            wal.storeLE(value, at: record.start + 8)
            description = "WAL record at \(record.start) LSN \(original) -> \(value)"
        case 2:
            let original = wal.loadLE(UInt64.self, at: record.start + 24)
            let value = pick([0, original &+ 1, original &- 1, .max, .max - 1], &random)
            wal.storeLE(value, at: record.start + 24)
            description = "WAL record at \(record.start) revision \(original) -> \(value)"
        case 3:
            let original = wal.loadLE(UInt32.self, at: record.start + 32)
            let value = u32Values(original, &random)
            wal.storeLE(value, at: record.start + 32)
            description = "WAL record at \(record.start) write count \(original) -> \(value)"
        default:
            // The first write's kind, key length, version, or value length.
            let at = record.start + 36
            let keyLength = Int(wal.loadLE(UInt16.self, at: at + 1))
            switch random.next() % 4 {
            case 0:
                wal[at] = pick([0, 1, 2, 3], &random)
                description = "WAL record at \(record.start) kind -> \(wal[at])"
            case 1:
                let value = u16Values(UInt16(keyLength), &random)
                wal.storeLE(value, at: at + 1)
                description = "WAL record at \(record.start) key length \(keyLength) -> \(value)"
            case 2:
                let value = pick([0, UInt64.max, 1 << 63], &random)
                wal.storeLE(value, at: at + 3 + keyLength)
                description = "WAL record at \(record.start) version -> \(value)"
            default:
                let value = u32Values(wal.loadLE(UInt32.self, at: at + 3 + keyLength + 16), &random)
                wal.storeLE(value, at: at + 3 + keyLength + 16)
                description = "WAL record at \(record.start) value length -> \(value)"
            }
        }
        resealRecord(&wal, start: record.start, salt: salt)
        return description
    }

    static func say(_ line: String) { FileHandle.standardError.write(Data((line + "\n").utf8)) }

    /// Whether `error` is one of the typed errors a damaged store may throw.
    static func isTyped(_ error: any Error) -> Bool { error is EventStoreError || error is KeyValueStoreError }

    /// Runs one seeded case; returns a line describing what happened, and records an issue for wrong data or an
    /// untyped error.
    static func run(seed: UInt64) async throws -> String {
        let base = try await base()
        let directory = try copy(base)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var random = SeededRandom(seed: seed)
        let mutation = try mutate(directory, &random)
        var log = "seed \(seed): \(mutation):"
        FuzzReview.say("MUT seed \(seed): \(mutation)")
        let states = states()
        let checkpointed = plan().checkpointAfter
        func note(_ step: String, _ error: any Error) {
            log += " \(step)=\(isTyped(error) ? "typed" : "UNTYPED")(\(String(describing: error).prefix(160)))"
            if !isTyped(error) { Issue.record("\(log)") }
        }
        // A read-only store first (it never writes): its reads must be right or typed errors too.
        var readOnly = options()
        readOnly.readOnly = true
        do {
            let snapshot = try await PageFileKeyValueStore.open(directory: directory, options: readOnly)
            do {
                let entries = try await allEntries(snapshot)
                let found = Dictionary(entries.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
                if states[checkpointed...].contains(where: { $0 == found }) { log += " ro-scan=ok" } else {
                    log += " ro-scan=WRONG"
                    Issue.record("\(log)")
                }
            } catch { note("ro-scan", error) }
            try? await snapshot.close()
        } catch { note("ro-open", error) }
        FuzzReview.say("STEP read-only done")
        let store: PageFileKeyValueStore
        do { store = try await PageFileKeyValueStore.open(directory: directory, options: options()) } catch {
            note("open", error)
            return log
        }
        log += " open=ok"
        FuzzReview.say("STEP open ok")
        var verifyClean = false
        do {
            let report = try await store.verify()
            verifyClean = report.isClean
            log += " verify=\(report.isClean ? "clean" : "problems(\(report.problems.count): \(report.problems.first ?? ""))")"
        } catch { note("verify", error) }
        FuzzReview.say("STEP verify done")
        // Scan: the contents must be one of the states from the checkpoint on (a damaged WAL may cut later batches).
        do {
            let entries = try await allEntries(store)
            let found = Dictionary(entries.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
            if let match = states[checkpointed...].lastIndex(where: { $0 == found }) {
                log += " scan=state\(match)"
            } else {
                log += " scan=WRONG(\(entries.count) entries, verify \(verifyClean ? "clean" : "not clean"))"
                Issue.record("\(log)")
            }
        } catch { note("scan", error) }
        // Point reads of every key ever written.
        do {
            var wrong = 0
            var keys = Set<Key>()
            for state in states { keys.formUnion(state.keys) }
            for key in keys {
                let entry = try await store.get(key)
                let candidates = Set(states[checkpointed...].map { $0[key] })
                if !candidates.contains(entry?.value) { wrong += 1 }
            }
            log += wrong == 0 ? " get=ok" : " get=WRONG(\(wrong) keys, verify \(verifyClean ? "clean" : "not clean"))"
            if wrong > 0 { Issue.record("\(log)") }
        } catch { note("get", error) }
        do {
            _ = try await store.commit(
                KeyValueTransaction(writes: [.put(Array("s0/".utf8) + [0xFF], [1, 2, 3]), .delete(Array("s2/".utf8) + [0, 0, 0, 0, 0, 0, 0, 1])]))
            let back = try await store.get(Array("s0/".utf8) + [0xFF])
            log += back?.value == [1, 2, 3] ? " append=ok" : " append=WRONG"
            if back?.value != [1, 2, 3] { Issue.record("\(log)") }
        } catch { note("append", error) }
        do { try await store.close() } catch { note("close", error) }
        return log
    }
}

@Suite("PageFileFuzzReview")
struct PageFileFuzzReviewTests {
    /// One harness case per process: FUZZ_SEED=n (or FUZZ_SEEDS=a-b for a range in this process).
    @Test("fuzz harness case from FUZZ_SEED")
    func harnessCase() async throws {
        let environment = ProcessInfo.processInfo.environment
        if let text = environment["FUZZ_SEED"], let seed = UInt64(text) {
            print("FUZZ " + (try await FuzzReview.run(seed: seed)))
        }
        let range = environment["FUZZ_SEEDS"]?.split(separator: "-").compactMap { UInt64($0) } ?? []
        if range.count == 2, range[0] <= range[1] {
            for seed in range[0]...range[1] { print("FUZZ " + (try await FuzzReview.run(seed: seed))) }
        }
    }
}

// MARK: Reduced defect cases. Each damages a store (checksums recomputed as the format says) and runs in a child
// process (this test binary with FUZZ_REVIEW_CHILD set), so a trap shows as the child's signal and a hang as a kill.
enum FuzzChild {
    static let size = 4096
    static func opts() -> PageFileOptions { PageFileOptions(pageSize: size, cacheSizeMB: 1, checkpointThresholdMB: 64) }
    static func key(_ i: Int) -> Key { [0x6B] + withUnsafeBytes(of: UInt64(i).bigEndian) { Array($0) } }
    static func file(_ p: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: p))) }
    static func save(_ b: [UInt8], _ p: String) throws { try Data(b).write(to: URL(fileURLWithPath: p)) }
    static func meta(_ d: [UInt8]) -> MetaPage? { newestMeta(in: d, pageSize: size) }
    static func page(_ d: [UInt8], _ n: UInt64) -> [UInt8] { Array(d[(Int(n) * size)..<((Int(n) + 1) * size)]) }
    static func put(_ p: [UInt8], _ d: inout [UInt8], _ n: UInt64) {
        var p = p
        Page.seal(&p)
        d.replaceSubrange((Int(n) * size)..<((Int(n) + 1) * size), with: p)
    }
    /// Offsets of a branch page's child numbers.
    static func children(_ p: [UInt8]) -> [Int] {
        var at = Page.headerSize
        return (0..<Int(p.loadLE(UInt16.self, at: Page.countOffset))).map { _ in
            at += 2 + Int(p.loadLE(UInt16.self, at: at)) + 8
            return at - 8
        }
    }
    /// A closed store: key(0) holds 5000 bytes (overflow pages; 100 unless `big`), keys 1..<count 100 bytes; checkpointed, then
    /// `walCommits` more commits only in the WAL.
    static func store(count: Int, walCommits: Int = 0, big: Bool = true) async throws -> String {
        let path = NSTemporaryDirectory() + "eventstore-fuzz-child-\(UUID().uuidString)"
        let store = try await PageFileKeyValueStore.open(directory: path, options: opts())
        _ = try await store.commit(KeyValueTransaction(writes: [.put(key(0), [UInt8](repeating: 9, count: big ? 5000 : 100))]))
        for i in 1..<count { _ = try await store.commit(KeyValueTransaction(writes: [.put(key(i), [UInt8](repeating: 1, count: 100))])) }
        try await store.checkpoint()
        for i in 0..<walCommits { _ = try await store.commit(KeyValueTransaction(writes: [.put(key(count + i), [1])])) }
        await store.closeWithoutCheckpoint()
        return path
    }
    static func say(_ s: String) { FileHandle.standardError.write(Data((s + "\n").utf8)) }
    /// Opens the damaged store and runs `body`; every failure must be a typed EventStoreError.
    static func expectTyped(_ path: String, _ body: (PageFileKeyValueStore) async throws -> Void) async {
        do { try await body(try await PageFileKeyValueStore.open(directory: path, options: opts())) } catch {
            #expect(error is EventStoreError, "\(error)")
        }
    }
    static func changeMeta(_ path: String, slot: Int? = nil, _ change: (inout MetaPage) -> Void) throws {
        var d = try file(path + "/data")
        var m = try #require(meta(d))
        change(&m)
        let s = slot ?? Int(m.epoch % 2)
        d.replaceSubrange((s * size)..<((s + 1) * size), with: m.encoded())
        try save(d, path + "/data")
    }
    static func commitNew(_ s: PageFileKeyValueStore) async throws {
        _ = try await s.commit(KeyValueTransaction(writes: [.put(key(1000), [1])]))
        try await s.checkpoint()
    }

    static let cases = [
        "branch child is its own page", "WAL record with a 5000-byte key", "leaf with an inline entry over a quarter page",
        "overflow reference is UInt64.max", "meta checkpointLSN is max", "meta keyCount is max", "meta revision is max",
        "meta epoch is max",
    ]

    static func run(_ name: String) async throws {
        let path = try await store(
            count: name.hasPrefix("branch") ? 200 : 3, walCommits: name.hasPrefix("WAL") ? 1 : 0, big: !name.hasPrefix("leaf"))
        defer { try? FileManager.default.removeItem(atPath: path) }
        var d = try file(path + "/data")
        let m = try #require(meta(d))
        switch name {
        case "branch child is its own page":
            // The root branch's second child names the root itself; get(separator 1) must throw, not loop forever.
            var p = page(d, m.root)
            let entry1 = children(p)[0] + 8
            let separator = Array(p[(entry1 + 2)..<(entry1 + 2 + Int(p.loadLE(UInt16.self, at: entry1)))])
            p.storeLE(m.root, at: children(p)[1])
            put(p, &d, m.root)
            try save(d, path + "/data")
            await expectTyped(path) { s in
                say("opened; get(\(separator))")
                _ = try await s.get(separator)
                Issue.record("no error")
            }
        case "WAL record with a 5000-byte key":
            // A record after the last one, next LSN, CRC seeded with the salt: a put whose key is longer than a page.
            var wal = try file(path + "/wal")
            let salt = wal.loadLE(UInt64.self, at: 16)
            let scan = WriteAheadLog.scan(wal, salt: salt, firstLSN: m.checkpointLSN + 1)
            let record = WriteAheadLog.encode(
                LoggedTransaction(lsn: m.checkpointLSN + 2, revision: m.revision + 2,
                    writes: [.put(key: [UInt8](repeating: 0x41, count: 5000), value: [1], version: 1, expiresAt: 0)]), salt: salt)
            wal.replaceSubrange(scan.validEnd..<min(wal.count, scan.validEnd + record.count), with: record)
            try save(wal, path + "/wal")
            await expectTyped(path) { try await $0.close() }
        case "leaf with an inline entry over a quarter page":
            // Root leaf rewritten as keys a, c, d with c's 3850-byte value inline (4046 of 4064 body bytes). Putting b
            // (900 bytes, an ordinary inline value) splits it into [a, b, c] (4896 bytes) and [d].
            let entry = { (n: Int) in LeafEntry(value: .inline([UInt8](repeating: 7, count: n)), version: 1, modRevision: 1, expiresAt: 0) }
            let leaf = Node(leaf: [[0x61], [0x63], [0x64]], entries: [entry(50), entry(3850), entry(50)], owner: 0)
            let lsn = page(d, m.root).loadLE(UInt64.self, at: Page.lsnOffset)
            put(try NodeCodec.encode(leaf, number: m.root, lsn: lsn, pageSize: size, path: ""), &d, m.root)
            try save(d, path + "/data")
            await expectTyped(path) { s in
                say("opened; verify clean: \(try await s.verify().isClean)")
                _ = try await s.commit(KeyValueTransaction(writes: [.put([0x62], [UInt8](repeating: 5, count: 900))]))
                try await s.checkpoint()
            }
        case "overflow reference is UInt64.max":
            // key(0)'s leaf entry names overflow page UInt64.max: reading it is refused; overwriting it must be too.
            var p = page(d, m.root)
            let fields = Page.headerSize + 2 + 9
            #expect(p[fields] == LeafLayout.overflowFlag)
            p.storeLE(UInt64.max, at: fields + LeafLayout.valueFromFlags)
            put(p, &d, m.root)
            try save(d, path + "/data")
            await expectTyped(path) { s in
                await #expect(throws: EventStoreError.self) { _ = try await s.get(key(0)) }
                say("read refused; overwriting key(0)")
                _ = try await s.commit(KeyValueTransaction(writes: [.put(key(0), [1])]))
            }
        case "meta checkpointLSN is max":
            try changeMeta(path) { $0.checkpointLSN = .max }
            await expectTyped(path) { try await $0.close() }
        case "meta keyCount is max":
            try changeMeta(path) { $0.keyCount = .max }
            await expectTyped(path) { try await commitNew($0) }
        case "meta revision is max":
            try changeMeta(path) { $0.revision = .max }
            await expectTyped(path) { try await commitNew($0) }
        default:  // "meta epoch is max": written to slot 1 (max % 2)
            try changeMeta(path, slot: 1) { $0.epoch = .max }
            await expectTyped(path) { try await commitNew($0) }
        }
    }
}

extension PageFileFuzzReviewTests {
    @Test("fuzz review child case from FUZZ_REVIEW_CHILD (does nothing in a normal run)")
    func childCase() async throws {
        guard let name = ProcessInfo.processInfo.environment["FUZZ_REVIEW_CHILD"] else { return }
        try await FuzzChild.run(name)
    }

    @Test("stored bytes whose checksums hold give a typed error, never a trap or a hang", .serialized, arguments: FuzzChild.cases)
    func childProcessCases(_ name: String) async throws {
        let log = NSTemporaryDirectory() + "fuzz-child-\(UUID().uuidString).log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: log) }
        let child = try ChildProcess(
            CommandLine.arguments[0], ["--testing-library", "swift-testing", "--filter", "childCase"],
            environment: ProcessInfo.processInfo.environment.merging(["FUZZ_REVIEW_CHILD": name]) { $1 },
            standardOutput: .file(log), standardError: .file(log))
        let watchdog = Task {
            try await Task.sleep(for: .seconds(30))
            child.send(SIGKILL)
        }
        let ending = try await child.exited()
        watchdog.cancel()
        let lines = (try String(contentsOfFile: log, encoding: .utf8)).split(separator: "\n")
            .filter { $0.contains("Fatal error") || $0.contains("opened") || $0.contains("refused") || $0.contains("✘") }
        let how = ending == .signalled(SIGKILL) ? "hung (killed after 30 s)" : "\(ending)"
        #expect(ending == .exited(0), "\(name): child \(how): \(lines.prefix(3).joined(separator: " | "))")
    }

    @Test("a branch child that names another subtree (checksum recomputed): a scan must not return keys twice or out of order")
    func branchChildNamesAnotherLeaf() async throws {
        let path = try await FuzzChild.store(count: 200)
        defer { try? FileManager.default.removeItem(atPath: path) }
        var d = try FuzzChild.file(path + "/data")
        let m = try #require(FuzzChild.meta(d))
        var p = FuzzChild.page(d, m.root)
        let children = FuzzChild.children(p)
        p.storeLE(p.loadLE(UInt64.self, at: children[2]), at: children[1])  // child 1 now names child 2's subtree
        FuzzChild.put(p, &d, m.root)
        try FuzzChild.save(d, path + "/data")
        let store = try await PageFileKeyValueStore.open(directory: path, options: FuzzChild.opts())
        #expect(!(try await store.verify().isClean))  // verify sees it
        do {
            let keys = try await allEntries(store).map(\.key)
            #expect(zip(keys, keys.dropFirst()).allSatisfy { $0.lexicographicallyPrecedes($1) },
                "scan returned \(keys.count) keys, \(keys.count - Set(keys).count) of them twice, without an error")
        } catch { #expect(error is EventStoreError) }
        try await store.close()
    }
}
