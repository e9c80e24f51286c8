import Foundation

/// An event-sourced aggregate: a state built by applying its stream's events in order, starting from `init()`.
public protocol Aggregate: Sendable {
    /// The state before any event.
    init()
    /// Folds one event into the state. Events of types the aggregate does not know should be ignored.
    mutating func apply(_ event: any DomainEvent)
}

/// An aggregate's state together with the stream version it reflects.
public struct LoadedAggregate<State: Aggregate>: Sendable {
    /// The state after applying every event up to ``version``.
    public var state: State
    /// The stream version the state reflects, which a save expects. ``AggregateRepository/load(_:)`` gives the
    /// stream's version at the load, even when retention hides its last events (a stream truncated past its end, or
    /// whose events all aged out, folds into the initial state at the stream's version);
    /// ``AggregateRepository/replay(_:onto:upTo:)`` gives the version of the last event it applied. 0 for a stream
    /// with no events.
    public var version: UInt64
    /// How many events were replayed to build the state (for checking snapshot use).
    public var replayedEvents: Int
    /// The version of the first event folded into ``state``, directly or through the snapshot it started from; nil
    /// when no event was, or when not known. A load of a stream whose events retention all hides gives ``version`` +
    /// 1: the state folds none of them, and the events a save appends (or a replay folds) start there. A snapshot of the
    /// state records it, so that a snapshot of a state that still folds events retention has hidden since is never
    /// used.
    public var firstVersion: UInt64?
    /// The first version after ``firstVersion``, up to ``version``, whose event ``state`` does not fold; nil when it
    /// folds every one of them (or folds none). maxAge hides each event by its own `recordedAt`, so an event recorded
    /// before the one ahead of it (a wall clock that stepped back, or on etcd two nodes whose clocks disagree) can be
    /// hidden between visible ones while a replay passes, or hide the stream's
    /// last events so that ``version`` is raised past the last event folded. Such a state differs from a replay once
    /// the event is visible again, so a snapshot of it (which stands for every version from ``firstVersion`` to
    /// ``version``) is never taken.
    public var skippedVersion: UInt64?

    /// Creates a loaded aggregate.
    public init(
        state: State, version: UInt64, replayedEvents: Int, firstVersion: UInt64? = nil, skippedVersion: UInt64? = nil
    ) {
        self.state = state
        self.version = version
        self.replayedEvents = replayedEvents
        self.firstVersion = firstVersion
        self.skippedVersion = skippedVersion
    }

    /// Marks the versions after the last event folded, up to `version`, as not folded (retention hides them), and
    /// moves ``version`` there. A state that folds no event stays one that folds none.
    package mutating func raiseVersion(to newVersion: UInt64) {
        guard newVersion > version else { return }
        let foldsEvents = version > 0 && (firstVersion.map { $0 <= version } ?? true)
        if foldsEvents, skippedVersion == nil { skippedVersion = version + 1 }
        version = newVersion
    }
}

/// Loads aggregates by replaying their streams, and saves new events with the loaded version as the expected
/// version, so that concurrent writers cannot both decide on the same state.
public struct AggregateRepository<State: Aggregate>: Sendable {
    /// The store holding the streams.
    public let store: any EventStoring
    /// The event types the aggregate uses.
    public let registry: EventTypeRegistry
    /// How many events are read per round trip while replaying; must be positive (`replay` and `load` throw
    /// ``EventStoreError/invalidArgument(_:)`` otherwise).
    public var readBatchSize: Int

    /// Creates a repository.
    public init(store: any EventStoring, registry: EventTypeRegistry, readBatchSize: Int = 1_000) {
        self.store = store
        self.registry = registry
        self.readBatchSize = readBatchSize
    }

