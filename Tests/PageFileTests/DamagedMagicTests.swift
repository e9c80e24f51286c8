// A store whose two meta pages both lost their header (magic and page size) is a damaged store, not a foreign
// file: the open must say `corrupted` and name pages 0 and 1, so that neither a user nor the admin tool reads "not a
// store" and goes looking elsewhere. A file that is not a store at all is still `incompatibleStore`. Nothing is
// written either way. And the page size comes only from a sealed meta page, never from the user data that a larger
// page size's slot-1 offset lands in.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Damage: both meta pages' headers")
struct DamagedMagicTests {
    /// A closed store of a few commits, checkpointed, so its data file holds tree pages after the two meta pages.
    private func storeWithTree(_ name: String) async throws -> TemporaryDirectory {
        let directory = TemporaryDirectory(name)
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        for index in 0..<20 {
            _ = try await store.commit(KeyValueTransaction(writes: [.put([UInt8(index)], [UInt8(index), 7])]))
        }
        try await store.checkpoint()
        try await store.close()
        return directory
    }

    /// Overwrites the magic of both meta slots (bytes 32..<40 of pages 0 and 1) and returns the file's new bytes.
    private func damageBothMagics(_ directory: TemporaryDirectory, pageSize: Int) throws -> [UInt8] {
        let url = URL(fileURLWithPath: directory.file("data"))
        var data = [UInt8](try Data(contentsOf: url))
        for slot in 0..<2 {
            let start = slot * pageSize + Page.headerSize
            data.replaceSubrange(start..<(start + 8), with: Array("XXXXXXXX".utf8))
        }
        try Data(data).write(to: url)
        return data
    }

    private func expectCorruptedMetaPages(_ directory: TemporaryDirectory, evidence: String) async throws {
        await #expect { try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions()) }
            throws: { error in
                guard case EventStoreError.corrupted(let location, let detail) = error else { return false }
                return location == directory.file("data") + " pages 0 and 1" && detail.contains(evidence)
            }
    }

    @Test("both meta pages without their magic, beside the store's wal, are corrupted pages 0 and 1")
    func damagedMagicsWithWAL() async throws {
        let directory = try await storeWithTree("magic-wal")
        defer { directory.remove() }
        let damaged = try damageBothMagics(directory, pageSize: smallOptions().pageSize)
        let wal = try Data(contentsOf: URL(fileURLWithPath: directory.file("wal")))

        try await expectCorruptedMetaPages(directory, evidence: "page 2")
        #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: directory.file("data")))) == damaged)
        #expect(try Data(contentsOf: URL(fileURLWithPath: directory.file("wal"))) == wal)
    }

    @Test("a new store (no page 2) whose meta pages lost their magic is corrupted, found by its wal")
    func damagedMagicsOfNewStore() async throws {
        let directory = TemporaryDirectory("magic-new")
        defer { directory.remove() }
        try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions()).close()
        let damaged = try damageBothMagics(directory, pageSize: smallOptions().pageSize)
        #expect(damaged.count == 2 * smallOptions().pageSize, "a new store should have no page 2")

