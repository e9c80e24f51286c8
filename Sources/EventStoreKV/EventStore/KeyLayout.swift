// The key layout of KeyValueEventStore: one tag byte, then the tag's fields. Documented in docs/ARCHITECTURE.md;
// change both together. Integers are big-endian so that byte order equals numeric order. Stream names never contain
// 0x00 (control characters are rejected), so 0x00 ends a name inside a key.

import EventStore
import Foundation

/// Tags of the key spaces. Each later feature claims a tag here.
enum KeyTag: UInt8 {
    /// `G`: the global head: the last assigned global position.
    case globalHead = 0x01
    /// `H name`: the stream head: its version and state.
    case streamHead = 0x02
    /// `S name 0x00 version`: stream index: version → global position.
    case streamIndex = 0x03
    /// `L position`: the global log: position → the event record.
    case log = 0x04
    /// `I uuid`: event-id index: id → global position.
    case eventID = 0x05
    /// `K name`: the session lease on a stream (a TTL key).
    case lease = 0x06
    /// Reserved: stream metadata (retention), subscriptions issue.
    case streamMetadata = 0x07
    /// Reserved: snapshots.
    case snapshot = 0x08
    /// Reserved: consumer checkpoints.
    case checkpoint = 0x09
    /// Reserved: secondary indexes (category, event type).
    case secondaryIndex = 0x0A
    /// Reserved: sagas.
    case saga = 0x0B
}

enum KeyLayout {
    static let globalHead: Key = [KeyTag.globalHead.rawValue]

    static func streamHead(_ stream: StreamName) -> Key {
        tagged(.streamHead, stream)
    }

    /// `tag` followed by the stream's name, in one allocation with room for `spare` more bytes.
    private static func tagged(_ tag: KeyTag, _ stream: StreamName, spare: Int = 0) -> Key {
        var key = Key()
        key.reserveCapacity(1 + stream.rawValue.utf8.count + spare)
        key.append(tag.rawValue)
        key.append(contentsOf: stream.rawValue.utf8)
        return key
    }

    static func streamIndexPrefix(_ stream: StreamName) -> Key {
        // Room for the 0x00 that ends the name and a version.
        var key = tagged(.streamIndex, stream, spare: 9)
        key.append(0)
        return key
    }

    static func streamIndex(_ stream: StreamName, version: UInt64) -> Key {
        var key = streamIndexPrefix(stream)
        key.appendBigEndian(version)
        return key
    }

    /// `prefix` followed by `value` big-endian, in one allocation: index keys built from a prefix computed once.
    static func appending(_ value: UInt64, to prefix: Key) -> Key {
        var key = Key()
        key.reserveCapacity(prefix.count + 8)
        key.append(contentsOf: prefix)
        key.appendBigEndian(value)
        return key
    }

    static func log(_ position: UInt64) -> Key {
        Key(unsafeUninitializedCapacity: 9) { bytes, count in
            bytes[0] = KeyTag.log.rawValue
            UnsafeMutableRawBufferPointer(bytes).storeBytes(of: position.bigEndian, toByteOffset: 1, as: UInt64.self)
            count = 9
        }
    }

    static let logPrefix: Key = [KeyTag.log.rawValue]

    static func position(fromLogKey key: Key) -> UInt64? {
        guard key.count == 9, key[0] == KeyTag.log.rawValue else { return nil }
        return key.readBigEndian(at: 1)
    }

    /// The position in a lent log key, or nil if the key is malformed.
    static func position(fromLogKey key: UnsafeRawBufferPointer) -> UInt64? {
        guard key.count == 9, key[0] == KeyTag.log.rawValue else { return nil }
        return UInt64(bigEndian: key.loadUnaligned(fromByteOffset: 1, as: UInt64.self))
    }

    static func eventID(_ id: UUID) -> Key {
        Key(unsafeUninitializedCapacity: 17) { bytes, count in
            bytes[0] = KeyTag.eventID.rawValue
            withUnsafeBytes(of: id.uuid) { uuid in
                for index in 0..<16 { bytes[1 + index] = uuid[index] }
            }
            count = 17
        }
    }

    static func lease(_ stream: StreamName) -> Key {
        tagged(.lease, stream)
    }
}

extension Array where Element == UInt8 {
    mutating func appendBigEndian(_ value: UInt64) {
        var big = value.bigEndian
        Swift.withUnsafeBytes(of: &big) { append(contentsOf: $0) }
    }

    func readBigEndian(at offset: Int) -> UInt64 {
        withUnsafeBytes { UInt64(bigEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt64.self)) }
    }
}
