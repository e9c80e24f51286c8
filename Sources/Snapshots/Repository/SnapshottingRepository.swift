// SnapshottingRepository: the snapshot-aware aggregate repository.
//
// Invariants:
// - Snapshots live in the collection named by the schema, so only snapshots of this state are ever decoded as it.
// - A load gives exactly the state a full replay gives: it starts from the newest snapshot at or before the wanted
//   version whose schema is readable (never a newer one) and which folded the same events a replay folds now (its
//   recorded first version is the first version readers see), and replays every event after it up to that version.
// - A snapshot is only ever made from a state built the way a load builds it: by replay, or by applying events
//   decoded from the exact bytes that were appended (so lossy encodings, such as dates in JSON, cannot make a
//   snapshot differ from a replay).
// - A snapshot is only ever made from a state that folds every version from its first to its own: one that skipped
//   an event maxAge hid (LoadedAggregate.skippedVersion) is refused, since that event may be visible again later.
// - Every snapshot write goes through SnapshotStore, one atomic transaction per snapshot; snapshot-all writes its
//   snapshots one after another, never in parallel.
// - A save whose append succeeded never throws because of its snapshot (see SavedAggregate.swift).

import EventStore
import EventStoreKV
import Foundation

/// Loads and saves aggregates like ``AggregateRepository``, but starts loads from the newest usable snapshot and
/// takes snapshots by policy.
///
/// ```swift
/// let accounts = try SnapshottingRepository<Account>(
///     events: store, registry: registry, policy: .every(100, keepingLast: 3))
/// let account = try await accounts.load(stream)            // snapshot + the events after it
/// try await accounts.save([Deposited(amount: 5)], to: stream, from: account)
/// ```
public struct SnapshottingRepository<State: Aggregate & Codable>: Sendable {
    /// The plain repository used for replaying and appending.
    public let aggregates: AggregateRepository<State>
    /// Where the snapshots are stored.
    public let snapshots: SnapshotStore
    /// How states are encoded in snapshots, and migrated from older schemas.
    public let schema: SnapshotSchema<State>
    /// When snapshots are taken automatically, and how many are kept.
    public let policy: SnapshotPolicy

    /// Creates a repository over the streams of `events`, with snapshots on the same backend.
    /// - Parameter readBatchSize: how many events are read per round trip while replaying.
    /// Snapshots are kept in the collection named by `schema`'s ``SnapshotSchema/name``.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` for a policy with an interval or retention below 1, or a
    ///   schema name that cannot name a collection.
    public init(
        events: KeyValueEventStore, registry: EventTypeRegistry, schema: SnapshotSchema<State> = SnapshotSchema(),
        policy: SnapshotPolicy = .manual, readBatchSize: Int = 1_000
    ) throws {
        guard readBatchSize >= 1 else {
            throw EventStoreError.invalidArgument("readBatchSize must be at least 1, got \(readBatchSize)")
        }
        self.aggregates = AggregateRepository(store: events, registry: registry, readBatchSize: readBatchSize)
        self.snapshots = try SnapshotStore(events: events, collection: schema.name)
        self.schema = schema
        self.policy = try policy.validated()
    }

    // MARK: Loading

    /// Loads the current state of `stream`: from its newest usable snapshot plus the events after it, or by
    /// replaying every event when `usingSnapshots` is false or no snapshot is usable.
    public func load(_ stream: StreamName, usingSnapshots: Bool = true) async throws -> LoadedAggregate<State> {
        try await load(stream, upTo: nil, usingSnapshots: usingSnapshots)
    }

    /// Loads the state of `stream` as of `version`: from the newest usable snapshot at or before `version` plus the
    /// events after it up to `version`, or by replaying the events readers see up to `version`.
    /// - Throws: ``SnapshotError/versionBeyondStream(stream:requested:streamVersion:)`` when the stream has not
    ///   reached `version`; ``SnapshotError/versionNotVisible(stream:version:)`` when `version` was deleted or is
    ///   hidden by retention.
    public func load(
        _ stream: StreamName, asOf version: UInt64, usingSnapshots: Bool = true
    ) async throws -> LoadedAggregate<State> {
        try await load(stream, upTo: version, usingSnapshots: usingSnapshots)
    }

