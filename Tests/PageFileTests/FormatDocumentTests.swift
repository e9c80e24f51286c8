// docs/FORMAT.md is byte-exact with the files a store writes: a store built through the public API (event streams,
// plain keys, overflow values, deletions, two checkpoints, commits left in the WAL) is parsed with a reader written
// only from FORMAT.md. Nothing here calls the engine's decoders, its CRC or its constants: the checksum is a
// bit-at-a-time CRC-32C, and every offset is the document's.

import EventStore
import Foundation
import Glibc
import Synchronization
import Testing

@testable import EventStoreKV

/// A reader of the page file and WAL, written from docs/FORMAT.md alone.
private enum FormatDoc {
    // MARK: Primitives ("Every multi-byte integer is little-endian. Checksums are CRC-32C (Castagnoli)")

    static func crc32c(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }

    static func u16(_ b: [UInt8], _ o: Int) -> UInt16 { UInt16(b[o]) | UInt16(b[o + 1]) << 8 }
    static func u32(_ b: [UInt8], _ o: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[o + $1]) << (8 * UInt32($1)) }
    }
    static func u64(_ b: [UInt8], _ o: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[o + $1]) << (8 * UInt64($1)) }
    }
    static func le64(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
    static func allZero(_ b: ArraySlice<UInt8>) -> Bool { b.allSatisfy { $0 == 0 } }
    static func less(_ a: [UInt8], _ b: [UInt8]) -> Bool { a.lexicographicallyPrecedes(b) }

    // MARK: Data file

    struct Meta {
        var slot: Int
        var epoch, root, freeListHead, pageCount, checkpointLSN, revision, walSalt, keyCount: UInt64
        var pageLSN: UInt64
    }

    struct Entry: Equatable {
        var value: [UInt8]
        var version: UInt64
        var modRevision: UInt64
        var expiry: Int64
    }

    struct DataFile {
        var pageSize: Int
        var meta: Meta
        var otherMeta: Meta?
        var entries: [[UInt8]: Entry]
        var keyOrder: [[UInt8]]
        var treePages: [UInt64]
        var overflowPages: [UInt64]
        var chainPages: [UInt64]
        var freePages: [UInt64]
        var leafDepths: Set<Int>
        var overflowValues: Int
    }

    /// Problems found while parsing: every rule of FORMAT.md that the bytes break.
    final class Findings {
        var problems: [String] = []
        func check(_ condition: Bool, _ message: @autoclosure () -> String) {
            if !condition { problems.append(message()) }
        }
    }

    static func page(_ data: [UInt8], _ n: UInt64, _ pageSize: Int) -> [UInt8]? {
        let start = Int(n) * pageSize
        guard start + pageSize <= data.count else { return nil }
        return Array(data[start..<(start + pageSize)])
    }

    /// "Common page header (32 bytes, every page)".
    static func checkHeader(
        _ p: [UInt8], number: UInt64, type: UInt8, maxLSN: UInt64, _ f: Findings
    ) {
        f.check(u32(p, 0) == crc32c(p[4...]), "page \(number): CRC-32C of bytes 4..<pageSize does not match")
        f.check(p[4] == type, "page \(number): type \(p[4]), expected \(type)")
        f.check(allZero(p[5..<8]), "page \(number): bytes 5..<8 are not zero")
        f.check(u64(p, 8) == number, "page \(number): claims page number \(u64(p, 8))")
        f.check(u64(p, 16) <= maxLSN, "page \(number): LSN \(u64(p, 16)) above the meta's checkpoint LSN \(maxLSN)")
        switch type {
        case 2, 3: f.check(allZero(p[26..<32]), "page \(number): bytes 26..<32 after the u16 count are not zero")
        case 5: f.check(allZero(p[28..<32]), "page \(number): bytes 28..<32 after the u32 count are not zero")
        default: f.check(allZero(p[24..<32]), "page \(number): type-specific bytes 24..<32 are not zero")
        }
    }

    /// "Meta pages (pages 0 and 1)": nil unless the slot is valid (checksum, magic, version, page size, slot).
    static func meta(_ p: [UInt8], slot: Int, pageSize: Int) -> Meta? {
        guard p.count == pageSize, u32(p, 0) == crc32c(p[4...]), p[4] == 1, u64(p, 8) == UInt64(slot),
            Array(p[32..<40]) == Array("EVSTPAGE".utf8), u32(p, 40) == 1, Int(u32(p, 44)) == pageSize,
            u64(p, 48) % 2 == UInt64(slot)
        else { return nil }
        return Meta(
            slot: slot, epoch: u64(p, 48), root: u64(p, 56), freeListHead: u64(p, 64), pageCount: u64(p, 72),
            checkpointLSN: u64(p, 80), revision: u64(p, 88), walSalt: u64(p, 96), keyCount: u64(p, 104),
            pageLSN: u64(p, 16))
    }

    static func parseData(_ data: [UInt8], _ f: Findings) throws -> DataFile {
        // "Opening reads bytes 32..<112 of page 0 first for the declared page size."
        try #require(data.count >= 112)
        try #require(Array(data[32..<40]) == Array("EVSTPAGE".utf8), "page 0 does not start with the magic")
        let pageSize = Int(u32(data, 44))
        try #require([4096, 8192, 16384, 32768, 65536].contains(pageSize), "page size \(pageSize)")
        let metas = (0..<2).compactMap { slot in
            page(data, UInt64(slot), pageSize).flatMap { meta($0, slot: slot, pageSize: pageSize) }
        }
        let newest = try #require(metas.max { $0.epoch < $1.epoch }, "no valid meta page")
        let other = metas.first { $0.slot != newest.slot }
        let metaPage = page(data, UInt64(newest.slot), pageSize)!
        f.check(allZero(metaPage[24..<32]), "meta: bytes 24..<32 are not zero")
        f.check(allZero(metaPage[5..<8]), "meta: bytes 5..<8 are not zero")
        f.check(allZero(metaPage[112...]), "meta: bytes after offset 112 are not zero")
        f.check(newest.pageLSN == newest.checkpointLSN, "meta: page LSN \(newest.pageLSN) is not its checkpoint LSN")
        f.check(
            newest.pageCount >= 2 && Int(newest.pageCount) * pageSize <= data.count,
            "meta: page count \(newest.pageCount) outside the file of \(data.count) bytes")

        var file = DataFile(
            pageSize: pageSize, meta: newest, otherMeta: other, entries: [:], keyOrder: [], treePages: [],
            overflowPages: [], chainPages: [], freePages: [], leafDepths: [], overflowValues: 0)
        let body = pageSize - 32
        let quarter = body / 4
        let maxLSN = newest.checkpointLSN

        func walk(_ number: UInt64, depth: Int, lower: [UInt8]?, upper: [UInt8]?) throws {
            try #require(depth <= 64, "tree deeper than 64 levels")
            try #require(number >= 2 && number < newest.pageCount, "tree names page \(number) outside 2..<pageCount")
            let p = try #require(page(data, number, pageSize))
            file.treePages.append(number)
            let count = Int(u16(p, 24))
            f.check(count >= 1, "page \(number): count 0")
            if p[4] == 2 {
                checkHeader(p, number: number, type: 2, maxLSN: maxLSN, f)
                var at = 32
                var separators: [[UInt8]] = []
                var children: [UInt64] = []
                for index in 0..<count {
                    let k = Int(u16(p, at))
                    if index == 0 { f.check(k == 0, "branch \(number): entry 0 has key length \(k)") }
                    separators.append(Array(p[(at + 2)..<(at + 2 + k)]))
                    children.append(u64(p, at + 2 + k))
                    at += 2 + k + 8
                }
                f.check(allZero(p[at...]), "branch \(number): nonzero bytes after the last entry")
                for index in 1..<max(1, count) where index > 1 {
                    f.check(less(separators[index - 1], separators[index]), "branch \(number): separators out of order")
                }
                for index in 0..<count {
                    try walk(
                        children[index], depth: depth + 1, lower: index == 0 ? lower : separators[index],
                        upper: index + 1 < count ? separators[index + 1] : upper)
                }
            } else {
                checkHeader(p, number: number, type: 3, maxLSN: maxLSN, f)
                file.leafDepths.insert(depth)
                var at = 32
                var previous: [UInt8]?
                for index in 0..<count {
                    let start = at
                    let k = Int(u16(p, at))
                    let key = Array(p[(at + 2)..<(at + 2 + k)])
                    at += 2 + k
                    let flags = p[at]
                    let version = u64(p, at + 1)
                    let modRevision = u64(p, at + 9)
                    let expiry = Int64(bitPattern: u64(p, at + 17))
                    let v = Int(u32(p, at + 25))
                    at += 29
                    f.check(flags == 0 || flags == 1, "leaf \(number) entry \(index): flags \(flags)")
                    if let previous { f.check(less(previous, key), "leaf \(number): keys out of order") }
                    if let lower { f.check(!less(key, lower), "leaf \(number): key below its lower separator") }
                    if let upper { f.check(less(key, upper), "leaf \(number): key not below its upper separator") }
                    previous = key
                    f.check(k <= quarter - 39, "leaf \(number): key of \(k) bytes over the key limit")
                    f.check(version >= 1 && version < 1 << 62, "leaf \(number): version \(version)")
                    f.check(modRevision < 1 << 62, "leaf \(number): modRevision \(modRevision)")
                    var value: [UInt8]
                    if flags == 0 {
                        value = Array(p[at..<(at + v)])
                        at += v
                        f.check(
                            31 + k + v <= quarter, "leaf \(number): inline entry of \(31 + k + v) bytes over a quarter")
                    } else {
                        let first = u64(p, at)
                        at += 8
                        f.check(31 + k + v > quarter, "leaf \(number): a value that fits inline is in overflow pages")
                        let pages = max(1, (v + body - 1) / body)
                        value = []
                        for index in 0..<pages {
                            let n = first + UInt64(index)
                            try #require(n >= 2 && n < newest.pageCount, "overflow page \(n) outside 2..<pageCount")
                            let o = try #require(page(data, n, pageSize))
                            checkHeader(o, number: n, type: 4, maxLSN: maxLSN, f)
                            let take = min(body, v - value.count)
                            value += o[32..<(32 + take)]
                            f.check(allZero(o[(32 + take)...]), "overflow page \(n): padding is not zero")
                            file.overflowPages.append(n)
                        }
                        file.overflowValues += 1
                    }
                    f.check(at - start <= quarter, "leaf \(number): entry of \(at - start) bytes over a quarter")
                    f.check(file.entries[key] == nil, "key \(key) appears twice")
                    file.entries[key] = Entry(value: value, version: version, modRevision: modRevision, expiry: expiry)
                    file.keyOrder.append(key)
                }
                f.check(allZero(p[at...]), "leaf \(number): nonzero bytes after the last entry")
            }
        }
        if newest.root != 0 { try walk(newest.root, depth: 1, lower: nil, upper: nil) }

        // "Free-list pages (type 5)".
        var next = newest.freeListHead
        while next != 0 {
            try #require(next >= 2 && next < newest.pageCount, "free-list page \(next) outside 2..<pageCount")
            try #require(!file.chainPages.contains(next), "free-list chain comes back to page \(next)")
            let p = try #require(page(data, next, pageSize))
            checkHeader(p, number: next, type: 5, maxLSN: maxLSN, f)
            file.chainPages.append(next)
            let count = Int(u32(p, 24))
            f.check(count <= (pageSize - 40) / 8, "free-list page \(next): count \(count) over capacity")
            for index in 0..<min(count, (pageSize - 40) / 8) { file.freePages.append(u64(p, 40 + 8 * index)) }
            f.check(allZero(p[(40 + 8 * count)...]), "free-list page \(next): nonzero bytes after the entries")
            next = u64(p, 32)
        }
        return file
    }

    // MARK: WAL

    enum Write: Equatable {
        case put(key: [UInt8], version: UInt64, expiry: Int64, value: [UInt8])
        case delete(key: [UInt8])
    }

    struct Record {
        var offset: Int
        var lsn: UInt64
        var synced: UInt64
        var revision: UInt64
        var writes: [Write]
    }

    struct WAL {
        var salt: UInt64
        var firstLSN: UInt64
        var version: UInt32
        var records: [Record]
        var end: Int
    }

    static func payload(_ b: [UInt8]) -> (revision: UInt64, writes: [Write])? {
        guard b.count >= 12 else { return nil }
        let revision = u64(b, 0)
        let count = Int(u32(b, 8))
        var at = 12
        var writes: [Write] = []
        for _ in 0..<count {
            guard at + 3 <= b.count else { return nil }
            let kind = b[at]
            let k = Int(u16(b, at + 1))
            at += 3
            guard at + k <= b.count else { return nil }
            let key = Array(b[at..<(at + k)])
            at += k
            switch kind {
            case 1:
                guard at + 20 <= b.count else { return nil }
                let version = u64(b, at)
                let expiry = Int64(bitPattern: u64(b, at + 8))
                let v = Int(u32(b, at + 16))
                at += 20
                guard at + v <= b.count else { return nil }
                writes.append(.put(key: key, version: version, expiry: expiry, value: Array(b[at..<(at + v)])))
                at += v
            case 2: writes.append(.delete(key: key))
            default: return nil
            }
        }
        return at == b.count ? (revision, writes) : nil
    }

    /// The header and the valid records of this generation, read as FORMAT.md says a reader does.
    static func parseWAL(_ w: [UInt8], _ f: Findings) throws -> WAL {
        try #require(w.count >= 40, "wal shorter than its header")
        f.check(Array(w[0..<8]) == Array("EVSTWAL1".utf8), "wal: magic")
        f.check(u32(w, 8) == 2, "wal: version \(u32(w, 8))")
        f.check(allZero(w[12..<16]), "wal: bytes 12..<16 are not zero")
        f.check(u32(w, 32) == crc32c(w[0..<32]), "wal: header CRC-32C of bytes 0..<32 does not match")
        f.check(allZero(w[36..<40]), "wal: bytes 36..<40 are not zero")
        let salt = u64(w, 16)
        let firstLSN = u64(w, 24)
        var records: [Record] = []
        var at = 40
        var expected = firstLSN
        while w.count - at >= 24 {
            let n = Int(u32(w, at))
            guard n <= 1 << 30, 24 + n <= w.count - at else { break }
            let covered = le64(salt) + w[at..<(at + 4)] + w[(at + 8)..<(at + 24 + n)]
            guard crc32c(covered) == u32(w, at + 4) else { break }
            let lsn = u64(w, at + 8)
            let synced = u64(w, at + 16)
            guard lsn == expected, synced < lsn, let (revision, writes) = payload(Array(w[(at + 24)..<(at + 24 + n)]))
            else { break }
            records.append(Record(offset: at, lsn: lsn, synced: synced, revision: revision, writes: writes))
            expected += 1
            at += 24 + n
        }
        return WAL(salt: salt, firstLSN: firstLSN, version: u32(w, 8), records: records, end: at)
    }
}

