// A stream index entry names a run: the consecutive versions of one append's events to one stream, which sit at
// consecutive global positions. Documented in docs/ARCHITECTURE.md; change both together.
//
//   key:   0x03 name 0x00 u64be lastVersion
//   value: u64be lastPosition                  a run of one event (the only form stores before runs wrote)
//          u64be lastPosition u32be count      a run of `count` >= 2 events
//
// The run holds versions lastVersion - count + 1 ... lastVersion at positions lastPosition - count + 1 ...
// lastPosition. A batch of 100 events thus writes one stream index entry instead of 100.
//
// Invariants:
// - A run never spans two appends (nor two parts of one multi-stream append), so its versions and positions are
//   consecutive together, and runs of one stream never overlap.
// - Keyed by its last version, the first run a forward scan from version v's key finds is the one holding v, if any
//   run does: readers position on a version with a forward scan, then go either way.
// - Scavenge removes events from the start of a stream only, so it shortens a run from its front (same key, same
//   last position, smaller count) or removes it whole: the versions a run still names are exactly its stored ones.

import EventStore

struct StreamIndexRun: Sendable, Equatable {
    var lastVersion: UInt64
    var lastPosition: UInt64
    var count: UInt64

    var firstVersion: UInt64 { lastVersion - count + 1 }
    var versions: ClosedRange<UInt64> { firstVersion...lastVersion }

    /// The global position of `version`, which the run must hold.
    func position(of version: UInt64) -> UInt64 { lastPosition - (lastVersion - version) }

    /// The value of a run of `count` events ending at `lastPosition`.
    static func value(lastPosition: UInt64, count: Int) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count > 1 ? 12 : 8)
        bytes.appendBigEndian(lastPosition)
        if count > 1 {
            let length = UInt32(count).bigEndian
            withUnsafeBytes(of: length) { bytes.append(contentsOf: $0) }
        }
        return bytes
    }

    /// The value of this run as stored.
    var value: [UInt8] { Self.value(lastPosition: lastPosition, count: Int(count)) }

    /// Decodes an entry whose key is `versionOffset` bytes of prefix and a version; `location` names the stream index
    /// in errors.
    static func decode(
        key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, versionOffset: Int, location: @autoclosure () -> String
    ) throws -> StreamIndexRun {
        guard key.count == versionOffset + 8 else {
            throw EventStoreError.corrupted(location: location(), detail: "malformed key \(Array(key))")
        }
        let lastVersion = UInt64(bigEndian: key.loadUnaligned(fromByteOffset: versionOffset, as: UInt64.self))
        let count: UInt64
        switch value.count {
        case 8: count = 1
        case 12: count = UInt64(UInt32(bigEndian: value.loadUnaligned(fromByteOffset: 8, as: UInt32.self)))
        default:
            throw EventStoreError.corrupted(
                location: "\(location()) at version \(lastVersion)", detail: "expected 8 or 12 bytes, found \(value.count)")
        }
        let lastPosition = UInt64(bigEndian: value.loadUnaligned(as: UInt64.self))
        guard count >= 1, count <= lastVersion, count <= lastPosition, value.count == 8 || count >= 2 else {
            throw EventStoreError.corrupted(
                location: "\(location()) at version \(lastVersion)",
                detail: "a run of \(count) events cannot end at version \(lastVersion) and position \(lastPosition)")
        }
        return StreamIndexRun(lastVersion: lastVersion, lastPosition: lastPosition, count: count)
    }

    /// Decodes a whole entry (see the other `decode`).
    static func decode(_ entry: KeyValueEntry, versionOffset: Int, location: @autoclosure () -> String) throws
        -> StreamIndexRun
    {
        try entry.key.withUnsafeBytes { key in
            try entry.value.withUnsafeBytes { value in
                try decode(key: key, value: value, versionOffset: versionOffset, location: location())
            }
        }
    }
}