    /// Loads the aggregate by replaying every visible event of `stream`, at the stream's current version.
    ///
    /// The state is the fold of the events readers see at one moment, never a part of them: a read cut short by a
    /// concurrent scavenge is read on past while the stream has later versions, and if a truncation, deletion or
    /// scavenge hides events the load has folded already (the next events read do not follow the last one folded,
    /// and the stream's first visible event moved), the load starts again from the stream's new first visible event.
    /// - Throws: ``EventStoreError/replayInterrupted(stream:reason:)`` when that happened under each of
    ///   ``replayAttempts`` attempts; ``EventStoreError/codingFailed(type:reason:)`` (naming the stream and version)
    ///   or ``EventStoreError/unknownEventType(type:location:)`` for an event the registry cannot decode.
    public func load(_ stream: StreamName) async throws -> LoadedAggregate<State> {
        // The version first, then the events up to it: events retention hides at the end still count in the version
        // a save must expect, and an append racing the load is left for that save's version check to catch.
        let current = try await store.version(of: stream)
        var loaded = try await replay(
            stream, onto: LoadedAggregate(state: State(), version: 0, replayedEvents: 0), upTo: current,
            withinVersionReadBefore: true)
        loaded.raiseVersion(to: current)
        // Retention hides every event: the state folds none of them, as a snapshotting load marks it.
        if loaded.firstVersion == nil, current > 0, current < .max { loaded.firstVersion = current + 1 }
        return loaded
    }

    /// How many times a replay from the initial state starts over, in all, when a truncation, deletion or scavenge
    /// hides events it folded already.
    public static var replayAttempts: Int { 4 }

    /// Applies the events of `stream` after `loaded.version` (up to `version`, if given) to `loaded`.
    /// Snapshot-aware loading starts here from a snapshot's state.
    ///
    /// The events applied follow one another (but for those maxAge hides, which the result's
    /// ``LoadedAggregate/skippedVersion`` names), as a read returns them; a short read is read on past while the
    /// stream has later versions. If a truncation, deletion, scavenge or a retention window (maxCount, maxAge)
    /// hides events the state folds (the stream's first visible event is no longer the state's
    /// ``LoadedAggregate/firstVersion``), a replay from a state that folds nothing (version 0, or a load of a
    /// stream retention hid whole) starts again from the stream's new first visible event, up to
    /// ``replayAttempts`` times in all; a replay onto a state that folds events throws, since that state stands for
    /// events readers no longer see. That holds whether the next events read follow the state's version or not:
    /// after a soft delete and recreation, or a truncation and new appends, the stream's versions continue, so a
    /// replay checks once, after reading, that the stream's first visible event is still the state's first one: a
    /// replay onto a state that folds events whenever its first version is known, even if nothing new was folded;
    /// a replay from a state that folds nothing when it folded events past the stream's version read before it
    /// began (up to that version, what it folded is what readers saw then, and no recreation's event is among it).
    /// - Throws: ``EventStoreError/replayInterrupted(stream:reason:)`` then, and at once for a state at version v
    ///   that folds nothing when readers see an event up to v again (retention lifted since it was built);
    ///   ``EventStoreError/codingFailed(type:reason:)`` (naming the stream and version) or
    ///   ``EventStoreError/unknownEventType(type:location:)`` for an event the registry cannot decode.
    public func replay(
        _ stream: StreamName, onto loaded: LoadedAggregate<State>, upTo version: UInt64? = nil
    ) async throws -> LoadedAggregate<State> {
        try await replay(stream, onto: loaded, upTo: version, withinVersionReadBefore: false)
    }

