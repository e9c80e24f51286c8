// Keys and values of the consumer and retention features (tags reserved in KeyLayout.swift). Documented in
// docs/SUBSCRIPTIONS.md; change both together.
//
//   0x07 name                                   stream metadata (StreamMetadataRecord)
//   0x09 consumer                               consumer checkpoint (CheckpointRecord)
//   0x0A 0x01 u16be len category u64be last    category index run (IndexRun value)
//   0x0A 0x02 u16be len type     u64be last    event-type index run (IndexRun value)
//
// An index run names consecutive global positions `last - count + 1 ... last` of one append's events to one stream
// (all of one category; for the type index, consecutive events of one type). Its value is the u32be count, or empty
// for a run of one, so a batch of 100 events writes one category entry instead of 100.
//
// Invariants:
// - Index runs are written in the same transaction as the events they name, and trimmed or removed in the same
//   transaction as those events by scavenge, so a position in a run without its event exists only transiently to
//   a reader racing a scavenge (readers skip it).
// - A run never spans two appends, so every position in it belongs to one stream: scavenging a stream rewrites only
//   that stream's runs. Keyed by the run's last position, the first run a forward scan from position p finds is the
//   first that reaches p.
// - The length prefix makes one name's entries a contiguous key range ordered by position, whatever bytes the name
//   holds (event types may contain any character).

import EventStore
import Foundation

enum SecondaryIndexKind: UInt8 {
    case category = 0x01
    case eventType = 0x02
}

extension KeyLayout {
    static func streamMetadata(_ stream: StreamName) -> Key {
        var key: Key = [KeyTag.streamMetadata.rawValue]
        key.append(contentsOf: stream.rawValue.utf8)
        return key
    }

    static func checkpoint(_ consumer: String) -> Key {
        var key: Key = [KeyTag.checkpoint.rawValue]
        key.append(contentsOf: consumer.utf8)
        return key
    }

    static let streamHeadPrefix: Key = [KeyTag.streamHead.rawValue]

    /// The stream name of a stream-head key.
    static func stream(fromHeadKey key: Key) throws -> StreamName {
        guard key.first == KeyTag.streamHead.rawValue, let name = String(validating: key.dropFirst(), as: UTF8.self)
        else { throw EventStoreError.corrupted(location: "stream head key \(key)", detail: "malformed stream head key") }
        do {
            return try StreamName.stored(name)
        } catch {
            throw EventStoreError.corrupted(location: "stream head key \(key)", detail: "invalid stream name: \(error)")
        }
    }

    /// The prefix of `kind`'s index of `name`, in one allocation with room for `spare` more bytes.
    static func secondaryIndexPrefix(_ kind: SecondaryIndexKind, _ name: String, spare: Int = 0) -> Key {
        let length = name.utf8.count
        var key = Key()
        key.reserveCapacity(4 + length + spare)
        key.append(KeyTag.secondaryIndex.rawValue)
        key.append(kind.rawValue)
        key.append(UInt8(length >> 8))
        key.append(UInt8(length & 0xFF))
        key.append(contentsOf: name.utf8)
        return key
    }

    /// The key of `position` in `kind`'s index of `name`, in one allocation.
    static func secondaryIndex(_ kind: SecondaryIndexKind, _ name: String, position: UInt64) -> Key {
        var key = secondaryIndexPrefix(kind, name, spare: 8)
        key.appendBigEndian(position)
        return key
    }

    /// The index writes for one event at `position`.
    static func secondaryIndexWrites(stream: StreamName, type: String, position: UInt64) -> [KeyWrite] {
        [
            .put(secondaryIndex(.category, stream.category, position: position), IndexRun.encode(count: 1)),
            .put(secondaryIndex(.eventType, type, position: position), IndexRun.encode(count: 1)),
        ]
    }
}

