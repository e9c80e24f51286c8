// The index of one snapshot collection of a stream (value of `0x08 stream 0x00 collection 0x00 0x01`): which
// versions have a snapshot, and in which schema.
//
// Layout (format 1): u8 format=1, u32 count, then `count` entries of (u64 version, u64 first version, u32 schema
// version), all little-endian, in strictly ascending version order.
//
// Invariants:
// - Entries are sorted by version with no duplicates; decoding rejects anything else as corruption.
// - The index lists exactly the versions that have a record key. Both change only together, in one key-value
//   transaction conditioned on the index as it was read (SnapshotStore.swift).
// - An empty index is never stored: the key is deleted instead.

import EventStore

/// The decoded index of one stream's snapshots.
struct SnapshotIndex: Equatable {
    static let format: UInt8 = 1
    /// Bytes per entry: u64 version + u64 first version + u32 schema version.
    static let entrySize = 20

    /// The entries, ascending by version.
    private(set) var entries: [SnapshotDescriptor] = []

    init() {}

    var isEmpty: Bool { entries.isEmpty }

    /// The position where an entry for `version` is or would be inserted.
    private func position(of version: UInt64) -> (index: Int, found: Bool) {
        var low = 0
        var high = entries.count
        while low < high {
            let mid = (low + high) / 2
            if entries[mid].version < version { low = mid + 1 } else { high = mid }
        }
        return (low, low < entries.count && entries[low].version == version)
    }

    /// The entry for exactly `version`, if any.
    func entry(at version: UInt64) -> SnapshotDescriptor? {
        let (index, found) = position(of: version)
        return found ? entries[index] : nil
    }

    /// Adds the entry, replacing one at the same version.
    mutating func insert(_ descriptor: SnapshotDescriptor) {
        let (index, found) = position(of: descriptor.version)
        if found { entries[index] = descriptor } else { entries.insert(descriptor, at: index) }
    }

    /// Removes the entry at `version`; returns whether there was one.
    @discardableResult
    mutating func remove(_ version: UInt64) -> Bool {
        let (index, found) = position(of: version)
        if found { entries.remove(at: index) }
        return found
    }

    /// Removes every entry but the newest `count`; returns the removed versions, oldest first.
    mutating func keepLast(_ count: Int) -> [UInt64] {
        let excess = entries.count - max(count, 0)
        guard excess > 0 else { return [] }
        let removed = entries.prefix(excess).map(\.version)
        entries.removeFirst(excess)
        return removed
    }

    /// Removes up to `count` of the oldest entries; returns their versions.
    mutating func removeOldest(_ count: Int) -> [UInt64] {
        let removed = entries.prefix(count).map(\.version)
        entries.removeFirst(removed.count)
        return removed
    }

    func encoded() -> [UInt8] {
        var writer = SnapshotByteWriter(capacity: 5 + entries.count * Self.entrySize)
        writer.u8(Self.format)
        writer.u32(UInt32(entries.count))
        for entry in entries {
            writer.u64(entry.version)
            writer.u64(entry.firstVersion)
            writer.u32(entry.schemaVersion)
        }
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8], stream: StreamName) throws -> SnapshotIndex {
        var reader = SnapshotByteReader(bytes, location: "snapshot index of stream \"\(stream)\"")
        let format = try reader.u8()
        guard format == Self.format else { throw reader.corruption("unknown index format \(format)") }
        let count = Int(try reader.u32())
        guard count > 0, count * entrySize == reader.remaining else {
            throw reader.corruption("index of \(count) entries does not match its \(reader.remaining) bytes")
        }
        var index = SnapshotIndex()
        index.entries.reserveCapacity(count)
        for _ in 0..<count {
            let version = try reader.u64()
            let firstVersion = try reader.u64()
            let entry = SnapshotDescriptor(version: version, schemaVersion: try reader.u32(), firstVersion: firstVersion)
            if let previous = index.entries.last, previous.version >= entry.version {
                throw reader.corruption("versions out of order: \(entry.version) after \(previous.version)")
            }
            guard entry.firstVersion >= 1, entry.firstVersion <= entry.version else {
                throw reader.corruption("entry \(entry.version) has first version \(entry.firstVersion)")
            }
            index.entries.append(entry)
        }
        try reader.finish()
        return index
    }
}
