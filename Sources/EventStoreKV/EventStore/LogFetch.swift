// Fetching the log records an index points to (a stream's, a category's, an event type's): runs of consecutive
// positions, which batch appends produce, are read with one borrowed range scan of the log each; the positions
// between runs with one borrowed batch get. A scan walks the leaves once where a get descends the tree per key.
//
// Invariants:
// - Every position is visited exactly once, in the order given, with its record or nil if the log has none there
//   (scavenged, or corruption for the caller to judge); the bytes are lent, as by the backend.
// - A run scan covers exactly the run's key range, so it can lend only records of the run; a position it skips is
//   visited as nil, exactly like an absent key in a batch get.
// - Each backend call reads one consistent state; different segments may see different states, which readers
//   already tolerate (records are never rewritten, only added or scavenged).

import EventStore
import Foundation

extension KeyValueEventStore {
    /// Runs shorter than this are fetched with the surrounding positions in one batch get: a scan is a backend call
    /// of its own.
    static let minimumScannedRun = 8

    /// Lends the log records at `positions` (in read order) to `visit` with their index, nil where there is none.
    func fetchLogRecords(at positions: [UInt64], _ visit: (Int, BorrowedEntry?) throws -> Void) async throws {
        for segment in Self.segments(of: positions) {
            if segment.isRun {
                try await scanLogRun(positions, segment.range, visit)
            } else {
                let keys = positions[segment.range].map(KeyLayout.log)
                try await backendCall {
                    try await self.backend.get(keys) { offset, record in
                        try visit(segment.range.lowerBound + offset, record)
                    }
                }
            }
        }
    }

    /// `positions` split, in order, into runs of at least ``minimumScannedRun`` consecutive positions (ascending or
    /// descending) and the stretches between them.
    static func segments(of positions: [UInt64]) -> [(range: Range<Int>, isRun: Bool)] {
        var segments: [(range: Range<Int>, isRun: Bool)] = []
        var stretchStart = 0
        var index = 0
        while index < positions.count {
            let end = runEnd(positions, from: index)
            if end - index >= minimumScannedRun {
                if stretchStart < index { segments.append((stretchStart..<index, false)) }
                segments.append((index..<end, true))
                stretchStart = end
            }
            index = end
        }
        if stretchStart < positions.count { segments.append((stretchStart..<positions.count, false)) }
        return segments
    }

    /// The end of the run of consecutive positions starting at `start`, in the direction its first step takes.
    private static func runEnd(_ positions: [UInt64], from start: Int) -> Int {
        var end = start + 1
        guard end < positions.count else { return end }
        let ascending = positions[start] < positions[end]
        while end < positions.count {
            let (previous, current) = (positions[end - 1], positions[end])
            guard ascending ? previous < current && current - previous == 1 : current < previous && previous - current == 1
            else { break }
            end += 1
        }
        return end
    }

    /// Lends the records of one run of consecutive positions from a single borrowed scan of their key range.
    private func scanLogRun(_ positions: [UInt64], _ run: Range<Int>, _ visit: (Int, BorrowedEntry?) throws -> Void)
        async throws
    {
        let (first, last) = (positions[run.lowerBound], positions[run.upperBound - 1])
        let ascending = first <= last
        let (low, high) = ascending ? (first, last) : (last, first)
        let upper = high == .max ? Key.successor(ofPrefix: KeyLayout.logPrefix) : KeyLayout.log(high + 1)
        var next = run.lowerBound
        _ = try await backendCall {
            try await self.backend.scan(
                KeyRange(from: KeyLayout.log(low), to: upper), direction: ascending ? .forward : .backward,
                limit: run.count
            ) { entry in
                guard let position = KeyLayout.position(fromLogKey: entry.key) else {
                    throw EventStoreError.corrupted(location: "global log", detail: "malformed log key \(Array(entry.key))")
                }
                // Positions of the run the scan passed over have no record.
                while next < run.upperBound, positions[next] != position {
                    try visit(next, nil)
                    next += 1
                }
                guard next < run.upperBound else { return false }
                try visit(next, entry)
                next += 1
                return true
            }
        }
        while next < run.upperBound {
            try visit(next, nil)
            next += 1
        }
    }
}
