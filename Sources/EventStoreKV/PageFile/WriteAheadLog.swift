// WriteAheadLog: the `wal` file's header and record framing, and the scan recovery uses (layout in docs/FORMAT.md).
//
// Invariants:
// - The WAL holds one record per committed transaction, in LSN order, LSNs consecutive from the header's firstLSN.
//   A commit is durable exactly when its record's bytes are fdatasynced (GroupCommit.swift does that).
// - Each record is framed as length, CRC32C, LSN and the synced LSN; the CRC covers the length, both LSNs and the
//   payload and is seeded with the WAL generation's salt. A record from a stale generation (other salt) or a
//   torn/garbled record fails the CRC or the LSN sequence, and the scan stops there: everything before it is the
//   committed prefix, unless the scan finds proof that the record it stopped at was durable.
// - A record's synced LSN is the last LSN whose record had been fdatasynced when the record was built, so it is
//   always below the record's own LSN. A valid later record whose synced LSN reaches the record the scan stopped at
//   proves that record was durable before a crash could tear it: it is damage, and the commits from it on were
//   acknowledged. A torn group that never finished its fdatasync cannot hold such proof.
// - Version 1 WALs (written before the synced LSN existed) have a 16-byte frame and no proof; they are read, and
//   the writer starts a version 2 generation before it logs anything.
// - Records carry the transaction's resulting writes (key, value, per-key version, expiry), never the conditions:
//   replay re-applies them deterministically, whatever the clock says now.

import EventStore

/// One write as logged: the final state of a key after the transaction.
enum LoggedWrite: Sendable {
    case put(key: Key, value: [UInt8], version: UInt64, expiresAt: Int64)
    case delete(key: Key)

    var key: Key {
        switch self {
        case .put(let key, _, _, _), .delete(let key): key
        }
    }
}

/// A decoded WAL record.
struct LoggedTransaction: Sendable {
    var lsn: UInt64
    var revision: UInt64
    var writes: [LoggedWrite]
}

/// The WAL file format.
enum WriteAheadLog {
    /// "EVSTWAL1": identifies an EventStore WAL.
    static let magic: [UInt8] = Array("EVSTWAL1".utf8)
    static let formatVersion: UInt32 = 2
    /// The oldest format version this build still reads (and replaces with `formatVersion` before writing).
    static let oldestReadableVersion: UInt32 = 1
    static let headerSize = 40
    /// Length, CRC, LSN and synced LSN before each record's payload.
    static let frameSize = 24

    /// The frame before each record's payload in a WAL of format `version`.
    static func frameSize(version: UInt32) -> Int { version >= 2 ? 24 : 16 }
    /// Largest payload a reader accepts (larger lengths are damage).
    static let maximumPayload = 1 << 30

    /// The header of a WAL generation (of format `version`: a copy of older records keeps theirs).
    static func header(salt: UInt64, firstLSN: UInt64, version: UInt32 = formatVersion) -> [UInt8] {
        var writer = PageBytesWriter(capacity: headerSize)
        writer.raw(magic)
        writer.u32(version)
        writer.u32(0)
        writer.u64(salt)
        writer.u64(firstLSN)
        let checksum = CRC32C.checksum(writer.bytes, 0..<32)
        writer.u32(checksum)
        writer.u32(0)
        return writer.bytes
    }

    /// What the first bytes of a WAL file hold.
    enum DecodedHeader: Equatable {
        /// A whole, valid header of a format this build reads.
        case valid(salt: UInt64, firstLSN: UInt64, version: UInt32)
        /// A whole header (its checksum holds) of a newer format version, which this build must not read or reset.
        case newerVersion(UInt32)
        /// Not a whole, valid header: damaged, torn or absent.
        case damaged
    }

