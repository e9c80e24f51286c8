// Codec tests: CRC-32C against the standard check value, and round trips of the page and WAL encodings.

import EventStore
@testable import EventStoreKV
import Testing

@Suite("Codecs")
struct CodecTests {
    /// The two CRC-32C implementations: `CRC32C.checksum` (the CPU's instruction where it has one) and the software
    /// slicing-by-16 it falls back to.
    enum CRCImplementation: String, CaseIterable, Sendable {
        case chosen, software

        func checksum(_ bytes: [UInt8], _ range: Range<Int>, seed: UInt32 = 0) -> UInt32 {
            switch self {
            case .chosen: return CRC32C.checksum(bytes, range, seed: seed)
            case .software:
                return bytes.withUnsafeBytes {
                    CRC32C.softwareChecksum(UnsafeRawBufferPointer(rebasing: $0[range]), seed: seed)
                }
            }
        }
    }

    static func bitwiseReference(_ bytes: ArraySlice<UInt8>, seed: UInt32 = 0) -> UInt32 {
        var crc = ~seed
        for byte in bytes {
            crc ^= UInt32(byte)
            for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        }
        return ~crc
    }

    @Test("CRC-32C matches the standard check value and continues across splits", arguments: CRCImplementation.allCases)
    func crc32c(implementation: CRCImplementation) {
        let check = Array("123456789".utf8)
        #expect(implementation.checksum(check, 0..<9) == 0xE306_9283)
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
            let first = implementation.checksum(data, 0..<split)
            #expect(implementation.checksum(data, split..<1000, seed: first) == implementation.checksum(data, 0..<1000))
        }
    }

    @Test(
        "CRC32C equals a bit-at-a-time reference for every length and alignment up to 100 bytes",
        arguments: CRCImplementation.allCases)
    func crcMatchesBitwiseReference(implementation: CRCImplementation) {
        var random = SeededRandom(seed: 0xC4C)
        let data = (0..<120).map { _ in UInt8.random(in: 0...255, using: &random) }
        for start in 0..<17 {
            for length in 0...(100 - start) {
                let range = start..<(start + length)
                #expect(implementation.checksum(data, range) == Self.bitwiseReference(data[range]))
                #expect(implementation.checksum(data, range, seed: 0x1234_5678)
                    == Self.bitwiseReference(data[range], seed: 0x1234_5678))
            }
        }
    }

    @Test("the CPU's CRC-32C and the software one agree on pages, WAL-sized records and odd lengths at any offset")
    func hardwareMatchesSoftware() {
        #if arch(x86_64)
            // Every x86-64 machine this runs on has SSE4.2; without it this test would compare software with itself.
            #expect(CRC32C.usesHardware, "the CRC-32C instruction was not detected")
        #endif
        var random = SeededRandom(seed: 0x5EED)
        let data = (0..<40_000).map { _ in UInt8.random(in: 0...255, using: &random) }
        for length in [1, 7, 15, 17, 330, 4_096, 8_192, 12_345, 16_384, 33_001] {
            for _ in 0..<8 {
                let start = Int.random(in: 0...(data.count - length), using: &random)
                let range = start..<(start + length)
                let seed = UInt32.random(in: 0...UInt32.max, using: &random)
                #expect(CRCImplementation.chosen.checksum(data, range, seed: seed)
                    == CRCImplementation.software.checksum(data, range, seed: seed), "\(range)")
            }
        }
        #expect(CRCImplementation.chosen.checksum(data, 0..<data.count)
            == Self.bitwiseReference(data[0..<data.count]))
    }

    @Test("a WAL record round-trips and any single flipped bit is detected")
    func walRecord() {
        let transaction = LoggedTransaction(
            lsn: 5, revision: 9,
            writes: [.put(key: [1, 2], value: [3, 4, 5], version: 2, expiresAt: 77), .delete(key: [6])])
        var file = WriteAheadLog.header(salt: 42, firstLSN: 5)
        file += WriteAheadLog.encode(transaction, salt: 42)
        let scan = WriteAheadLog.scan(file, salt: 42, firstLSN: 5)
        #expect(scan.transactions.count == 1 && scan.validEnd == file.count && scan.discarded == 0)
        #expect(scan.transactions.first?.revision == 9)
        #expect(WriteAheadLog.scan(file, salt: 43, firstLSN: 5).transactions.isEmpty, "another salt must not parse")
        for bit in stride(from: WriteAheadLog.headerSize * 8, to: file.count * 8, by: 3) {
            var damaged = file
            damaged[bit / 8] ^= UInt8(1 << (bit % 8))
            #expect(WriteAheadLog.scan(damaged, salt: 42, firstLSN: 5).transactions.isEmpty, "bit \(bit)")
        }
    }

    @Test("a damaged WAL record is damage, not a torn tail, only when a later record says it was synced")
    func walProofOfDurability() {
        func record(_ lsn: UInt64, synced: UInt64) -> [UInt8] {
            WriteAheadLog.encode(
                LoggedTransaction(lsn: lsn, revision: lsn, writes: [.put(key: [UInt8(lsn)], value: [1, 2, 3], version: 1, expiresAt: 0)]),
                synced: synced, salt: 42)
        }
        let header = WriteAheadLog.header(salt: 42, firstLSN: 5)
        let first = record(5, synced: 4)
        let second = record(6, synced: 5)
        let damagedAt = header.count + first.count + second.count - 2
        // A torn group: the third record was built before the second was synced, so it proves nothing.
        var torn = header + first + second + record(7, synced: 5)
        torn[damagedAt] ^= 1
        let cut = WriteAheadLog.scan(torn, salt: 42, firstLSN: 5)
        #expect(cut.transactions.map(\.lsn) == [5] && cut.validEnd == header.count + first.count)
        #expect(cut.discarded > 0 && cut.proofOfDamage == nil)
        // The third record was built after the second was synced: the second was durable, so this is damage.
        var damaged = header + first + second + record(7, synced: 6) + [UInt8](repeating: 0, count: 100)
        damaged[damagedAt] ^= 1
        let proven = WriteAheadLog.scan(damaged, salt: 42, firstLSN: 5)
        #expect(proven.transactions.map(\.lsn) == [5])
        #expect(proven.proofOfDamage == .found(lsn: 7, offset: header.count + first.count + second.count))
        // Also when the damage hides where the next record starts (its length field).
        var lengthDamaged = header + first + second + record(7, synced: 6)
        lengthDamaged[header.count + first.count] ^= 0x40
        #expect(WriteAheadLog.scan(lengthDamaged, salt: 42, firstLSN: 5).proofOfDamage == .found(lsn: 7, offset: header.count + first.count + second.count))
        // A record claiming its own LSN was synced is impossible, so it is not valid (and proves nothing).
        let impossible = header + first + record(6, synced: 6)
        #expect(WriteAheadLog.scan(impossible, salt: 42, firstLSN: 5).transactions.map(\.lsn) == [5])
        // Only zeros after the last record: nothing is cut and nothing is searched.
        let clean = WriteAheadLog.scan(header + first + [UInt8](repeating: 0, count: 64), salt: 42, firstLSN: 5)
        #expect(clean.discarded == 0 && clean.proofOfDamage == nil)
    }

    @Test("a WAL record's payload is exactly as long as payloadSize says, which the commit limit relies on")
    func walPayloadSize() {
        let writes: [LoggedWrite] = [
            .put(key: [1, 2], value: [3, 4, 5], version: 2, expiresAt: 77), .delete(key: [6, 7, 8]),
            .put(key: [UInt8](repeating: 9, count: 300), value: [], version: 1, expiresAt: 0),
            .put(key: [], value: [UInt8](repeating: 1, count: 5_000), version: 3, expiresAt: 0), .delete(key: []),
        ]
        for count in 0...writes.count {
            let chosen = Array(writes.prefix(count))
            var bytes = 0
            var puts = 0
            for write in chosen {
                switch write {
                case .put(let key, let value, _, _):
                    bytes += key.count + value.count
                    puts += 1
                case .delete(let key): bytes += key.count
                }
            }
            let record = WriteAheadLog.encode(LoggedTransaction(lsn: 1, revision: 1, writes: chosen), salt: 1)
            #expect(
                WriteAheadLog.payloadSize(writes: chosen.count, keyAndValueBytes: bytes, puts: puts)
                    == record.count - WriteAheadLog.frameSize, "\(count) writes")
        }
    }

    @Test("a leaf page round-trips inline and overflow values")
    func leafPage() throws {
        let node = Node(
            leaf: [[1], [2, 3]],
            entries: [
                LeafEntry(value: .inline([9, 9]), version: 1, modRevision: 4, expiresAt: 0),
                LeafEntry(value: .overflow(page: 12, length: 99_999), version: 3, modRevision: 5, expiresAt: -1),
            ], owner: 0)
        let page = try NodeCodec.encode(node, number: 7, lsn: 1, pageSize: 4096, path: "test")
        try Page.check(page, number: 7, type: .leaf, size: 4096, path: "test")
        let decoded = try NodeCodec.decode(page, number: 7, path: "test")
        #expect(decoded.allKeys == node.allKeys && decoded.allKeys == [[1], [2, 3]])
        #expect(decoded.byteSize == node.byteSize)
        guard case .overflow(let first, let length) = decoded.allEntries[1].value else {
            Issue.record("overflow value decoded as inline")
            return
        }
        #expect(first == 12 && length == 99_999 && decoded.allEntries[1].expiresAt == -1)
        #expect(throws: (any Error).self) { try Page.check(page, number: 8, type: .leaf, size: 4096, path: "test") }
    }
    @Test("a sealed leaf with unknown entry flags or an impossible value length is corruption naming the page")
    func leafEntryChecks() throws {
        let node = Node(
            leaf: [[1]], entries: [LeafEntry(value: .overflow(page: 12, length: 99), version: 1, modRevision: 1, expiresAt: 0)],
            owner: 0)
        let page = try NodeCodec.encode(node, number: 9, lsn: 1, pageSize: 4096, path: "test")
        // Entry 0: u16 key length, 1 key byte, then the flags byte; the value length is 25 bytes after the flags.
        let flags = Page.headerSize + 2 + 1
        for damage in [(flags, [UInt8(2)]), (flags, [0x81]), (flags + 25, [0xFF, 0xFF, 0xFF, 0xFF])] {
            var damaged = page
            damaged.replaceSubrange(damage.0..<(damage.0 + damage.1.count), with: damage.1)
            Page.seal(&damaged)  // a valid checksum: only the entry check can catch it
            #expect {
                try NodeCodec.decode(damaged, number: 9, path: "data")
            } throws: { error in
                guard case EventStoreError.corrupted(let location, _) = error else { return false }
                return location == "data page 9"
            }
        }
        #expect(try NodeCodec.decode(page, number: 9, path: "data").count == 1)
    }
}
