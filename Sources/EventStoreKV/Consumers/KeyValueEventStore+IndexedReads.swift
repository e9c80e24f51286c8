// Category and event-type reads through the secondary index (tag 0x0A), and stream listing through the stream
// heads (tag 0x02).
//
// Cost: a category or type read of k events is one index range scan (O(log n + k)) plus, per batch, a borrowed
// range scan of the log for each run of consecutive positions and a sorted batch get of the rest: it touches only
// matching events, never the rest of the log. Each append pays two small extra index puts per event. Listing s
// streams scans s stream heads.
//
// Invariants:
// - Index entries whose event is gone (a reader racing scavenge) are skipped, never reported as events.
// - Like readAll, these reads show events until scavenge removes them: they are views of the global log, not of
//   streams, so stream metadata and deletion are applied to them only by scavenge.

import EventStore
import Foundation

extension KeyValueEventStore {
    /// Up to `limit` events of streams in `category`, from `position`, through the category index. The empty
    /// category is that of streams whose names start with `-`.
    public func readCategory(_ category: String, from position: UInt64, limit: Int) async throws -> [RecordedEvent] {
        guard category.utf8.count <= StreamName.maximumLength else {
            throw EventStoreError.invalidArgument("a category must be at most \(StreamName.maximumLength) UTF-8 bytes")
        }
        return try await readIndex(.category, category, from: position, limit: limit)
    }

    /// Up to `limit` events of type `type`, from `position`, through the event-type index.
    public func readEvents(ofType type: String, from position: UInt64, limit: Int) async throws -> [RecordedEvent] {
        guard !type.isEmpty, type.utf8.count <= Self.maximumEventTypeLength else {
            throw EventStoreError.invalidEventType(
                String(type.prefix(64)), reason: "an event type must be 1 to \(Self.maximumEventTypeLength) UTF-8 bytes")
        }
        return try await readIndex(.eventType, type, from: position, limit: limit)
    }

    private func readIndex(_ kind: SecondaryIndexKind, _ name: String, from position: UInt64, limit: Int)
        async throws -> [RecordedEvent]
    {
        guard limit >= 0 else { throw EventStoreError.invalidArgument("limit must not be negative, got \(limit)") }
        let prefix = KeyLayout.secondaryIndexPrefix(kind, name)
        let end = Key.successor(ofPrefix: prefix)
        var next = max(position, 1)
        var events: [RecordedEvent] = []
        var names = StreamNameCache()
        while events.count < limit {
            try Task.checkCancellation()
            let chunk = min(limit - events.count, readBatchSize)
            let (positions, exhausted) = try await indexPositions(prefix, from: next, to: end, count: chunk)
            guard let last = positions.last else { break }
            try await fetchLogRecords(at: positions) { index, record in
                guard let record else { return }  // scavenged after the index scan
                let event = try EventRecord.decode(record.value, position: positions[index], names: &names)
                // A damaged run must not pass off another category's (or type's) event as this one's.
                let indexed = kind == .category ? event.stream.category : event.type
                guard indexed.utf8.elementsEqual(name.utf8) else {
                    throw EventStoreError.corrupted(
                        location: "global position \(event.position)",
                        detail: "the \(kind == .category ? "category" : "event-type") index of \"\(name)\" names it, "
                            + "but it holds a \"\(event.type)\" event of stream \"\(event.stream)\"")
                }
                events.append(event)
            }
            guard !exhausted, last < .max else { break }
            next = last + 1
        }
        return events
    }

    /// Up to `count` positions from `position` on that the index runs under `prefix` name, decoded in place from
    /// one borrowed scan (the first run found is the first that reaches `position`: runs are keyed by their last
    /// position), and whether the index has no more after them.
    private func indexPositions(_ prefix: Key, from position: UInt64, to end: Key?, count: Int) async throws
        -> (positions: [UInt64], exhausted: Bool)
    {
        var positions: [UInt64] = []
        positions.reserveCapacity(count)
        var filled = false
        _ = try await backendCall {
            try await self.backend.scan(
                KeyRange(from: KeyLayout.appending(position, to: prefix), to: end), direction: .forward, limit: count
            ) { entry in
                let run = try IndexRun.positions(of: entry, prefixLength: prefix.count)
                var next = max(run.lowerBound, position)
                while positions.count < count {
                    positions.append(next)
                    if next == run.upperBound { break }
                    next += 1
                }
                // Every run names at least one position, so a scan of `count` runs fills the chunk unless it ends.
                filled = positions.count == count
                return !filled
            }
        }
        return (positions, !filled)
    }

    /// Up to `limit` live streams whose names start with `prefix`, in name order, after `after`.
    public func listStreams(prefix: String, after: StreamName?, limit: Int) async throws -> [StreamSummary] {
        guard limit >= 0 else { throw EventStoreError.invalidArgument("limit must not be negative, got \(limit)") }
        let scanPrefix = KeyLayout.streamHeadPrefix + Array(prefix.utf8)
        var range = KeyRange.prefix(scanPrefix)
        if let after {
            let next = KeyLayout.streamHead(after) + [0]
            if range.lowerBound.lexicographicallyPrecedes(next) { range.lowerBound = next }
        }
        var summaries: [StreamSummary] = []
        while summaries.count < limit {
            try Task.checkCancellation()
            let chunk = min(limit - summaries.count, readBatchSize)
            let entries = try await backendCall { try await self.backend.scan(range, direction: .forward, limit: chunk) }
            guard let last = entries.last else { break }
            for entry in entries {
                let stream = try KeyLayout.stream(fromHeadKey: entry.key)
                let head = try StreamHead.decode(entry.value, stream: stream)
                if head.state == .live { summaries.append(StreamSummary(stream: stream, version: head.version)) }
            }
            if entries.count < chunk { break }
            range.lowerBound = last.key + [0]
        }
        return summaries
    }
}