    /// ``replay(_:onto:upTo:)``. With `withinVersionReadBefore`, `version` is no later than the stream's version read
    /// before the replay began: a stream deleted and recreated since continues its versions past it, so no event of
    /// the recreation can be folded, and a replay from the initial state skips the read that checks its start.
    package func replay(
        _ stream: StreamName, onto loaded: LoadedAggregate<State>, upTo version: UInt64?, withinVersionReadBefore: Bool
    ) async throws -> LoadedAggregate<State> {
        var attempt = 1
        // A state that folds no event (the initial one, or a load of a stream retention hid whole) folds no hidden
        // one: only what this replay folds can mix a deleted (or truncated) stream's events with later ones, and only
        // past the stream's version read before the replay began (a recreation's versions continue past it).
        let foldsNone = loaded.version == 0 || Self.foldsNothing(loaded)
        // A state at version v that folds nothing stands for "retention hid every event up to v". Once readers see
        // one of those again (retention lifted before a scavenge), no replay from it can equal theirs, and restarting
        // from it would fail the same way each time.
        if loaded.version > 0, foldsNone,
            let first = try await store.read(stream, from: .start, direction: .forward, limit: 1).first?.version,
            first <= loaded.version
        {
            throw EventStoreError.replayInterrupted(
                stream: stream,
                reason: "the state at version \(loaded.version) folds no event, but readers see version \(first) again "
                    + "(retention lifted since it was built); load the stream again")
        }
        while true {
            let readBefore: UInt64? =
                foldsNone && !withinVersionReadBefore ? try await store.version(of: stream) : nil
            if let replayed = try await replayUnlessHidden(stream, onto: loaded, upTo: version) {
                // The reads only see a hole where versions stop following one another; a stream whose versions go
                // on past the hidden ones (recreated after a soft delete, appended to after a truncation) has none.
                // So the first event readers see must still be the state's first one: otherwise the state folds
                // events readers no longer see (with new ones folded onto them, or not), or a replay from the
                // initial state folded a deleted stream's first events and its recreation's next ones.
                let folded = replayed.replayedEvents > loaded.replayedEvents
                let moved: Bool
                if !foldsNone, folded || loaded.firstVersion != nil {
                    moved = try await startMoved(of: stream, since: loaded)
                } else if foldsNone, folded, let readBefore, replayed.version > readBefore {
                    moved = try await startMoved(of: stream, since: replayed)
                } else {
                    moved = false
                }
                guard moved else { return replayed }
            }
            guard foldsNone else {
                throw EventStoreError.replayInterrupted(
                    stream: stream,
                    reason: "events the state at version \(loaded.version) folds are hidden (truncated, deleted or "
                        + "scavenged since it was built); load the stream again")
            }
            guard attempt < Self.replayAttempts else {
                throw EventStoreError.replayInterrupted(
                    stream: stream,
                    reason: "its first events were hidden (truncated, deleted or scavenged) under each of "
                        + "\(Self.replayAttempts) replays")
            }
            attempt += 1
        }
    }

    /// ``replay(_:onto:upTo:)`` once: nil, rather than a state folded across the hole, when a truncation, deletion
    /// or scavenge hid events the state folds while it was replayed. For the snapshotting repository, which starts
    /// again from another snapshot then.
    package func replayUnlessHidden(
        _ stream: StreamName, onto loaded: LoadedAggregate<State>, upTo version: UInt64?
    ) async throws -> LoadedAggregate<State>? {
        guard readBatchSize > 0 else {
            throw EventStoreError.invalidArgument("readBatchSize must be positive, got \(readBatchSize)")
        }
        var result = loaded
        while true {
            try Task.checkCancellation()
            if let version, result.version >= version { break }
            // No version follows the last UInt64 (only a caller's or damaged state says a stream is there).
            if result.version == .max { break }
            var limit = readBatchSize
            if let version { limit = Int(min(UInt64(limit), version - result.version)) }
            let events = try await store.read(
                stream, from: .version(result.version + 1), direction: .forward, limit: limit)
            // Events that do not follow the last one folded: maxAge hides events one by one, but if the stream's
            // start moved (a truncation, deletion or scavenge since the last read), the state folds events readers
            // no longer see.
            if result.version > 0, let first = events.first, first.version != result.version + 1,
                try await startMoved(of: stream, since: result)
            {
                return nil
            }
            for event in events {
                // Versions hidden by a deletion or retention are skipped by reads, so a read can return events past
                // `version`; never apply them.
                if let version, event.version > version { return result }
                result.state.apply(try decode(event))
                if result.version == 0 || Self.foldsNothing(result) {
                    result.firstVersion = event.version
                } else if event.version != result.version + 1, result.skippedVersion == nil {
                    // maxAge hid the versions in between (deletion and truncation hide a prefix, which the check
                    // above rules out for a batch's first event): the state does not fold them.
                    result.skippedVersion = result.version + 1
                }
                result.version = event.version
                result.replayedEvents += 1
            }
            if events.count == limit { continue }
            // A short read is the end only if the stream has no later version: one racing a scavenge stops short of
            // the versions it removes (EventStoring.read), and the next read goes on from there.
            let end = try await store.version(of: stream)
            let last = events.last?.version ?? result.version
            if !events.isEmpty, last < .max, end > last { continue }
            // Versions after the last one folded that no read returns: hidden by retention at the stream's end (the
            // state stands), or by a deletion or truncation since the replay began (it does not). A stream whose
            // version fell below the last one folded was soft-deleted since: if this replay folded any of its
            // events, its start has moved too, and the state is a part of what readers saw.
            let behind = result.version < (version.map { min($0, end) } ?? end)
            let deletedSince = end < result.version && result.replayedEvents > loaded.replayedEvents
            if result.version > 0, behind || deletedSince, try await startMoved(of: stream, since: result) {
                return nil
            }
            break
        }
        return result
    }

