// Scavenge: removes from storage the events that deletion and stream metadata hide, online, while appends and reads
// continue.
//
// Invariants:
// - Only hidden events are removed: versions below the stream's visible floor (deletion, truncateBefore, maxCount)
//   and the leading run of events older than maxAge (an expired event after an unexpired one waits: scavenge reads
//   a stream only as far as the first event it keeps). Each of these only grows as time passes and events are
//   appended, except through a metadata change, so every batch is committed on the condition that the stream's
//   metadata is still the one it was computed from; a change makes it recompute.
// - An event is removed in one transaction with everything that points to it: its log record (`L`), its version in
//   its stream index run (`S`: shortened from its front or removed), its event-id entry (`I`), and its position in
//   its category and type index runs (a run is trimmed, split or removed). Every run rewritten is rewritten on the
//   condition that it is unchanged since read. Readers never see a
//   half-removed event; they only see holes in positions, which they skip.
// - Only records the stream index names correctly are removed: a run naming a record of another stream or version
//   is reported as corruption (as reads report it), and the batch commits nothing.
// - A batch's work is proportional to the events it removes (times log n), not to the log: the category and type
//   index runs holding them are found by a bounded scan and seeks, never by scanning other streams' runs in between,
//   and a run is trimmed or split by range arithmetic on the removed positions, never by listing its own.
// - Global positions and versions of surviving events never change; stream heads (versions, tombstones) stay.
// - On a backend that reuses freed space (the page file), the deleted keys' pages become free for reuse.

import EventStore
import Foundation

/// What a scavenge did.
public struct ScavengeReport: Sendable, Hashable {
    /// How many streams were examined.
    public var streamsScanned: Int
    /// How many events were removed from storage.
    public var eventsRemoved: Int

    /// Creates a report.
    public init(streamsScanned: Int = 0, eventsRemoved: Int = 0) {
        self.streamsScanned = streamsScanned
        self.eventsRemoved = eventsRemoved
    }
}

extension KeyValueEventStore {
    /// How many events one scavenge transaction removes at most. A backend that refuses a transaction that large
    /// (etcd's --max-txn-ops, 128 by default: an event costs up to 5 operations) gets halves of it instead.
    static let scavengeBatchSize = 128

    /// Removes from storage the events hidden by deletion, truncateBefore and maxCount, and under maxAge the expired
    /// events up to the first unexpired one in version order: an expired event behind a fresher one (a writer's clock
    /// behind, or stepped back) stays, hidden from stream reads, until those before it expire too. Finding it would
    /// mean reading every maxAge stream in full. Runs online; safe to run at any time and to cancel (each batch is
    /// atomic, and a later run continues).
    @discardableResult
    public func scavenge() async throws -> ScavengeReport {
        var report = ScavengeReport()
        var range = KeyRange.prefix(KeyLayout.streamHeadPrefix)
        while true {
            try Task.checkCancellation()
            let heads = try await backendCall { try await self.backend.scan(range, direction: .forward, limit: 256) }
            guard let last = heads.last else { break }
            for entry in heads {
                let stream = try KeyLayout.stream(fromHeadKey: entry.key)
                report.streamsScanned += 1
                report.eventsRemoved += try await scavenge(stream)
            }
            if heads.count < 256 { break }
            range.lowerBound = last.key + [0]
        }
        return report
    }

    /// Removes the hidden events of one stream, batch by batch; returns how many.
    func scavenge(_ stream: StreamName) async throws -> Int {
        var removed = 0
        var batchSize = Self.scavengeBatchSize
        while true {
            try Task.checkCancellation()
            let metadataKey = KeyLayout.streamMetadata(stream)
            let entries = try await backendCall {
                try await self.backend.get([KeyLayout.streamHead(stream), metadataKey])
            }
            guard let headEntry = entries[0] else { return removed }
            let head = try StreamHead.decode(headEntry.value, stream: stream)
            let metadata = try entries[1].map { try StreamMetadataRecord.decode($0.value, stream: stream) }
            let plan = try await planBatch(stream, head: head, metadata: metadata, batchSize: batchSize)
            guard !plan.writes.isEmpty else { return removed }
            let guardCondition: KeyCondition =
                entries[1].map { .modRevision(metadataKey, equals: $0.modRevision) } ?? .absent(metadataKey)
            do {
                _ = try await backend.commit(
                    KeyValueTransaction(conditions: [guardCondition] + plan.conditions, writes: plan.writes))
                removed += plan.events
            } catch KeyValueStoreError.conditionFailed {
                continue  // the metadata or an index run changed under us: recompute
            } catch KeyValueStoreError.transactionTooLarge where batchSize > 1 {
                batchSize /= 2  // more than the backend takes at once: a smaller batch, as snapshots' deleteAll does
                continue
            } catch let error as KeyValueStoreError {
                throw Self.translate(error)
            }
            if plan.reachedVisible { return removed }
        }
    }

