// Which events of a stream readers see: everything the stream head (deletion) and the stream metadata (maxCount,
// maxAge, truncateBefore) do not hide.
//
// Invariants:
// - Hiding is computed at read time from the head and the metadata, so it takes effect as soon as they are written,
//   and it never depends on whether scavenge has run.
// - A version whose event is missing is a scavenged event only if its stream index run no longer names it when
//   checked again (scavenge removes both in one transaction). A run that still names a missing event is corruption,
//   reported with its location; so is a run naming a record of another stream or version, which neither reads nor
//   scavenge act on.

import EventStore
import Foundation

/// The visible part of one stream at one moment.
struct StreamVisibility: Sendable {
    /// The lowest version readers see.
    var firstVersion: UInt64
    /// The stream's version at that moment: a read returns nothing appended after it, so that it is consistent with
    /// the head its limits were computed from (maxCount would otherwise be exceeded by concurrent appends).
    var lastVersion: UInt64
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
        lastVersion = head.version
        notBefore = metadata?.maxAge.map { now.addingTimeInterval(-$0.timeInterval) }
    }

    func isVisible(_ event: BorrowedEvent) -> Bool {
        guard event.version >= firstVersion, event.version <= lastVersion else { return false }
        if let notBefore, event.recordedAt < notBefore { return false }
        return true
    }
}

extension KeyValueEventStore {
    /// Checks that the record at `position`, of `recordedStream` at `recordedVersion`, is the one the stream index of
    /// `stream` names there as `version`: reads and scavenge act on no other.
    /// - Throws: ``EventStoreError/corrupted(location:detail:)`` naming the position when it is not.
    static func checkIndexed(
        _ recordedStream: StreamName, _ recordedVersion: UInt64, at position: UInt64, as version: UInt64,
        of stream: StreamName
    ) throws {
        guard recordedVersion != version || recordedStream != stream else { return }
        throw EventStoreError.corrupted(
            location: "global position \(position)",
            detail: "the stream index of \"\(stream)\" names version \(version) there, but it holds "
                + "version \(recordedVersion) of stream \"\(recordedStream)\"")
    }

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

    /// How a ``fetchVisible(positions:versions:runEnds:of:visibility:names:visit:)`` ended.
    enum FetchOutcome: Equatable {
        /// Every record was fetched.
        case complete
        /// `visit` asked to stop.
        case stopped
        /// The event of the version at this index (of the versions fetched) is gone, scavenged since the stream index
        /// was read; nothing from there on was lent.
        case missing(Int)
    }

    /// Fetches the log records at `positions` (where the stream index runs ending at `runEnds` put `versions`, in
    /// read order) through borrowed reads (EventStore/LogFetch.swift), decodes each in place and lends the visible
    /// ones to `visit`, until `visit` returns false or an event is missing.
    func fetchVisible(
        positions: [UInt64], versions: [UInt64], runEnds: [UInt64], of stream: StreamName,
        visibility: StreamVisibility, names: inout StreamNameCache, visit: (BorrowedEvent) throws -> Bool
    ) async throws -> FetchOutcome {
        var outcome = FetchOutcome.complete
        try await fetchLogRecords(at: positions) { index, record in
            guard outcome == .complete else { return }
            guard let record else {
                outcome = .missing(index)
                return
            }
            let event = try EventRecord.borrowed(record.value, position: positions[index], names: &names)
            // A damaged run must not pass off another stream's event, or another version, as this one: readers
            // (and subscriptions, which resume from the versions they saw) would go wrong or round in circles.
            try Self.checkIndexed(
                event.stream, event.version, at: positions[index], as: versions[index], of: stream)
            if visibility.isVisible(event), !(try visit(event)) { outcome = .stopped }
        }
        guard case .missing(let index) = outcome else { return outcome }
        // Scavenge removes an event and its version from its run together: a run still naming it is corruption.
        let prefix = KeyLayout.streamIndexPrefix(stream)
        let key = KeyLayout.appending(runEnds[index], to: prefix)
        if let entry = try await backendCall({ try await self.backend.get(key) }),
            try StreamIndexRun.decode(entry, versionOffset: prefix.count, location: "stream index of \"\(stream)\"")
                .versions.contains(versions[index])
        {
            throw EventStoreError.corrupted(
                location: "global position \(positions[index])",
                detail: "the stream index of \"\(stream)\" names version \(versions[index]) there, but the event is missing")
        }
        return outcome
    }
}