    /// Whether the first event readers see of `stream` is no longer the first one `loaded` folds: a truncation,
    /// deletion or scavenge hid events it folds. For a state whose first version is not known, only whether every
    /// event it folds is hidden.
    private func startMoved(of stream: StreamName, since loaded: LoadedAggregate<State>) async throws -> Bool {
        // A state that folds no event cannot fold one retention has hidden since.
        if Self.foldsNothing(loaded) { return false }
        let first = try await store.read(stream, from: .start, direction: .forward, limit: 1).first?.version
        guard let first else { return true }
        guard let folded = loaded.firstVersion else { return first > loaded.version }
        return first != folded
    }

    /// Whether `loaded` is marked as folding none of the events up to its version (``LoadedAggregate/firstVersion``
    /// past its version: retention hid them all).
    private static func foldsNothing(_ loaded: LoadedAggregate<State>) -> Bool {
        guard let first = loaded.firstVersion else { return false }
        return first > loaded.version
    }

    /// `event` decoded; a payload that does not decode throws an error naming the stream and version.
    private func decode(_ event: RecordedEvent) throws -> any DomainEvent {
        do {
            return try registry.decode(event)
        } catch EventStoreError.codingFailed(let type, let reason) {
            throw EventStoreError.codingFailed(
                type: type, reason: "\(EventTypeRegistry.location(of: event)): \(reason)")
        }
    }

    /// Appends `events` to `stream`, expecting the stream to be at `loaded.version`.
    /// - Throws: ``EventStoreError/wrongExpectedVersion(stream:expected:actual:)`` if another writer got there first;
    ///   ``EventStoreError/unknownEventType(type:location:)`` or ``EventStoreError/codingFailed(type:reason:)``
    ///   (before writing anything) for an event the registry could not decode from its stored bytes, which would
    ///   make every later load of the stream fail.
    @discardableResult
    public func save(
        _ events: [any DomainEvent], to stream: StreamName, loadedAt version: UInt64,
        metadata: EventMetadata = EventMetadata()
    ) async throws -> AppendResult {
        try await saveDecoded(events, to: stream, loadedAt: version, metadata: metadata).result
    }

    /// Saves `events` as ``save(_:to:loadedAt:metadata:)`` does, returning them as a replay decodes them too.
    private func saveDecoded(
        _ events: [any DomainEvent], to stream: StreamName, loadedAt version: UInt64, metadata: EventMetadata
    ) async throws -> (result: AppendResult, replayed: [any DomainEvent]) {
        let data = try events.map { try registry.encode(any: $0, metadata: metadata) }
        let replayed = try registry.decodeAsReplayed(data, appendingTo: stream, after: version)
        return (try await store.append(data, to: stream, expectedVersion: .exact(version)), replayed)
    }

    /// Loads the aggregate, asks `decide` for new events and saves them; on a version conflict it reloads and asks
    /// again, up to `maxAttempts` times in all.
    /// - Returns: the append's result and the state after the new events, folded from them as a replay decodes
    ///   them (so it is the state a load now builds).
    /// - Throws: what ``save(_:to:loadedAt:metadata:)`` throws (`wrongExpectedVersion` only after the last attempt),
    ///   and whatever `decide` throws.
    @discardableResult
    public func execute(
        on stream: StreamName, maxAttempts: Int = 5,
        _ decide: (State) throws -> [any DomainEvent]
    ) async throws -> (result: AppendResult, state: State) {
        guard maxAttempts > 0 else { throw EventStoreError.invalidArgument("maxAttempts must be at least 1") }
        var attempt = 0
        while true {
            attempt += 1
            let loaded = try await load(stream)
            let events = try decide(loaded.state)
            do {
                let saved = try await saveDecoded(
                    events, to: stream, loadedAt: loaded.version, metadata: EventMetadata())
                var state = loaded.state
                for event in saved.replayed { state.apply(event) }
                return (saved.result, state)
            } catch EventStoreError.wrongExpectedVersion where attempt < maxAttempts {
                continue
            }
        }
    }
}