    /// Decodes a WAL header. A header counts as a newer version only when its checksum holds, so damage to the
    /// version field reads as damage, never as a reason to refuse the store.
    static func decodeHeader(_ bytes: [UInt8]) -> DecodedHeader {
        // The magic's last byte is a version digit; a newer format may change it, so only "EVSTWAL" is compared.
        guard bytes.count >= headerSize, bytes[0..<7].elementsEqual(magic[0..<7]),
            bytes.loadLE(UInt32.self, at: 32) == CRC32C.checksum(bytes, 0..<32)
        else { return .damaged }
        let version = bytes.loadLE(UInt32.self, at: 8)
        if version > formatVersion { return .newerVersion(version) }
        guard version >= oldestReadableVersion, bytes[7] == magic[7] else { return .damaged }
        return .valid(
            salt: bytes.loadLE(UInt64.self, at: 16), firstLSN: bytes.loadLE(UInt64.self, at: 24), version: version)
    }

    private static func seed(_ salt: UInt64) -> UInt32 {
        withUnsafeBytes(of: salt.littleEndian) { CRC32C.checksum($0) }
    }

    /// The payload size (after the frame) of a record of `writes` writes, `puts` of them puts, whose keys and values
    /// hold `keyAndValueBytes` bytes in all: what `RecordWriter` produces for them (docs/FORMAT.md).
    static func payloadSize(writes: Int, keyAndValueBytes: Int, puts: Int) -> Int {
        // Revision (8) and write count (4); each write's kind (1) and key length (2); each put's version (8),
        // expiry (8) and value length (4).
        12 + 3 * writes + 20 * puts + keyAndValueBytes
    }

    /// The framed bytes of one record, built when the records through `synced` were durable.
    static func encode(_ transaction: LoggedTransaction, synced: UInt64 = 0, salt: UInt64) -> [UInt8] {
        var capacity = 0
        for write in transaction.writes {
            if case .put(let key, let value, _, _) = write { capacity += key.count + value.count } else { capacity += 8 }
        }
        var record = RecordWriter(
            lsn: transaction.lsn, synced: synced, revision: transaction.revision, writes: transaction.writes.count,
            bytes: capacity)
        for write in transaction.writes {
            switch write {
            case .put(let key, let value, let version, let expiresAt):
                record.put(key, value, version: version, expiresAt: expiresAt)
            case .delete(let key): record.delete(key)
            }
        }
        return record.finish(salt: salt)
    }

    /// Builds one framed record write by write, so a commit logs its writes while applying them.
    struct RecordWriter {
        private var writer: PageBytesWriter

        /// Starts the record of transaction `lsn` with `writes` writes, reserving room for about `bytes` bytes of
        /// keys and values. `synced` is the last LSN whose record is known to be fdatasynced (below `lsn`).
        init(lsn: UInt64, synced: UInt64, revision: UInt64, writes: Int, bytes: Int) {
            writer = PageBytesWriter(capacity: 72 + bytes + 24 * writes)
            writer.u32(0)  // length, patched by finish
            writer.u32(0)  // checksum, patched by finish
            writer.u64(lsn)
            writer.u64(synced)
            writer.u64(revision)
            writer.u32(UInt32(writes))
        }

        mutating func put(_ key: Key, _ value: [UInt8], version: UInt64, expiresAt: Int64) {
            writer.u8(1)
            writer.u16(UInt16(key.count))
            writer.raw(key)
            writer.u64(version)
            writer.i64(expiresAt)
            writer.u32(UInt32(value.count))
            writer.raw(value)
        }

        mutating func delete(_ key: Key) {
            writer.u8(2)
            writer.u16(UInt16(key.count))
            writer.raw(key)
        }

        /// The framed record: its length and its checksum (seeded with `salt`) filled in. Takes the bytes out of
        /// the writer (patching a copy still shared with it would copy the whole record), leaving it empty.
        mutating func finish(salt: UInt64) -> [UInt8] {
            var bytes = writer.bytes
            writer.bytes = []
            bytes.storeLE(UInt32(bytes.count - frameSize), at: 0)
            var checksum = CRC32C.checksum(bytes, 0..<4, seed: seed(salt))
            checksum = CRC32C.checksum(bytes, 8..<bytes.count, seed: checksum)
            bytes.storeLE(checksum, at: 4)
            return bytes
        }
    }

