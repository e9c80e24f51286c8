// SortedEntries: an ordered map from byte keys to values, kept as a list of sorted chunks (each at most
// `maximumChunk` entries), for InMemoryKeyValueStore.
//
// Invariants:
// - Concatenating the chunks gives every entry in strictly increasing key order; no chunk is empty.
// - A lookup is two binary searches (over chunk last keys, then within a chunk), comparing keys with memcmp in place:
//   O(log n). A batch of sorted keys tries the neighbours of the previous hit first. An insert or delete
//   moves at most one chunk's entries, so random inserts stay cheap however large the map grows.

import Foundation

struct SortedEntries<Value> {
    private(set) var chunks: [[(key: [UInt8], value: Value)]] = []
    static var maximumChunk: Int { 512 }

    /// The position of the first entry whose key is not less than `key`; `chunks.count` when there is none.
    func lowerBound(_ key: [UInt8]) -> (chunk: Int, index: Int) {
        var low = 0
        var high = chunks.count
        while low < high {
            let mid = (low + high) / 2
            // Compared in place (no copy of the chunk or its last entry): lookups are the in-memory read path.
            if Self.precedes(chunks[mid][chunks[mid].count - 1].key, key) { low = mid + 1 } else { high = mid }
        }
        guard low < chunks.count else { return (chunks.count, 0) }
        var first = 0
        var end = chunks[low].count
        while first < end {
            let mid = (first + end) / 2
            if Self.precedes(chunks[low][mid].key, key) { first = mid + 1 } else { end = mid }
        }
        return (low, first)
    }

    func value(for key: [UInt8]) -> Value? {
        let (chunk, index) = lowerBound(key)
        guard chunk < chunks.count, chunks[chunk][index].key == key else { return nil }
        return chunks[chunk][index].value
    }

    /// Whether `left` sorts before `right` (unsigned bytes, a prefix first): one memcmp instead of the generic
    /// element-by-element comparison, which dominated lookups.
    static func precedes(_ left: [UInt8], _ right: [UInt8]) -> Bool {
        let common = min(left.count, right.count)
        let order = left.withUnsafeBytes { left in
            right.withUnsafeBytes { right in
                common == 0 ? 0 : memcmp(left.baseAddress!, right.baseAddress!, common)
            }
        }
        return order != 0 ? order < 0 : left.count < right.count
    }

    /// Whether `left` and `right` are the same bytes.
    static func same(_ left: [UInt8], _ right: [UInt8]) -> Bool {
        guard left.count == right.count else { return false }
        guard !left.isEmpty else { return true }
        return left.withUnsafeBytes { left in
            right.withUnsafeBytes { right in memcmp(left.baseAddress!, right.baseAddress!, left.count) == 0 }
        }
    }

    /// Where `key` is stored, if it is. The entry at `hint` and the one after it are tried before searching: a batch
    /// of sorted keys (a stream's log records, often at consecutive positions) mostly names neighbours.
    func find(_ key: [UInt8], near hint: (chunk: Int, index: Int)?) -> (chunk: Int, index: Int)? {
        if var (chunk, index) = hint {
            for _ in 0..<2 {
                guard chunk < chunks.count, index < chunks[chunk].count else { break }
                if Self.same(chunks[chunk][index].key, key) { return (chunk, index) }
                index += 1
                if index == chunks[chunk].count { (chunk, index) = (chunk + 1, 0) }
            }
        }
        let (chunk, index) = lowerBound(key)
        guard chunk < chunks.count, Self.same(chunks[chunk][index].key, key) else { return nil }
        return (chunk, index)
    }

    /// The value stored at a position returned by ``find(_:near:)``.
    func value(at position: (chunk: Int, index: Int)) -> Value { chunks[position.chunk][position.index].value }

    /// Inserts or replaces the value for `key`.
    mutating func set(_ value: Value, for key: [UInt8]) {
        var (chunk, index) = lowerBound(key)
        if chunk < chunks.count, chunks[chunk][index].key == key {
            chunks[chunk][index].value = value
            return
        }
        if chunks.isEmpty {
            chunks.append([(key, value)])
            return
        }
        if chunk == chunks.count {
            chunk = chunks.count - 1
            index = chunks[chunk].count
        }
        chunks[chunk].insert((key, value), at: index)
        if chunks[chunk].count > 2 * Self.maximumChunk {
            let upper = Array(chunks[chunk][Self.maximumChunk...])
            chunks[chunk].removeSubrange(Self.maximumChunk...)
            chunks.insert(upper, at: chunk + 1)
        }
    }

    /// Removes `key`; returns whether it was present.
    @discardableResult
    mutating func remove(_ key: [UInt8]) -> Bool {
        let (chunk, index) = lowerBound(key)
        guard chunk < chunks.count, chunks[chunk][index].key == key else { return false }
        chunks[chunk].remove(at: index)
        if chunks[chunk].isEmpty { chunks.remove(at: chunk) }
        return true
    }

    /// Visits entries with keys in `lower ..< upper` (nil: no upper bound) in order, until `visit` returns false.
    func forEach(
        from lower: [UInt8], to upper: [UInt8]?, backward: Bool, _ visit: (([UInt8], Value)) throws -> Bool
    ) rethrows {
        if backward {
            var (chunk, index) = upper.map { lowerBound($0) } ?? (chunks.count, 0)
            while true {
                // Step to the previous entry.
                if index > 0 {
                    index -= 1
                } else {
                    chunk -= 1
                    guard chunk >= 0 else { return }
                    index = chunks[chunk].count - 1
                }
                let entry = chunks[chunk][index]
                if try Self.precedes(entry.key, lower) || !visit((entry.key, entry.value)) { return }
            }
        } else {
            var (chunk, index) = lowerBound(lower)
            while chunk < chunks.count {
                let entry = chunks[chunk][index]
                if let upper, !Self.precedes(entry.key, upper) { return }
                if try !visit((entry.key, entry.value)) { return }
                index += 1
                if index == chunks[chunk].count {
                    chunk += 1
                    index = 0
                }
            }
        }
    }
}

extension SortedEntries: Sendable where Value: Sendable {}