/// The value of a secondary index run (`0x0A kind name last`): how many consecutive positions, ending at the key's,
/// it names. Empty for one (so single events cost no value bytes); otherwise u32 big-endian, at least 2.
enum IndexRun {
    static func encode(count: Int) -> [UInt8] {
        guard count > 1 else { return [] }
        let value = UInt32(count)
        return [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }

    /// The positions a run ending at `last` with `value` names.
    static func positions(last: UInt64, value: UnsafeRawBufferPointer, location: @autoclosure () -> String) throws
        -> ClosedRange<UInt64>
    {
        guard !value.isEmpty else { return last...last }
        guard value.count == 4 else {
            throw EventStoreError.corrupted(location: location(), detail: "index run value of \(value.count) bytes")
        }
        let count = UInt64(value[0]) << 24 | UInt64(value[1]) << 16 | UInt64(value[2]) << 8 | UInt64(value[3])
        guard count >= 2, count <= last else {
            throw EventStoreError.corrupted(location: location(), detail: "index run of \(count) positions ending at \(last)")
        }
        return (last - count + 1)...last
    }

    /// The positions the lent index entry `entry` (a key under a prefix of `prefixLength` bytes) names.
    /// - Throws: ``EventStoreError/corrupted(location:detail:)`` naming the key when it or its value is malformed.
    static func positions(of entry: BorrowedEntry, prefixLength: Int) throws -> ClosedRange<UInt64> {
        guard entry.key.count == prefixLength + 8 else {
            throw EventStoreError.corrupted(location: "secondary index key \(Array(entry.key))", detail: "malformed key")
        }
        let last = UInt64(bigEndian: entry.key.loadUnaligned(fromByteOffset: prefixLength, as: UInt64.self))
        return try positions(last: last, value: entry.value, location: "secondary index key \(Array(entry.key))")
    }

    /// The puts that name `positions` (ascending, distinct) under `prefix`: one run per stretch of consecutive ones.
    static func writes(prefix: Key, positions: [UInt64]) -> [KeyWrite] {
        var writes: [KeyWrite] = []
        var start = 0
        for index in positions.indices where index + 1 == positions.count || positions[index + 1] != positions[index] + 1 {
            writes.append(.put(KeyLayout.appending(positions[index], to: prefix), encode(count: index - start + 1)))
            start = index + 1
        }
        return writes
    }
}

/// A consumer checkpoint (value of `0x09 consumer`). Format 1: u8 format=1, u64 position.
enum CheckpointRecord {
    static func encode(_ position: UInt64) -> [UInt8] {
        var writer = ByteWriter(capacity: 9)
        writer.u8(1)
        writer.u64(position)
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8], consumer: String) throws -> UInt64 {
        try ByteReader.reading(bytes, location: "checkpoint of consumer \"\(consumer)\"") { reader in
            try decode(&reader, consumer: consumer)
        }
    }

    private static func decode(_ reader: inout ByteReader, consumer: String) throws -> UInt64 {
        let format = try reader.u8()
        guard format == 1, reader.remaining == 8 else {
            throw EventStoreError.corrupted(
                location: "checkpoint of consumer \"\(consumer)\"", detail: "unknown format \(format) or wrong size")
        }
        return try reader.u64()
    }
}

/// Stream metadata (value of `0x07 name`). Format 1: u8 format=1, u8 flags (bit0 maxCount, bit1 maxAge,
/// bit2 truncateBefore), [u64 maxCount], [i64 maxAge in nanoseconds], [u64 truncateBefore].
enum StreamMetadataRecord {
    static func encode(_ metadata: StreamMetadata) -> [UInt8] {
        var writer = ByteWriter(capacity: 26)
        writer.u8(1)
        let flags: UInt8 =
            (metadata.maxCount != nil ? 1 : 0) | (metadata.maxAge != nil ? 2 : 0) | (metadata.truncateBefore != nil ? 4 : 0)
        writer.u8(flags)
        if let maxCount = metadata.maxCount { writer.u64(maxCount) }
        if let maxAge = metadata.maxAge { writer.i64(maxAge.nanoseconds) }
        if let truncateBefore = metadata.truncateBefore { writer.u64(truncateBefore) }
        return writer.bytes
    }

    static func decode(_ bytes: [UInt8], stream: StreamName) throws -> StreamMetadata {
        let location = "metadata of stream \"\(stream)\""
        return try ByteReader.reading(bytes, location: location) { reader in
            try decode(&reader, location: location)
        }
    }

    private static func decode(_ reader: inout ByteReader, location: String) throws -> StreamMetadata {
        let format = try reader.u8()
        guard format == 1 else { throw EventStoreError.corrupted(location: location, detail: "unknown format \(format)") }
        let flags = try reader.u8()
        guard flags & ~7 == 0 else { throw EventStoreError.corrupted(location: location, detail: "unknown flags \(flags)") }
        var metadata = StreamMetadata()
        if flags & 1 != 0 { metadata.maxCount = try reader.u64() }
        if flags & 2 != 0 { metadata.maxAge = .nanoseconds(try reader.i64()) }
        if flags & 4 != 0 { metadata.truncateBefore = try reader.u64() }
        guard reader.remaining == 0 else {
            throw EventStoreError.corrupted(location: location, detail: "\(reader.remaining) trailing bytes")
        }
        // Only valid metadata is ever written: scavenge must not remove events on the word of an invalid one.
        do {
            try metadata.validate()
        } catch EventStoreError.invalidArgument(let reason) {
            throw EventStoreError.corrupted(location: location, detail: reason)
        }
        return metadata
    }
}