    private struct ScavengePlan {
        var writes: [KeyWrite] = []
        /// The index runs the writes rewrite must still be as read (another scavenge may have trimmed them).
        var conditions: [KeyCondition] = []
        var events = 0
        /// Whether the batch stopped at the first visible event (nothing more to remove).
        var reachedVisible = false
    }

    /// The deletes for the next batch of at most `batchSize` hidden events at the start of `stream`.
    private func planBatch(_ stream: StreamName, head: StreamHead, metadata: StreamMetadata?, batchSize: Int)
        async throws -> ScavengePlan
    {
        let floor: UInt64
        var notBefore: Date?
        if let visibility = StreamVisibility(head: head, metadata: metadata, now: clock()) {
            floor = visibility.firstVersion
            notBefore = visibility.notBefore
        } else {
            floor = head.version == .max ? .max : head.version + 1  // deleted: every event is hidden
        }
        let prefix = KeyLayout.streamIndexPrefix(stream)
        let location = "stream index of \"\(stream)\""
        // The stream's first runs, expanded to at most a batch of versions from the start.
        var runs: [(run: StreamIndexRun, key: Key, modRevision: UInt64)] = []
        var versions: [(version: UInt64, position: UInt64, run: Int)] = []
        _ = try await backendCall {
            try await self.backend.scan(.prefix(prefix), direction: .forward, limit: batchSize) { entry in
                let run = try StreamIndexRun.decode(
                    key: entry.key, value: entry.value, versionOffset: prefix.count, location: location)
                runs.append((run, Array(entry.key), entry.modRevision))
                for version in run.versions {
                    guard versions.count < batchSize, notBefore != nil || version < floor else { return false }
                    versions.append((version, run.position(of: version), runs.count - 1))
                }
                return versions.count < batchSize
            }
        }
        var plan = ScavengePlan()
        // Without maxAge, the versions from the floor on are visible: the list stops before them, and their records
        // are never read (a stream that hides nothing costs one index read).
        if versions.count < batchSize || versions.isEmpty { plan.reachedVisible = true }
        guard !versions.isEmpty else { return plan }
        let records = try await backendCall { try await self.backend.get(versions.map { KeyLayout.log($0.position) }) }
        var names = StreamNameCache()
        var removedFromIndexes: [Key: [UInt64]] = [:]
        /// How many versions each run loses, from its front.
        var trimmed = [UInt64](repeating: 0, count: runs.count)
        for (index, item) in versions.enumerated() {
            let run = runs[item.run]
            guard let record = records[index] else {
                // Another scavenge may have removed the event (and trimmed its run) between the scan and the get;
                // a run still naming a missing event is corruption.
                if let entry = try await backendCall({ try await self.backend.get(run.key) }),
                    try StreamIndexRun.decode(entry, versionOffset: prefix.count, location: location).versions
                        .contains(item.version)
                {
                    throw EventStoreError.corrupted(
                        location: "global position \(item.position)",
                        detail: "the \(location) names version \(item.version) there, but the event is missing")
                }
                trimmed[item.run] += 1
                continue
            }
            let event = try EventRecord.decode(record.value, position: item.position, names: &names)
            // As for reads: a damaged run must not make scavenge remove another stream's event, or another version.
            try Self.checkIndexed(event.stream, event.version, at: item.position, as: item.version, of: stream)
            let expired = notBefore.map { event.recordedAt < $0 } ?? false
            guard event.version < floor || expired else {
                plan.reachedVisible = true
                break
            }
            plan.writes += [.delete(KeyLayout.log(event.position)), .delete(KeyLayout.eventID(event.id))]
            trimmed[item.run] += 1
            removedFromIndexes[KeyLayout.secondaryIndexPrefix(.category, stream.category), default: []].append(event.position)
            removedFromIndexes[KeyLayout.secondaryIndexPrefix(.eventType, event.type), default: []].append(event.position)
            plan.events += 1
        }
        // Runs lose versions from their front only: each is removed whole or shortened, if unchanged since read.
        for (index, entry) in runs.enumerated() where trimmed[index] > 0 {
            plan.conditions.append(.modRevision(entry.key, equals: entry.modRevision))
            if trimmed[index] == entry.run.count {
                plan.writes.append(.delete(entry.key))
            } else {
                var shortened = entry.run
                shortened.count -= trimmed[index]
                plan.writes.append(.put(entry.key, shortened.value))
            }
        }
        for (prefix, positions) in removedFromIndexes {
            try await trimIndexRuns(prefix, removing: positions, into: &plan)
        }
        return plan
    }