        try await expectCorruptedMetaPages(directory, evidence: "wal")
        #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: directory.file("data")))) == damaged)
    }

    @Test("both meta pages without their magic and no wal: corrupted, found by page 2's checksum")
    func damagedMagicsWithoutWAL() async throws {
        let directory = try await storeWithTree("magic-nowal")
        defer { directory.remove() }
        let damaged = try damageBothMagics(directory, pageSize: smallOptions().pageSize)
        try FileManager.default.removeItem(atPath: directory.file("wal"))

        // A writable open must not create a wal here either: it fails before it gets that far.
        try await expectCorruptedMetaPages(directory, evidence: "4096-byte page")
        #expect(!FileManager.default.fileExists(atPath: directory.file("wal")))
        #expect([UInt8](try Data(contentsOf: URL(fileURLWithPath: directory.file("data")))) == damaged)
        #expect(throws: EventStoreError.self) { try PageFileKeyValueStore.pageSize(ofStoreIn: directory.path) }
    }

    @Test("a file that is not a store, beside no wal, is still incompatibleStore")
    func foreignFileStaysIncompatible() async throws {
        let directory = TemporaryDirectory("magic-foreign")
        defer { directory.remove() }
        try FileManager.default.createDirectory(atPath: directory.path, withIntermediateDirectories: true)
        // Zeros: a valid page checksum is CRC32C over the rest, which is not zero for zeros, so page 2 is no evidence.
        try Data(repeating: 0, count: 5 * 4096).write(to: URL(fileURLWithPath: directory.file("data")))
        await #expect { try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions()) }
            throws: { error in
                guard case EventStoreError.incompatibleStore(_, let reason) = error else { return false }
                return reason == "not an EventStore page file"
            }
    }

    // Opening used to believe the first bytes at slot 1's offset for any page size; for a 4096-byte store the larger
    // sizes' offsets are tree or overflow pages, whose bytes after the header are a user's value (found by a review,
    // twenty-fifth session).

    /// A value of 40 overflow pages, each starting (at page offset 32) with a meta page's header (magic, version 1,
    /// a page size of 65536) when `crafted`, or ordinary bytes when not.
    private func overflowValue(crafted: Bool) -> [UInt8] {
        var chunk = [UInt8](repeating: 7, count: smallOptions().pageSize - Page.headerSize)
        if crafted {
            chunk.replaceSubrange(0..<8, with: Array("EVSTPAGE".utf8))
            chunk.replaceSubrange(8..<12, with: [1, 0, 0, 0])  // version 1, little endian
            chunk.replaceSubrange(12..<16, with: [0, 0, 1, 0])  // 65536, little endian
        }
        return Array(repeatElement(chunk, count: 40).joined())
    }

    /// A store holding `value` under key [1], checkpointed (epoch 1, in slot 1; its overflow pages start at page 2),
    /// whose given meta slots then lost their magic.
    private func storeHolding(_ value: [UInt8], damagingSlots slots: [Int], _ name: String) async throws
        -> TemporaryDirectory
    {
        let directory = TemporaryDirectory(name)
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], value)]))
        try await store.checkpoint()
        try await store.close()
        let url = URL(fileURLWithPath: directory.file("data"))
        var data = [UInt8](try Data(contentsOf: url))
        for slot in slots {
            let start = slot * smallOptions().pageSize + Page.headerSize
            data.replaceSubrange(start..<(start + 8), with: Array("XXXXXXXX".utf8))
        }
        try Data(data).write(to: url)
        return directory
    }

    @Test(
        "a store whose slot 0 lost its header but whose slot 1 is intact opens, whatever its values hold",
        arguments: [true, false])
    func slotOneIntact(craftedValue: Bool) async throws {
        let value = overflowValue(crafted: craftedValue)
        let directory = try await storeHolding(value, damagingSlots: [0], "probe")
        defer { directory.remove() }

        // The admin tool's first step: the page size the store declares.
        let declared = Result { try PageFileKeyValueStore.pageSize(ofStoreIn: directory.path) }
        #expect((try? declared.get()) == smallOptions().pageSize, "pageSize(ofStoreIn:) answered \(declared)")
        // The store itself: slot 1 is intact, so it opens and the value is there.
        do {
            let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
            #expect(try await reopened.get([1])?.value == value)
            try await reopened.close()
        } catch {
            Issue.record("a store with an intact slot 1 did not open: \(error)")
        }
    }

    @Test("both meta pages without their magic are corrupted pages 0 and 1, whatever the store's values hold")
    func bothMagicsLostWithCraftedValue() async throws {
        let directory = try await storeHolding(overflowValue(crafted: true), damagingSlots: [0, 1], "probe-both")
        defer { directory.remove() }
        try await expectCorruptedMetaPages(directory, evidence: "page 2")
    }

    /// When neither slot is sealed, the page size read from slot 0 was compared with the requested one before the
    /// damage was reported, so a damaged store was called incompatible on the word of an unsealed page (found by a
    /// review, twenty-fifth session).
    @Test("both meta pages damaged (headers intact) is corrupted pages 0 and 1 whatever page size is requested")
    func bothSlotsUnsealedOtherRequestedSize() async throws {
        let directory = try await storeWithTree("unsealed")
        defer { directory.remove() }
        // A torn slot 0 and a damaged slot 1: one byte of each body, past the header, so magic and size stay.
        let url = URL(fileURLWithPath: directory.file("data"))
        var data = [UInt8](try Data(contentsOf: url))
        data[200] ^= 0xFF
        data[smallOptions().pageSize + 200] ^= 0xFF
        try Data(data).write(to: url)

        var other = smallOptions()
        other.pageSize = 8192
        await #expect { try await PageFileKeyValueStore.open(directory: directory.path, options: other) }
            throws: { error in
                guard case EventStoreError.corrupted(let location, _) = error else { return false }
                return location == directory.file("data") + " pages 0 and 1"
            }
        #expect([UInt8](try Data(contentsOf: url)) == data)
    }
}