    private func load(
        _ stream: StreamName, upTo version: UInt64?, usingSnapshots: Bool
    ) async throws -> LoadedAggregate<State> {
        // A deletion, or more retention, between choosing a snapshot and reading the stream hides events the snapshot
        // folds: the load starts again (the snapshot is no longer usable then). The last attempt replays without
        // snapshots, so that changes racing every attempt cannot keep a load from ending.
        var attempt = 1
        while true {
            let withSnapshots = usingSnapshots && attempt < Self.loadAttempts
            if let loaded = try await attemptLoad(stream, upTo: version, usingSnapshots: withSnapshots) { return loaded }
            attempt += 1
        }
    }

    /// How many attempts a load makes in all; only the last runs without snapshots.
    private static var loadAttempts: Int { 4 }

    /// One load; nil if a deletion or more retention hid events of the snapshot it started from after choosing it.
    private func attemptLoad(
        _ stream: StreamName, upTo version: UInt64?, usingSnapshots: Bool
    ) async throws -> LoadedAggregate<State>? {
        var start = LoadedAggregate(state: State(), version: 0, replayedEvents: 0)
        var snapshot: Snapshot?
        if usingSnapshots {
            snapshot = try await latestUsableSnapshot(of: stream, atOrBefore: version)
        }
        if let snapshot {
            start = LoadedAggregate(
                state: try schema.decode(snapshot), version: snapshot.version, replayedEvents: 0,
                firstVersion: snapshot.firstVersion)
        }
        // The current state reflects the stream's version, even when retention hides its last events: read it
        // first, so that a save expects it and an append racing the load is caught by that save.
        let current = version == nil ? try await snapshots.events.version(of: stream) : nil
        // A replay from a snapshot that meets a hole (events the snapshot folds hidden under it) starts the load
        // again; one from the initial state starts itself again (a bounded number of times).
        var loaded: LoadedAggregate<State>
        if snapshot == nil {
            // Up to the version read first (not an asOf version, which may lie past it), a recreation's events
            // cannot be folded: the replay need not check its start again.
            loaded = try await aggregates.replay(
                stream, onto: start, upTo: version ?? current, withinVersionReadBefore: version == nil)
        } else {
            guard let replayed = try await aggregates.replayUnlessHidden(stream, onto: start, upTo: version ?? current)
            else { return nil }
            loaded = replayed
        }
        if let snapshot {
            // A deletion or more retention since the snapshot was chosen hides events it folds, whatever was
            // appended after them: the load starts again.
            guard try await snapshots.events.firstVisibleVersion(of: stream) == snapshot.firstVersion else { return nil }
            if loaded.replayedEvents == 0 {
                guard try await streamStillReaches(snapshot.version, of: stream) else { return nil }
            }
        }
        // Events hidden at the end (maxAge, by a recordedAt older than those before them) are not folded.
        if let current { loaded.raiseVersion(to: current) }
        // A state that folds no event of a stream at version v (retention hid them all) says so with first version
        // v + 1: the events a save appends start there.
        if loaded.firstVersion == nil, loaded.version > 0, loaded.version < .max {
            loaded.firstVersion = loaded.version + 1
        }
        if let version, loaded.version < version {
            // Deleted versions count as written: they are not visible, rather than beyond the stream.
            let written = try await snapshots.events.lastWrittenVersion(of: stream)
            if written >= version { throw SnapshotError.versionNotVisible(stream: stream, version: version) }
            throw SnapshotError.versionBeyondStream(stream: stream, requested: version, streamVersion: written)
        }
        return loaded
    }

    /// The newest snapshot at or before `version` that this schema can read and that folds exactly the events a
    /// replay would: readers must still see the stream from the snapshot's first version. After a deletion and
    /// recreation, or once retention hides more of the stream's start, older snapshots fold events a replay no
    /// longer sees, and are not used.
    private func latestUsableSnapshot(of stream: StreamName, atOrBefore version: UInt64?) async throws -> Snapshot? {
        guard let firstVisible = try await snapshots.events.firstVisibleVersion(of: stream) else { return nil }
        let schema = self.schema
        let chosen = try await snapshots.latestSnapshot(of: stream, atOrBefore: version) { descriptor in
            descriptor.firstVersion == firstVisible && descriptor.version >= firstVisible
                && schema.canRead(schemaVersion: descriptor.schemaVersion)
        }
        guard let chosen else { return nil }
        // maxAge hides each event by its own recordedAt, and a wall clock that stepped back leaves an older event
        // after newer ones: an event inside the snapshot's range can then be hidden while the first is not.
        if try await snapshots.events.metadata(of: stream).maxAge != nil,
            try await !isVisibleThroughout(chosen.firstVersion...chosen.version, of: stream)
        {
            return nil
        }
        return chosen
    }