    /// The result of scanning a WAL.
    struct Scan {
        /// Whole, valid records in LSN order.
        var transactions: [LoggedTransaction]
        /// Byte offset just past the last valid record.
        var validEnd: Int
        /// Bytes after `validEnd` that were cut (a torn or damaged tail, or an older generation's records); 0 when
        /// only zero-filled preallocated space follows.
        var discarded: Int
        /// What the search after the cut found: proof that the record expected at `validEnd` was durable (the bytes
        /// there are damage, not a torn tail, and the commits from there on were acknowledged), or that the search
        /// could not decide.
        var proofOfDamage: ProofOfDurability?
    }

    /// The result of looking, after a record the scan stopped at, for a later record proving it was durable.
    enum ProofOfDurability: Equatable {
        /// The record with `lsn` at `offset` was built after the missing one was fdatasynced.
        case found(lsn: UInt64, offset: Int)
        /// So many frame-shaped candidates (bytes whose LSN and synced fields fit) that checksumming them all would
        /// cost more than a bounded multiple of the bytes searched: whether the missing record was durable is unknown.
        case undecided(offset: Int)
    }

    /// Every valid record of `bytes` (a whole WAL file whose header has `salt`, or with `start` 0 the part of one
    /// that begins at a record) in format `version`, from `firstLSN` on, stopping at the first torn, damaged or
    /// out-of-sequence record; then, if anything but zeros follows, looks for proof that it was damage.
    /// `revisionLead` is every record's revision minus its LSN in this generation (the meta's revision minus its
    /// checkpoint LSN; wrapping), which the proof's record must carry too; without it, the first record read gives
    /// it, and with no record read there is no search.
    static func scan(
        _ bytes: [UInt8], from start: Int = headerSize, salt: UInt64, firstLSN: UInt64,
        version: UInt32 = formatVersion, revisionLead: UInt64? = nil
    ) -> Scan {
        // A file shorter than its header (empty, or cut short) holds no records.
        guard start <= bytes.count else { return Scan(transactions: [], validEnd: start, discarded: 0) }
        var transactions: [LoggedTransaction] = []
        var offset = start
        var expected = firstLSN
        let saltSeed = seed(salt)
        let frame = frameSize(version: version)
        while bytes.count - offset >= frame {
            guard let end = validRecord(in: bytes, at: offset, frame: frame, saltSeed: saltSeed),
                bytes.loadLE(UInt64.self, at: offset + 8) == expected,
                let transaction = try? decodePayload(bytes, from: offset + frame, to: end, lsn: expected)
            else { break }
            transactions.append(transaction)
            expected += 1
            offset = end
        }
        // The zero-filled preallocated space after the last record is not damage.
        guard bytes[offset...].contains(where: { $0 != 0 }) else {
            return Scan(transactions: transactions, validEnd: offset, discarded: 0)
        }
        var proof: ProofOfDurability?
        if version >= 2, let lead = revisionLead ?? transactions.first.map({ $0.revision &- $0.lsn }) {
            proof = proofOfDurability(of: expected, in: bytes, after: offset, revisionLead: lead, saltSeed: saltSeed)
        }
        return Scan(
            transactions: transactions, validEnd: offset, discarded: bytes.count - offset, proofOfDamage: proof)
    }

