// SortedEntries: an ordered map from byte keys to values, kept as a list of sorted chunks (each at most
// `maximumChunk` entries), for InMemoryKeyValueStore.
//
// Invariants:
// - Concatenating the chunks gives every entry in strictly increasing key order; no chunk is empty.
// - A lookup is two binary searches (over chunk last keys, then within a chunk): O(log n). An insert or delete
//   moves at most one chunk's entries, so random inserts stay cheap however large the map grows.

struct SortedEntries<Value> {
    private(set) var chunks: [[(key: [UInt8], value: Value)]] = []
    static var maximumChunk: Int { 512 }

    /// The position of the first entry whose key is not less than `key`; `chunks.count` when there is none.
    func lowerBound(_ key: [UInt8]) -> (chunk: Int, index: Int) {
        var low = 0
        var high = chunks.count
        while low < high {
            let mid = (low + high) / 2
            if let last = chunks[mid].last, last.key.lexicographicallyPrecedes(key) { low = mid + 1 } else { high = mid }
        }
        guard low < chunks.count else { return (chunks.count, 0) }
        let chunk = chunks[low]
        var first = 0
        var end = chunk.count
        while first < end {
            let mid = (first + end) / 2
            if chunk[mid].key.lexicographicallyPrecedes(key) { first = mid + 1 } else { end = mid }
        }
        return (low, first)
    }

    func value(for key: [UInt8]) -> Value? {
        let (chunk, index) = lowerBound(key)
        guard chunk < chunks.count, chunks[chunk][index].key == key else { return nil }
        return chunks[chunk][index].value
    }

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
                if try entry.key.lexicographicallyPrecedes(lower) || !visit((entry.key, entry.value)) { return }
            }
        } else {
            var (chunk, index) = lowerBound(lower)
            while chunk < chunks.count {
                let entry = chunks[chunk][index]
                if let upper, !entry.key.lexicographicallyPrecedes(upper) { return }
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
