// Page: the fixed-size unit of the page file and its common 32-byte header (layout in docs/FORMAT.md).
//
// Invariants:
// - Page n lives at byte offset n * pageSize of the `data` file. Pages 0 and 1 are the two meta pages; every other
//   page is a branch, leaf, overflow or free-list page, or free.
// - Every written page carries its own page number, the checkpoint LSN it was written at and a CRC32C over bytes
//   4 ..< pageSize. `Page.check` verifies the checksum, the page number and (when asked) the type on every read
//   from disk, so a misdirected or torn write and a flipped bit are all reported as `corrupted` naming the file and
//   the page, never returned as data. A page's LSN is never above the checkpoint LSN of a meta that reaches it:
//   verify checks that, and read-only snapshots rely on it to tell a page a writer reused (ReadOnlySnapshot.swift).

import EventStore

/// What a page holds (byte 4 of the header).
enum PageType: UInt8 {
    case meta = 1
    case branch = 2
    case leaf = 3
    case overflow = 4
    case freeList = 5
}

/// Page-level constants and the seal/check of the common header.
enum Page {
    /// Bytes of the common header; the body starts here.
    static let headerSize = 32
    /// Smallest and largest page sizes accepted.
    static let sizeRange = 4096...65536

    /// Offsets inside the common header.
    static let checksumOffset = 0
    static let typeOffset = 4
    static let numberOffset = 8
    static let lsnOffset = 16
    /// Type-specific 8 bytes: an entry count for branch, leaf and free-list pages.
    static let countOffset = 24

    /// A zeroed page buffer with its header fields (but not its checksum) set.
    static func blank(size: Int, type: PageType, number: UInt64, lsn: UInt64) -> [UInt8] {
        var page = [UInt8](repeating: 0, count: size)
        page[typeOffset] = type.rawValue
        page.storeLE(number, at: numberOffset)
        page.storeLE(lsn, at: lsnOffset)
        return page
    }

    /// Writes the checksum of `page` into its header.
    static func seal(_ page: inout [UInt8]) {
        let checksum = CRC32C.checksum(page, 4..<page.count)
        page.storeLE(checksum, at: checksumOffset)
    }

    /// Checks that `page`, read from `number` of `path`, is whole, of `type`, and really page `number`.
    static func check(_ page: [UInt8], number: UInt64, type: PageType?, size: Int, path: String) throws {
        var location: String { "\(path) page \(number)" }  // formatted only when a check fails
        guard page.count == size else {
            throw EventStoreError.corrupted(
                location: location, detail: "the file ends inside the page (\(page.count) of \(size) bytes)")
        }
        let stored = page.loadLE(UInt32.self, at: checksumOffset)
        guard stored == CRC32C.checksum(page, 4..<size) else {
            throw EventStoreError.corrupted(location: location, detail: "page checksum mismatch")
        }
        let storedNumber = page.loadLE(UInt64.self, at: numberOffset)
        guard storedNumber == number else {
            throw EventStoreError.corrupted(
                location: location, detail: "the page claims to be page \(storedNumber) (a misdirected write)")
        }
        if let type, page[typeOffset] != type.rawValue {
            throw EventStoreError.corrupted(
                location: location, detail: "expected a \(type) page, found page type \(page[typeOffset])")
        }
    }
}