    /// Whether readers see every version in `versions` of `stream` (a visiting read of their records, nothing
    /// decoded).
    private func isVisibleThroughout(_ versions: ClosedRange<UInt64>, of stream: StreamName) async throws -> Bool {
        let span = versions.upperBound - versions.lowerBound
        guard span < UInt64(Int.max) else { return false }
        var seen = 0
        try await snapshots.events.read(
            stream, from: .version(versions.lowerBound), direction: .forward, limit: Int(span) + 1
        ) { event in
            guard event.version <= versions.upperBound else { return false }
            seen += 1
            return true
        }
        return UInt64(seen) == span + 1
    }

    /// Whether `stream` still reaches `version`, which a snapshot with no events after it was taken at: false if
    /// the stream was deleted since (its versions were written but are no longer visible).
    /// - Throws: ``EventStoreError/corrupted(location:detail:)`` if the stream never reached `version`: the snapshot
    ///   would be a state for events that do not exist.
    private func streamStillReaches(_ version: UInt64, of stream: StreamName) async throws -> Bool {
        if try await snapshots.events.version(of: stream) >= version { return true }
        let written = try await snapshots.events.lastWrittenVersion(of: stream)
        guard written >= version else {
            throw EventStoreError.corrupted(
                location: "snapshot of stream \"\(stream)\" at version \(version)",
                detail: "the snapshot is newer than its stream, which is at version \(written)")
        }
        return false
    }

    // MARK: Saving

    /// Appends `events` to `stream`, expecting it to be at `loaded.version`, and takes a snapshot of the new state
    /// if the policy calls for one. A state that cannot be snapshotted (its first version unknown, folding no event,
    /// or lacking an event maxAge hid between visible ones: ``LoadedAggregate/skippedVersion``) is saved all the
    /// same, with its snapshot reported as ``SnapshotOutcome/failed(_:)``.
    /// - Throws: ``EventStoreError/wrongExpectedVersion(stream:expected:actual:)`` if another writer got there first;
    ///   ``EventStoreError/unknownEventType(type:location:)`` (before writing anything) for an event the registry
    ///   cannot decode.
    ///   A failed snapshot does not throw; it is reported in the result.
    @discardableResult
    public func save(
        _ events: [any DomainEvent], to stream: StreamName, from loaded: LoadedAggregate<State>,
        metadata: EventMetadata = EventMetadata()
    ) async throws -> SavedAggregate<State> {
        let registry = aggregates.registry
        let data = try events.map { try registry.encode(any: $0, metadata: metadata) }
        // No stream reaches the last UInt64: a state claiming to be that far cannot take events after it.
        guard UInt64(data.count) < UInt64.max - loaded.version else {
            throw EventStoreError.wrongExpectedVersion(
                stream: stream, expected: .exact(loaded.version), actual: try await aggregates.store.version(of: stream))
        }
        // Decode the exact bytes about to be appended, as a replay will, before appending: the new state is then
        // what a load would build, and an event no replay could decode is refused before anything is written.
        let replayed = try registry.decodeAsReplayed(data, appendingTo: stream, after: loaded.version)
        let result = try await aggregates.store.append(data, to: stream, expectedVersion: .exact(loaded.version))
        var aggregate = loaded
        for event in replayed { aggregate.state.apply(event) }
        // A state that folded nothing before, of a new stream, starts with the first event appended here. (One whose
        // events retention all hid says so with a first version after its own, where these events start; one whose
        // first version is not known stays unknown, and is not snapshotted.)
        if loaded.version == 0, !replayed.isEmpty {
            aggregate.firstVersion = result.version - UInt64(replayed.count) + 1
        }
        aggregate.version = result.version
        // Due by the stream's actual versions: the append moved it from `result.version - count` to
        // `result.version`. `loaded.version` is only the visible version, 0 for a soft-deleted stream whose next
        // event is numbered after the deleted ones, and would count multiples the stream never passed.
        let appended = UInt64(replayed.count)
        let before = result.version >= appended ? result.version - appended : 0
        guard policy.isDue(from: before, to: result.version) else {
            return SavedAggregate(result: result, aggregate: aggregate, snapshot: .notDue)
        }
        do {
            try await saveSnapshot(of: aggregate, in: stream)
            return SavedAggregate(result: result, aggregate: aggregate, snapshot: .taken(version: result.version))
        } catch {
            return SavedAggregate(result: result, aggregate: aggregate, snapshot: .failed(error))
        }
    }