@Suite("FORMAT.md against the files")
struct FormatDocumentTests {
    private static let knownKey = Array("fmt/known".utf8)
    private static let knownValue = Array("the known value, checkpointed".utf8)

    private func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed)) }
    }

    /// The state the files must describe: every live entry as the store reads it.
    private func snapshot(_ store: PageFileKeyValueStore) async throws -> [[UInt8]: FormatDoc.Entry] {
        var result: [[UInt8]: FormatDoc.Entry] = [:]
        for entry in try await store.scan(KeyRange(from: [], to: nil), direction: .forward, limit: .max) {
            result[entry.key] = FormatDoc.Entry(
                value: entry.value, version: entry.version, modRevision: entry.modRevision, expiry: 0)
        }
        return result
    }

    /// The tree's entries with the WAL's records applied in order ("Each write is the key's resulting state").
    private func replayed(
        _ data: FormatDoc.DataFile, _ wal: FormatDoc.WAL
    ) -> [[UInt8]: FormatDoc.Entry] {
        var state = data.entries
        for record in wal.records {
            for write in record.writes {
                switch write {
                case .put(let key, let version, let expiry, let value):
                    state[key] = FormatDoc.Entry(
                        value: value, version: version, modRevision: record.revision, expiry: expiry)
                case .delete(let key): state[key] = nil
                }
            }
        }
        return state
    }

    /// Keys and (value, version, modRevision), ignoring expiry: TTL entries are compared like any other.
    private func comparable(_ state: [[UInt8]: FormatDoc.Entry]) -> [[UInt8]: FormatDoc.Entry] {
        state.mapValues {
            FormatDoc.Entry(value: $0.value, version: $0.version, modRevision: $0.modRevision, expiry: 0)
        }
    }

    /// The checks every parse of a closed store's directory makes: page partition, key count, WAL header.
    private func checkStructure(_ data: FormatDoc.DataFile, _ wal: FormatDoc.WAL, _ findings: FormatDoc.Findings) {
        let meta = data.meta
        // "Every page in 2 ..< pageCount is in exactly one of: the tree, an overflow run, the free-list chain, the
        // free list."
        let all = data.treePages + data.overflowPages + data.chainPages + data.freePages
        #expect(all.count == Set(all).count, "a page is in two places: \(all.sorted())")
        #expect(
            Set(all) == Set(2..<meta.pageCount),
            "pages 2..<\(meta.pageCount) are not partitioned: \(Set(2..<meta.pageCount).subtracting(all).sorted())")
        #expect(data.leafDepths.count <= 1, "leaves at depths \(data.leafDepths)")
        #expect(
            UInt64(data.entries.count) == meta.keyCount,
            "the meta counts \(meta.keyCount) keys, the tree holds \(data.entries.count)")
        // WAL header of the meta's generation.
        #expect(wal.salt == meta.walSalt, "the WAL's salt is not the meta's")
        #expect(
            wal.firstLSN == meta.checkpointLSN + 1,
            "WAL first LSN \(wal.firstLSN), meta checkpoint LSN \(meta.checkpointLSN)")
        // "each record's revision is one more than the previous record's (the first record's, one more than the
        // meta's revision)"; the synced LSN is below the LSN.
        for (index, record) in wal.records.enumerated() {
            #expect(
                record.revision == meta.revision + UInt64(index) + 1,
                "record LSN \(record.lsn) has revision \(record.revision)")
            #expect(record.synced < record.lsn)
        }
        #expect(findings.problems.isEmpty, "FORMAT.md rules broken:\n\(findings.problems.joined(separator: "\n"))")
    }

    @Test("a store's files parse with a reader written only from FORMAT.md, and hold what the store holds")
    func filesMatchTheDocument() async throws {
        let directory = TemporaryDirectory("format-doc")
        defer { directory.remove() }
        let options = smallOptions()
        let backend = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        let events = KeyValueEventStore(backend: backend)

        // Phase A: streams (one event large enough for overflow pages), plain keys enough for a branch level, a
        // large plain value, and one that is deleted after the first checkpoint.
        for index in 0..<3 {
            _ = try await events.append(
                (0..<4).map { EventData(type: "Placed", data: Data("order \(index) line \($0)".utf8)) },
                to: try StreamName("order-\(index)"), expectedVersion: .noStream)
        }
        _ = try await events.append(
            [EventData(type: "Scanned", data: Data(pattern(6000, seed: 7)))], to: try StreamName("upload-1"),
            expectedVersion: .noStream)
        _ = try await backend.commit(KeyValueTransaction(writes: [.put(Self.knownKey, Self.knownValue)]))
        _ = try await backend.commit(
            KeyValueTransaction(writes: [.put(Array("fmt/large".utf8), pattern(9000, seed: 1))]))
        _ = try await backend.commit(
            KeyValueTransaction(writes: [.put(Array("fmt/doomed".utf8), pattern(5000, seed: 2))]))
        for batch in 0..<4 {
            _ = try await backend.commit(
                KeyValueTransaction(
                    writes: (0..<50).map { index in
                        .put(
                            Array(String(format: "fmt/k-%03d", batch * 50 + index).utf8),
                            pattern(40, seed: UInt8(index)))
                    }))
        }
        try await backend.checkpoint()

        // Phase B: deletions and a rewrite, then a second checkpoint that frees the pages they replaced.
        _ = try await backend.commit(KeyValueTransaction(writes: [.delete(Array("fmt/doomed".utf8))]))
        _ = try await backend.commit(
            KeyValueTransaction(writes: (0..<60).map { .delete(Array(String(format: "fmt/k-%03d", $0).utf8)) }))
        _ = try await backend.commit(KeyValueTransaction(writes: [.put(Array("fmt/k-100".utf8), pattern(30, seed: 9))]))
        try await backend.checkpoint()

        // Phase C: commits left in the WAL (a crash-like close does not checkpoint).
        _ = try await events.append(
            [EventData(type: "Placed", data: Data("after the checkpoint".utf8))], to: try StreamName("order-1"),
            expectedVersion: .any)
        _ = try await backend.commit(
            KeyValueTransaction(writes: [
                .put(Array("fmt/wal-only".utf8), Array("only in the wal".utf8)), .delete(Array("fmt/k-150".utf8)),
            ]))
        _ = try await backend.commit(
            KeyValueTransaction(writes: [.put(Array("fmt/wal-large".utf8), pattern(7000, seed: 3))]))
        _ = try await backend.commit(KeyValueTransaction(writes: [.put(Self.knownKey, Self.knownValue + [0x21])]))
        let expected = try await snapshot(backend)
        let finalRevision = try await backend.currentRevision()
        await backend.closeWithoutCheckpoint()

        // Parse the directory as FORMAT.md describes it.
        let findings = FormatDoc.Findings()
        let dataBytes = Array(try Data(contentsOf: URL(fileURLWithPath: directory.file("data"))))
        let walBytes = Array(try Data(contentsOf: URL(fileURLWithPath: directory.file("wal"))))
        let data = try FormatDoc.parseData(dataBytes, findings)
        let wal = try FormatDoc.parseWAL(walBytes, findings)
        let meta = data.meta
        #expect(meta.epoch == 2, "two checkpoints since creation (epoch 0)")
        #expect(data.otherMeta?.epoch == 1, "the other slot holds the previous checkpoint's meta")
        #expect(data.overflowValues >= 2, "the large event and the large key are in overflow pages")
        #expect(!data.freePages.isEmpty, "the second checkpoint freed pages")
        #expect(!data.chainPages.isEmpty)
        #expect(data.treePages.contains { FormatDoc.page(dataBytes, $0, data.pageSize)![4] == 2 }, "a branch level")
        checkStructure(data, wal, findings)
        #expect(data.entries[Self.knownKey]?.value == Self.knownValue, "the known key's checkpointed value")
        #expect(data.entries[Array("fmt/doomed".utf8)] == nil)
        #expect(data.entries[Array("fmt/large".utf8)]?.value == pattern(9000, seed: 1))
        // The WAL holds exactly the commits since the second checkpoint, and they bring the tree to the store's state.
        #expect(UInt64(wal.records.count) == finalRevision - meta.revision, "records after the checkpoint")
        #expect(wal.records.last?.revision == finalRevision)
        #expect(walBytes.count % (1 << 20) == 0, "the WAL grows in 1 MiB steps (\(walBytes.count) bytes)")
        let state = replayed(data, wal)
        #expect(comparable(state) == expected, "tree + WAL differ from the store's state")
        #expect(state[Array("fmt/wal-large".utf8)]?.value == pattern(7000, seed: 3))
        #expect(state[Self.knownKey]?.value == Self.knownValue + [0x21])

        // A writable open replays the WAL and checkpoints; a clean close checkpoints again. The files then hold the
        // whole state in the tree and a WAL generation with no records.
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        #expect(try await snapshot(reopened) == expected)
        try await reopened.close()
        let findings2 = FormatDoc.Findings()
        let dataBytes2 = Array(try Data(contentsOf: URL(fileURLWithPath: directory.file("data"))))
        let walBytes2 = Array(try Data(contentsOf: URL(fileURLWithPath: directory.file("wal"))))
        let data2 = try FormatDoc.parseData(dataBytes2, findings2)
        let wal2 = try FormatDoc.parseWAL(walBytes2, findings2)
        checkStructure(data2, wal2, findings2)
        #expect(data2.meta.epoch == 4, "recovery's checkpoint and close's")
        #expect(wal2.records.isEmpty, "leftover records of earlier generations fail the new salt's CRC")
        #expect(data2.meta.revision == finalRevision)
        #expect(comparable(data2.entries) == expected)

        // "A store is one directory (created with mode 0700; every file gets mode 0600)"; the lock is emptied by a
        // clean close.
        func mode(_ path: String) -> mode_t {
            var status = stat()
            return stat(path, &status) == 0 ? status.st_mode & 0o777 : 0
        }
        #expect(mode(directory.path) == 0o700)
        for name in ["data", "wal", "lock"] { #expect(mode(directory.file(name)) == 0o600, "\(name)") }
        #expect((try? Data(contentsOf: URL(fileURLWithPath: directory.file("lock"))))?.isEmpty == true)
    }

    @Test(
        "after every checkpoint of a random workload the data file keeps FORMAT.md's structure",
        arguments: [11, 12, 13] as [UInt64])
    func randomWorkloadKeepsTheStructure(seed: UInt64) async throws {
        let directory = TemporaryDirectory("format-random")
        defer { directory.remove() }
        var options = smallOptions()
        options.checkpointThresholdMB = 64
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        var random = SeededRandom(seed: seed)
        var reader: PageFileKeyValueStore?
        var readerAge = 0
        for round in 0..<40 {
            var writes: [KeyWrite] = []
            for _ in 0..<Int.random(in: 1...40, using: &random) {
                let key = Array(String(format: "k-%04d", Int.random(in: 0..<400, using: &random)).utf8)
                switch Int.random(in: 0..<10, using: &random) {
                case 0..<3: writes.append(.delete(key))
                case 3:
                    writes.append(.put(key, pattern(Int.random(in: 900...9000, using: &random), seed: UInt8(round))))
                default: writes.append(.put(key, pattern(Int.random(in: 0...120, using: &random), seed: UInt8(round))))
                }
            }
            if round % 9 == 8 {
                // Delete a whole range, so leaves and branches empty out.
                let low = Int.random(in: 0..<300, using: &random)
                writes = (low..<(low + 100)).map { .delete(Array(String(format: "k-%04d", $0).utf8)) }
            }
            _ = try await store.commit(KeyValueTransaction(writes: writes))
            if round % 3 == 2 {
                if round == 20 { try await store.compact() } else { try await store.checkpoint() }
                if reader == nil, round % 2 == 0 {
                    var readOptions = options
                    readOptions.readOnly = true
                    reader = try await PageFileKeyValueStore.open(directory: directory.path, options: readOptions)
                    readerAge = 0
                } else if readerAge >= 2 {
                    try await reader?.close()
                    reader = nil
                }
                readerAge += 1
                let findings = FormatDoc.Findings()
                let data = try FormatDoc.parseData(
                    Array(try Data(contentsOf: URL(fileURLWithPath: directory.file("data")))), findings)
                let wal = try FormatDoc.parseWAL(
                    Array(try Data(contentsOf: URL(fileURLWithPath: directory.file("wal")))), findings)
                #expect(wal.records.isEmpty, "round \(round)")
                checkStructure(data, wal, findings)
                #expect(comparable(data.entries) == (try await snapshot(store)), "round \(round)")
                if !findings.problems.isEmpty { break }
            }
        }
        try await reader?.close()
        try await store.close()
    }

    /// FORMAT.md said "epoch: checkpoints completed"; a compaction writes a meta page of its own after the checkpoint
    /// it starts with (twenty-first session's review).
    @Test("the meta's epoch counts checkpoints, and one more per compaction")
    func epochCountsCheckpointsAndCompactions() async throws {
        let directory = TemporaryDirectory("format-epoch")
        defer { directory.remove() }
        let checkpoints = Atomic<Int>(0)
        var options = smallOptions()
        options.observer = { event in
            if case .checkpointed = event { checkpoints.add(1, ordering: .relaxed) }
        }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put(Array("a".utf8), [1])]))
        try await store.checkpoint()
        _ = try await store.commit(KeyValueTransaction(writes: [.put(Array("b".utf8), [2])]))
        try await store.compact()
        await store.closeWithoutCheckpoint()
        // A compacted file has its meta in one slot and zeros in the other, so both slots are read.
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: directory.file("data"))))
        let metas = (0..<2).compactMap { slot in
            FormatDoc.page(bytes, UInt64(slot), 4096).flatMap { FormatDoc.meta($0, slot: slot, pageSize: 4096) }
        }
        let epoch = try #require(metas.map(\.epoch).max())
        let checkpointed = UInt64(checkpoints.load(ordering: .relaxed))
        #expect(checkpointed == 2, "the explicit checkpoint and the compaction's")
        #expect(epoch == checkpointed + 1, "epoch \(epoch) after \(checkpointed) checkpoints and a compaction")
    }
}