    /// The end of the record at `offset` if its length fits and its CRC holds (its LSN and payload unchecked).
    private static func validRecord(in bytes: [UInt8], at offset: Int, frame: Int, saltSeed: UInt32) -> Int? {
        let length = Int(bytes.loadLE(UInt32.self, at: offset))
        guard length <= maximumPayload, length <= bytes.count - offset - frame else { return nil }
        let end = offset + frame + length
        var checksum = CRC32C.checksum(bytes, offset..<(offset + 4), seed: saltSeed)
        checksum = CRC32C.checksum(bytes, (offset + 8)..<end, seed: checksum)
        guard checksum == bytes.loadLE(UInt32.self, at: offset + 4) else { return nil }
        // A writer's synced LSN is always below the record's own (version 2 frames).
        guard frame < 24 || bytes.loadLE(UInt64.self, at: offset + 16) < bytes.loadLE(UInt64.self, at: offset + 8)
        else { return nil }
        return end
    }

    /// A valid record of this generation after `offset` whose synced LSN reaches `missing`: proof that the record
    /// `missing`, expected at `offset`, was fdatasynced before the bytes there went bad. Every byte offset is tried
    /// (a damaged length hides where the next record starts), but only frames whose LSNs fit and whose revision is
    /// the generation's for that LSN are checksummed (runs of small integers in older records' payloads, read at a
    /// misaligned offset, often fit the LSNs alone), and those checksums together may cover at most `searchBudget`
    /// times the bytes searched (plus 64 MiB): bytes shaped like many such frames would otherwise make the search
    /// quadratic. Past that it gives up (`undecided`).
    private static func proofOfDurability(
        of missing: UInt64, in bytes: [UInt8], after offset: Int, revisionLead: UInt64, saltSeed: UInt32
    ) -> ProofOfDurability? {
        let frame = frameSize(version: 2)
        // Each record after `offset` takes at least a frame, so no LSN there is past this.
        let lastPossible = missing &+ UInt64((bytes.count - offset) / frame)
        var budget = searchBudget * (bytes.count - offset) + (64 << 20)
        var candidate = offset + 1
        // A frame and the revision that opens every payload.
        while bytes.count - candidate >= frame + 8 {
            defer { candidate += 1 }
            let lsn = bytes.loadLE(UInt64.self, at: candidate + 8)
            guard lsn > missing, lsn <= lastPossible else { continue }
            let synced = bytes.loadLE(UInt64.self, at: candidate + 16)
            guard synced >= missing, synced < lsn, bytes.loadLE(UInt64.self, at: candidate + 24) == lsn &+ revisionLead
            else { continue }
            let length = Int(bytes.loadLE(UInt32.self, at: candidate))
            guard length <= maximumPayload, length <= bytes.count - candidate - frame else { continue }
            budget -= frame + length
            guard budget >= 0 else { return .undecided(offset: offset) }
            guard validRecord(in: bytes, at: candidate, frame: frame, saltSeed: saltSeed) != nil else { continue }
            return .found(lsn: lsn, offset: candidate)
        }
        return nil
    }

    /// How many times the bytes after a cut the proof search may checksum (see `proofOfDurability`).
    static let searchBudget = 16

    private static func decodePayload(_ bytes: [UInt8], from start: Int, to end: Int, lsn: UInt64) throws
        -> LoggedTransaction
    {
        var reader = PageBytesReader(Array(bytes[start..<end]))
        let revision = try reader.u64()
        let count = Int(try reader.u32())
        var writes: [LoggedWrite] = []
        writes.reserveCapacity(min(count, reader.remaining))
        for _ in 0..<count {
            let kind = try reader.u8()
            let key = try reader.raw(Int(try reader.u16()))
            switch kind {
            case 1:
                let version = try reader.u64()
                let expiresAt = try reader.i64()
                let value = try reader.raw(Int(try reader.u32()))
                writes.append(.put(key: key, value: value, version: version, expiresAt: expiresAt))
            case 2: writes.append(.delete(key: key))
            default: throw PageBytesReader.Overrun()
            }
        }
        guard reader.remaining == 0 else { throw PageBytesReader.Overrun() }
        return LoggedTransaction(lsn: lsn, revision: revision, writes: writes)
    }
}