    /// Loads the aggregate (through snapshots), asks `decide` for new events and saves them; on a version conflict
    /// it reloads and asks again, up to `maxAttempts` times in all.
    @discardableResult
    public func execute(
        on stream: StreamName, maxAttempts: Int = 5, _ decide: (State) throws -> [any DomainEvent]
    ) async throws -> SavedAggregate<State> {
        guard maxAttempts > 0 else { throw EventStoreError.invalidArgument("maxAttempts must be at least 1") }
        var attempt = 0
        while true {
            attempt += 1
            let loaded = try await load(stream)
            let events = try decide(loaded.state)
            do {
                return try await save(events, to: stream, from: loaded)
            } catch EventStoreError.wrongExpectedVersion where attempt < maxAttempts {
                continue
            }
        }
    }

    // MARK: Taking snapshots

    /// Takes a snapshot of `stream` at `version` (its current version when nil), building the state through the
    /// newest usable snapshot before it.
    /// - Returns: the version snapshotted. With a policy that keeps the last N snapshots, a version older than N
    ///   snapshots already kept is removed again in the same transaction, as the policy says: it is not listed then.
    /// - Throws: ``SnapshotError/versionBeyondStream(stream:requested:streamVersion:)`` when the stream has not
    ///   reached `version`; ``EventStoreError/streamNotFound(_:)`` when the stream has no events;
    ///   ``SnapshotError/versionNotVisible(stream:version:)`` when `version` is not visible, retention hides every
    ///   event up to it, or maxAge hides an event between the first visible one and `version` (an event recorded
    ///   before the one ahead of it), naming that event's version: a state that lacks it would differ from a replay
    ///   once it is visible again.
    @discardableResult
    public func takeSnapshot(of stream: StreamName, at version: UInt64? = nil) async throws -> UInt64 {
        if version == 0 {
            throw EventStoreError.invalidArgument("a snapshot needs a version of at least 1; version 0 is the empty state")
        }
        let loaded = try await load(stream, upTo: version, usingSnapshots: true)
        guard loaded.version > 0 else { throw EventStoreError.streamNotFound(stream) }
        try await saveSnapshot(of: loaded, in: stream)
        return loaded.version
    }

    /// Replays `stream` once from its first visible event and takes a snapshot at every multiple of `interval`
    /// (`interval`, 2 × `interval`, ...; from the first multiple readers see, if deletion or retention hides the
    /// start), one after another. Existing snapshots at those versions are replaced; the policy's retention applies
    /// to each. If a truncation, deletion or scavenge hides events the replay folded while it runs, it starts again
    /// from the stream's new first visible event (the snapshots taken before stand for the events as they were, and
    /// are not used by loads since), up to ``AggregateRepository/replayAttempts`` times in all. If maxAge hides an
    /// event between visible ones (recorded before the one ahead of it), no snapshot is taken past it: every later
    /// state lacks that event, and would differ from a replay once it is visible again.
    /// - Returns: the versions snapshotted, in order, by the replay that completed.
    /// - Throws: ``EventStoreError/replayInterrupted(stream:reason:)`` when events were hidden under every attempt.
    @discardableResult
    public func snapshotAll(of stream: StreamName, every interval: UInt64) async throws -> [UInt64] {
        guard interval >= 1 else {
            throw EventStoreError.invalidArgument("a snapshot interval must be at least 1 event, got \(interval)")
        }
        let attempts = AggregateRepository<State>.replayAttempts
        for _ in 0..<attempts {
            if let taken = try await snapshotAllOnce(of: stream, every: interval) { return taken }
        }
        throw EventStoreError.replayInterrupted(
            stream: stream,
            reason: "its first events were hidden (truncated, deleted or scavenged) under each of \(attempts) "
                + "replays taking snapshots")
    }