    /// A category or type index run as scavenge read it.
    private typealias IndexRunEntry = (key: Key, positions: ClosedRange<UInt64>, modRevision: UInt64)

    /// Adds to `plan` the rewrites of the index runs under `prefix` that name any of `removed` (ascending positions
    /// of one stream's events): each such run is replaced by the runs of its remaining positions, computed from the
    /// removed ones alone (a run may name millions), on the condition that it is unchanged. Runs never span streams
    /// (ConsumerKeys.swift), so other runs are left alone.
    private func trimIndexRuns(_ prefix: Key, removing removed: [UInt64], into plan: inout ScavengePlan) async throws {
        var next = 0  // the first of `removed` not in an earlier run
        for run in try await indexRuns(prefix, holding: removed) {
            next = removed[next...].firstIndex { $0 >= run.positions.lowerBound } ?? removed.count
            let end = removed[next...].firstIndex { $0 > run.positions.upperBound } ?? removed.count
            guard next < end else { continue }  // another stream's run
            let kept = Self.remaining(of: run.positions, without: removed[next..<end])
            plan.conditions.append(.modRevision(run.key, equals: run.modRevision))
            if kept.last?.upperBound != run.positions.upperBound { plan.writes.append(.delete(run.key)) }
            plan.writes += kept.map {
                .put(KeyLayout.appending($0.upperBound, to: prefix), IndexRun.encode(count: $0.count))
            }
            next = end
        }
    }

    /// The stretches of `run` left once `removed` (ascending positions, all in `run`) are taken out.
    static func remaining(of run: ClosedRange<UInt64>, without removed: ArraySlice<UInt64>) -> [ClosedRange<UInt64>] {
        var kept: [ClosedRange<UInt64>] = []
        var start = run.lowerBound
        for position in removed {
            if position > start { kept.append(start...(position - 1)) }
            start = position &+ 1  // wraps only at the last position possible, which is then the run's last
        }
        if let last = removed.last, last < run.upperBound { kept.append(start...run.upperBound) }
        return kept
    }

    /// The index runs under `prefix` that may hold any of `removed` (ascending), in order: those a scan from the first
    /// position meets, bounded to a few runs per position so that other streams' runs in between cannot make it long
    /// (streams interleave in the log), then, for the positions beyond what it reached, a seek for the run holding
    /// each (skipping the positions that run holds). The work is proportional to `removed`, not to the log.
    private func indexRuns(_ prefix: Key, holding removed: [UInt64]) async throws -> [IndexRunEntry] {
        guard let first = removed.first, let last = removed.last else { return [] }
        var (runs, complete) = try await scanIndexRuns(prefix, from: first, through: last, limit: 2 * removed.count)
        guard !complete, let reached = runs.last?.positions.upperBound else { return runs }
        var next = removed.firstIndex { $0 > reached } ?? removed.count
        while next < removed.count {
            let (found, _) = try await scanIndexRuns(prefix, from: removed[next], through: last, limit: 1)
            guard let run = found.first else { break }  // no run at or after it: none of the rest is indexed
            runs.append(run)
            next = removed[next...].firstIndex { $0 > run.positions.upperBound } ?? removed.count
        }
        return runs
    }

    /// Up to `limit` index runs under `prefix` from the one holding (or following) position `first`, stopping before
    /// the first run past `last`; `complete` if the scan saw every run up to `last`.
    private func scanIndexRuns(_ prefix: Key, from first: UInt64, through last: UInt64, limit: Int) async throws
        -> (runs: [IndexRunEntry], complete: Bool)
    {
        var runs: [IndexRunEntry] = []
        _ = try await backendCall {
            try await self.backend.scan(
                KeyRange(from: KeyLayout.appending(first, to: prefix), to: Key.successor(ofPrefix: prefix)),
                direction: .forward, limit: limit
            ) { entry in
                let positions = try IndexRun.positions(of: entry, prefixLength: prefix.count)
                guard positions.lowerBound <= last else { return false }
                runs.append((Array(entry.key), positions, entry.modRevision))
                return true
            }
        }
        // Stopped by the limit short of `last` (not by a run past it, nor the end of the index): runs beyond it may
        // hold positions up to `last`.
        let reached = runs.last?.positions.upperBound ?? last
        return (runs, runs.count < limit || reached >= last)
    }
}
