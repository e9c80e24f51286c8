// Header: the two alternating meta pages (0 and 1) that name the durable state of the page file.
//
// Invariants:
// - A checkpoint writes its meta page into slot `epoch % 2`, never over the meta of the current durable state, and
//   only after every page that meta names has been written and fsynced. The valid meta with the highest epoch is
//   the durable state; a torn meta write fails its checksum and the other slot is used (LMDB/bbolt style).
// - The meta carries the format version and page size, so a newer format or another page size is refused before
//   anything is written.
// - `walSalt` is the salt the WAL must carry for its records to belong to this state; a WAL with another salt is a
//   stale generation and is ignored (SQLite's WAL salts).
// - The counters (epoch, checkpoint LSN, revision, key count) stay below `counterCeiling`: open refuses a meta whose
//   counters reach it, and every step of a counter goes through `counterStep`, which throws instead of trapping.

import EventStore

/// The decoded contents of a meta page.
struct MetaPage: Equatable {
    /// "EVSTPAGE": identifies an EventStore page file.
    static let magic: [UInt8] = Array("EVSTPAGE".utf8)
    /// The on-disk format version this code writes and reads.
    static let formatVersion: UInt32 = 1

    /// Checkpoints completed; the slot is `epoch % 2`.
    var epoch: UInt64
    /// Page size of the whole file.
    var pageSize: Int
    /// Root page of the B+tree, or 0 for an empty tree.
    var root: UInt64
    /// First free-list page, or 0 if the free list is empty.
    var freeListHead: UInt64
    /// Pages in the file: every page number is below this.
    var pageCount: UInt64
    /// Every WAL record up to and including this LSN is reflected in the tree.
    var checkpointLSN: UInt64
    /// The store-wide revision of the tree.
    var revision: UInt64
    /// Salt of the WAL generation that continues this state.
    var walSalt: UInt64
    /// Live keys in the tree (for stats).
    var keyCount: UInt64

    /// Every counter of a meta page (and every LSN, revision and per-key version) stays below this: 2^62 steps are
    /// more than any store takes, so a value at or above it is damage, and one more step can never overflow.
    static let counterCeiling: UInt64 = 1 << 62

    /// `value` moved by `delta` (+1 or -1): `corrupted` at `location`, naming `name`, if that leaves 0 ..< the ceiling.
    static func counterStep(
        _ value: UInt64, by delta: Int, _ name: String, location: @autoclosure () -> String
    ) throws -> UInt64 {
        let next = delta < 0 ? value.subtractingReportingOverflow(1) : value.addingReportingOverflow(1)
        guard !next.overflow, next.partialValue < counterCeiling else {
            throw EventStoreError.corrupted(
                location: location(), detail: "the \(name) \(value) cannot \(delta < 0 ? "go below 0" : "grow past 2^62")")
        }
        return next.partialValue
    }

    // Body offsets (after the common page header).
    private static let magicOffset = Page.headerSize
    private static let versionOffset = magicOffset + 8
    private static let pageSizeOffset = versionOffset + 4
    private static let epochOffset = pageSizeOffset + 4
    private static let rootOffset = epochOffset + 8
    private static let freeListOffset = rootOffset + 8
    private static let pageCountOffset = freeListOffset + 8
    private static let checkpointLSNOffset = pageCountOffset + 8
    private static let revisionOffset = checkpointLSNOffset + 8
    private static let saltOffset = revisionOffset + 8
    private static let keyCountOffset = saltOffset + 8
    /// Bytes of a meta page that must be read to learn the page size.
    static let probeSize = keyCountOffset + 8

    /// The meta page bytes for slot `epoch % 2`.
    func encoded() -> [UInt8] {
        let slot = epoch % 2
        var page = Page.blank(size: pageSize, type: .meta, number: slot, lsn: checkpointLSN)
        page.replaceSubrange(Self.magicOffset..<(Self.magicOffset + 8), with: Self.magic)
        page.storeLE(Self.formatVersion, at: Self.versionOffset)
        page.storeLE(UInt32(pageSize), at: Self.pageSizeOffset)
        page.storeLE(epoch, at: Self.epochOffset)
        page.storeLE(root, at: Self.rootOffset)
        page.storeLE(freeListHead, at: Self.freeListOffset)
        page.storeLE(pageCount, at: Self.pageCountOffset)
        page.storeLE(checkpointLSN, at: Self.checkpointLSNOffset)
        page.storeLE(revision, at: Self.revisionOffset)
        page.storeLE(walSalt, at: Self.saltOffset)
        page.storeLE(keyCount, at: Self.keyCountOffset)
        Page.seal(&page)
        return page
    }

    /// What the first bytes of a slot say, before the checksum can be checked.
    enum Probe {
        /// Not an EventStore page file at all.
        case foreign
        /// An EventStore page file of a newer format version.
        case newerVersion(UInt32)
        /// The page size the slot declares.
        case pageSize(Int)
    }

    /// The page size a slot's first bytes declare, whatever their format version; nil if they are not a meta page's.
    static func declaredPageSize(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= probeSize, Array(bytes[magicOffset..<(magicOffset + 8)]) == magic else { return nil }
        let size = Int(bytes.loadLE(UInt32.self, at: pageSizeOffset))
        return Page.sizeRange.contains(size) && size.nonzeroBitCount == 1 ? size : nil
    }

    /// The format version of a whole meta page read from `slot` whose checksum holds; nil for a damaged page or
    /// anything else. A newer build's meta still passes this check: the page header and checksum are fixed.
    static func sealedVersion(_ page: [UInt8], slot: UInt64, pageSize: Int, path: String) -> UInt32? {
        guard (try? Page.check(page, number: slot, type: .meta, size: pageSize, path: path)) != nil,
            declaredPageSize(page) != nil
        else { return nil }
        return page.loadLE(UInt32.self, at: versionOffset)
    }

    /// Reads the magic, version and page size from the start of a slot.
    static func probe(_ bytes: [UInt8]) -> Probe {
        guard bytes.count >= probeSize, Array(bytes[magicOffset..<(magicOffset + 8)]) == magic else { return .foreign }
        let version = bytes.loadLE(UInt32.self, at: versionOffset)
        guard version <= formatVersion else { return .newerVersion(version) }
        let size = Int(bytes.loadLE(UInt32.self, at: pageSizeOffset))
        return Page.sizeRange.contains(size) && size.nonzeroBitCount == 1 ? .pageSize(size) : .foreign
    }

    /// Decodes a whole meta page read from `slot`, or nil if it is torn, damaged or not a meta page.
    static func decode(_ page: [UInt8], slot: UInt64, pageSize: Int, path: String) -> MetaPage? {
        guard (try? Page.check(page, number: slot, type: .meta, size: pageSize, path: path)) != nil,
            case .pageSize(let size) = probe(page), size == pageSize
        else { return nil }
        let meta = MetaPage(
            epoch: page.loadLE(UInt64.self, at: epochOffset), pageSize: size,
            root: page.loadLE(UInt64.self, at: rootOffset), freeListHead: page.loadLE(UInt64.self, at: freeListOffset),
            pageCount: page.loadLE(UInt64.self, at: pageCountOffset),
            checkpointLSN: page.loadLE(UInt64.self, at: checkpointLSNOffset),
            revision: page.loadLE(UInt64.self, at: revisionOffset), walSalt: page.loadLE(UInt64.self, at: saltOffset),
            keyCount: page.loadLE(UInt64.self, at: keyCountOffset))
        return meta.epoch % 2 == slot ? meta : nil
    }
}