    /// One replay of ``snapshotAll(of:every:)``; nil if events it folded were hidden under it.
    private func snapshotAllOnce(of stream: StreamName, every interval: UInt64) async throws -> [UInt64]? {
        let events = snapshots.events
        guard let first = try await events.read(stream, from: .start, direction: .forward, limit: 1).first else {
            return []
        }
        var loaded = LoadedAggregate(state: State(), version: 0, replayedEvents: 0)
        // The last multiple of `interval` before the first visible version; the first target is the next one.
        var target = (first.version - 1) / interval * interval
        var taken: [UInt64] = []
        while true {
            try Task.checkCancellation()
            let (next, overflow) = target.addingReportingOverflow(interval)
            guard !overflow else { break }
            target = next
            guard let replayed = try await aggregates.replayUnlessHidden(stream, onto: loaded, upTo: target) else {
                return nil
            }
            loaded = replayed
            guard loaded.version == target else {
                // Short of the target: the stream's end, unless its start moved since the pass began (a truncation
                // before the replay read anything leaves it reading only events past the target).
                let now = try await events.read(stream, from: .start, direction: .forward, limit: 1).first?.version
                if now != (loaded.firstVersion ?? first.version) { return nil }
                break
            }
            // maxAge hid a version the replay passed: this state and every later one lack its event, so none of
            // them is snapshotted.
            guard loaded.skippedVersion == nil else { break }
            do {
                try await saveSnapshot(of: loaded, in: stream)
            } catch let error as SnapshotError {
                guard case .versionNotVisible = error else { throw error }
                // A truncation since the last read hid events this state folds (the reads after it still follow
                // on): the pass starts again from the new first visible event, as a hole found by a read does.
                let now = try await events.read(stream, from: .start, direction: .forward, limit: 1).first?.version
                if now != loaded.firstVersion { return nil }
                throw error
            }
            taken.append(target)
        }
        return taken
    }

    /// Saves `loaded`'s state as the snapshot at its version, recording the first version it folds: if retention
    /// has hidden that version since the state was built, the state folds no event (retention hid them all when it
    /// was loaded), or it skipped a version between its first and its last (``LoadedAggregate/skippedVersion``:
    /// maxAge hid that event when it was replayed), nothing is saved (`versionNotVisible`); nor for a state whose
    /// first version is not known (`invalidArgument`).
    private func saveSnapshot(of loaded: LoadedAggregate<State>, in stream: StreamName) async throws {
        // Which events a state of unknown first version folds cannot be told, and the first version readers see now
        // may lie before them (a truncation lifted since): such a snapshot could stand for events it does not fold.
        guard let foldStart = loaded.firstVersion else {
            throw EventStoreError.invalidArgument(
                "the state of \"\(stream)\" at version \(loaded.version) does not say which version it folds from "
                    + "(LoadedAggregate.firstVersion is nil), so it is not snapshotted; load it through this repository")
        }
        // A state that folds no event stands for none: it is not snapshotted.
        if foldStart > loaded.version {
            throw SnapshotError.versionNotVisible(stream: stream, version: loaded.version)
        }
        // A snapshot stands for every version from its first to its own: a state that skipped one (hidden by maxAge
        // while it was replayed) would, once that event is visible again, give loads that differ from a replay.
        if let skipped = loaded.skippedVersion {
            throw SnapshotError.versionNotVisible(stream: stream, version: skipped)
        }
        try await snapshots.save(
            try schema.encode(loaded.state), schemaVersion: schema.version, of: stream, at: loaded.version,
            keepingLast: policy.retention, foldedFrom: foldStart)
    }

    // MARK: Managing snapshots

    /// Deletes the snapshot of `stream` at `version` and its index entry.
    /// - Returns: whether there was one.
    @discardableResult
    public func clearSnapshot(of stream: StreamName, at version: UInt64) async throws -> Bool {
        try await snapshots.delete(snapshotOf: stream, at: version)
    }

    /// Deletes every snapshot of `stream`.
    /// - Returns: how many were deleted.
    @discardableResult
    public func clearSnapshots(of stream: StreamName) async throws -> Int {
        try await snapshots.deleteAll(of: stream)
    }

    /// The version of the newest snapshot of `stream`, or nil if it has none.
    public func lastSnapshotVersion(of stream: StreamName) async throws -> UInt64? {
        try await snapshots.lastVersion(of: stream)
    }

    /// The versions of `stream` that have a snapshot, oldest first.
    public func snapshotVersions(of stream: StreamName) async throws -> [UInt64] {
        try await snapshots.versions(of: stream)
    }
}
