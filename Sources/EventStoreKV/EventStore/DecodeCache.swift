// Decode caches: a read of many events creates each distinct stream name and event type once, looked up by the raw
// bytes of the field, so a record whose stream and type were seen before costs no String at all.
//
// Invariants:
// - A cached value was decoded (and, for stream names, validated) from exactly the bytes it is filed under: a hit
//   compares the bytes in full, the hash only picks the bucket.
// - The caches are bounded (a read of a million distinct streams keeps only the first few thousand names), so
//   memory stays small; past the bound values are decoded every time, never wrongly.
// - A cache lives for one read call on one task; it is a value type and never shared.

import EventStore
import Foundation

/// Values filed under the byte strings they were decoded from, up to `capacity` of them.
struct ByteKeyedCache<Value> {
    private var buckets: [UInt64: [(bytes: [UInt8], value: Value)]] = [:]
    private var count = 0
    private let capacity: Int
    /// The last hit or insert, checked first: runs of records from one stream (or of one type) are the common case.
    private var lastBytes: [UInt8] = []
    private var lastValue: Value?

    init(capacity: Int) { self.capacity = capacity }

    /// The value filed under `bytes`, if any.
    mutating func value(for bytes: UnsafeRawBufferPointer) -> Value? {
        if let lastValue, Self.equal(lastBytes, bytes) { return lastValue }
        guard let bucket = buckets[Self.hash(bytes)] else { return nil }
        for candidate in bucket where Self.equal(candidate.bytes, bytes) {
            lastBytes = candidate.bytes
            lastValue = candidate.value
            return candidate.value
        }
        return nil
    }

    /// Files `value` under `bytes` (a copy of them), unless the cache is full.
    mutating func insert(_ value: Value, for bytes: UnsafeRawBufferPointer) {
        let key = Array(bytes)
        lastBytes = key
        lastValue = value
        guard count < capacity else { return }
        buckets[Self.hash(bytes), default: []].append((key, value))
        count += 1
    }

    /// FNV-1a: cheap for the short fields cached here.
    private static func hash(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in bytes {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    private static func equal(_ stored: [UInt8], _ bytes: UnsafeRawBufferPointer) -> Bool {
        guard stored.count == bytes.count else { return false }
        guard !stored.isEmpty else { return true }
        return stored.withUnsafeBytes { memcmp($0.baseAddress!, bytes.baseAddress!, bytes.count) == 0 }
    }
}

/// The caches one read decodes its records with: validated stream names and interned event types.
struct StreamNameCache {
    private var names = ByteKeyedCache<StreamName>(capacity: 4_096)
    /// Most logs have a handful of event types; a few hundred covers any sane schema.
    private var types = ByteKeyedCache<String>(capacity: 256)

    /// The stream name whose u16-prefixed bytes are next in `reader`.
    mutating func name(from reader: inout ByteReader, location: RecordLocation) throws -> StreamName {
        let range = try reader.span16()
        let field = reader.field(range)
        if let known = names.value(for: field) { return known }
        let raw = try reader.string(in: range)
        let name: StreamName
        do {
            name = try StreamName.stored(raw)
        } catch {
            throw EventStoreError.corrupted(location: location.description, detail: "invalid stream name: \(error)")
        }
        names.insert(name, for: field)
        return name
    }

    /// The event type whose u16-prefixed bytes are next in `reader`.
    mutating func type(from reader: inout ByteReader) throws -> String {
        let range = try reader.span16()
        let field = reader.field(range)
        if let known = types.value(for: field) { return known }
        let type = try reader.string(in: range)
        types.insert(type, for: field)
        return type
    }
}
