// Which events of a stream readers see: everything the stream head (deletion) and the stream metadata (maxCount,
// maxAge, truncateBefore) do not hide.
//
// Invariants:
// - Hiding is computed at read time from the head and the metadata, so it takes effect as soon as they are written,
//   and it never depends on whether scavenge has run.
// - A stream index entry whose event is missing is a scavenged event only if the index entry is gone too when
//   checked again (scavenge removes both in one transaction). An index entry that still points to a missing event
//   is corruption, reported with its location.

import EventStore
import Foundation

/// The visible part of one stream at one moment.
struct StreamVisibility: Sendable {
    /// The lowest version readers see.
    var firstVersion: UInt64
    /// Events recorded before this instant are hidden (maxAge), if set.
    var notBefore: Date?

    /// What `head` and `metadata` leave visible at `now`, or nil if the stream reads as not found.
    init?(head: StreamHead, metadata: StreamMetadata?, now: Date) {
        guard head.state == .live else { return nil }
        var first = head.hiddenThrough + 1
        if let truncateBefore = metadata?.truncateBefore { first = max(first, truncateBefore) }
        if let maxCount = metadata?.maxCount, head.version >= maxCount {
            first = max(first, head.version - maxCount + 1)
        }
        firstVersion = first
        notBefore = metadata?.maxAge.map { now.addingTimeInterval(-$0.timeInterval) }
    }

    func isVisible(_ event: RecordedEvent) -> Bool {
        guard event.version >= firstVersion else { return false }
        if let notBefore, event.recordedAt < notBefore { return false }
        return true
    }
}

extension KeyValueEventStore {
    /// The head and metadata of `stream`, read together from one consistent state.
    func headAndMetadata(of stream: StreamName) async throws -> (head: StreamHead?, metadata: StreamMetadata?) {
        let entries = try await backendCall {
            try await self.backend.get([KeyLayout.streamHead(stream), KeyLayout.streamMetadata(stream)])
        }
        let head = try entries[0].map { try StreamHead.decode($0.value, stream: stream) }
        let metadata = try entries[1].map { try StreamMetadataRecord.decode($0.value, stream: stream) }
        return (head, metadata)
    }

    /// What readers of `stream` see now, or nil if it reads as not found.
    func visibility(of stream: StreamName) async throws -> StreamVisibility? {
        let (head, metadata) = try await headAndMetadata(of: stream)
        guard let head else { return nil }
        return StreamVisibility(head: head, metadata: metadata, now: clock())
    }

    /// The visible events the stream index entries point to, in the entries' order, skipping scavenged ones.
    func fetchVisible(_ indexEntries: [KeyValueEntry], of stream: StreamName, visibility: StreamVisibility)
        async throws -> [RecordedEvent]
    {
        let positions = try indexEntries.map {
            try PositionValue.decode($0.value, location: "stream index of \"\(stream)\"")
        }
        let records = try await backendCall { try await self.backend.get(positions.map(KeyLayout.log)) }
        let missing = zip(indexEntries, records).filter { $0.1 == nil }.map { $0.0.key }
        if !missing.isEmpty {
            let recheck = try await backendCall { try await self.backend.get(missing) }
            if let index = recheck.firstIndex(where: { $0 != nil }), let entry = recheck[index] {
                let position = (try? PositionValue.decode(entry.value, location: "")) ?? 0
                throw EventStoreError.corrupted(
                    location: "global position \(position)", detail: "a stream index entry points to a missing event")
            }
        }
        var events: [RecordedEvent] = []
        events.reserveCapacity(positions.count)
        var names = StreamNameCache()
        for (position, record) in zip(positions, records) {
            guard let record else { continue }  // scavenged while we read: checked above
            let event = try EventRecord.decode(record.value, position: position, names: &names)
            if visibility.isVisible(event) { events.append(event) }
        }
        return events
    }
}
