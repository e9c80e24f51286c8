import Foundation

/// An event store: append-only streams of events with versioned appends, reads, a gapless global log and
/// session-locked streams. `KeyValueEventStore` (module EventStoreKV) is the implementation; code written against
/// this protocol runs on every backend.
public protocol EventStoring: Sendable {
    /// The limits this store enforces.
    var limits: EventStoreLimits { get }

    /// Appends `events` to `stream` atomically, if its version meets `expectedVersion`.
    ///
    /// Re-sending the same events (same ids, same order) after a success returns the original result and writes
    /// nothing; so does re-sending a prefix of a committed batch. This holds while the events are stored: scavenge
    /// forgets the ids of the events it removes, so a re-send after that appends them again (or throws
    /// ``EventStoreError/duplicateEventID(_:stream:version:)`` if only part of the batch was removed), as in KurrentDB.
    /// - Throws: ``EventStoreError/wrongExpectedVersion(stream:expected:actual:)``,
    ///   ``EventStoreError/duplicateEventID(_:stream:version:)``, ``EventStoreError/streamLocked(stream:holder:leaseExpiresAt:)``
    ///   when a session holds the stream, and input errors. Nothing is written when it throws, except when the
    ///   outcome is unknown: ``EventStoreError/ioFailure(operation:path:errno:)`` (the events were written to the
    ///   write-ahead log but writing or syncing it failed, so they may be in the store after reopening) and a
    ///   replicated backend that could not learn the outcome of a commit it sent (``EventStoreError/backend(_:)``
    ///   says it "may have committed"). Then re-send the same events (same ids), which is idempotent, to find out:
    ///   after reopening, in the case of `ioFailure`. ``EventStoreError/storeFailed(reason:)`` means nothing was
    ///   written: the store had failed before the append was written.
    ///
    /// Cancellation: a cancelled task's append throws `CancellationError` and writes nothing until it is handed to
    /// the backend (queued for the write-ahead log, or sent); from then on it runs to its outcome, so a caller never
    /// gets `CancellationError` for an append that may have been written.
    func append(_ events: [EventData], to stream: StreamName, expectedVersion: ExpectedVersion) async throws
        -> AppendResult

    /// Appends to several streams atomically: every part is written, or none is.
    /// - Returns: one result per part, in order.
    func append(_ appends: [StreamAppend]) async throws -> [AppendResult]

    /// Up to `limit` events of `stream`, starting at `start`, in `direction` order. A missing stream reads as empty.
    ///
    /// The versions returned follow one another, but for those maxAge hides. A read racing a scavenge that removes
    /// versions it was about to return stops before them: it returns fewer than `limit` events, a consecutive part of
    /// the stream as it was, and the stream may go on. A later read (from the next version, or from the start) sees
    /// the stream as it is: readers skip the versions scavenged, which retention hid already.
    func read(_ stream: StreamName, from start: ReadStart, direction: ReadDirection, limit: Int) async throws
        -> [RecordedEvent]

    /// Visits up to `limit` events of `stream`, starting at `start`, in `direction` order, lending each in place:
    /// the same events ``read(_:from:direction:limit:)`` returns, without a copy of each payload. `visit` returns
    /// false to stop early. A missing stream visits nothing. A read racing a scavenge stops as the array read does.
    /// - Returns: the number of events visited.
    @discardableResult
    func read(
        _ stream: StreamName, from start: ReadStart, direction: ReadDirection, limit: Int,
        visiting visit: (BorrowedEvent) throws -> Bool
    ) async throws -> Int

    /// The stream's current version: the version of its last event, 0 if it has none.
    func version(of stream: StreamName) async throws -> UInt64

    /// Up to `limit` events of the global log, from `position` (inclusive; positions start at 1), in order.
    func readAll(from position: UInt64, limit: Int) async throws -> [RecordedEvent]

    /// Visits up to `limit` events of the global log from `position`, in order, lending each in place: the same
    /// events ``readAll(from:limit:)`` returns, without a copy of each payload. `visit` returns false to stop early.
    /// - Returns: the number of events visited.
    @discardableResult
    func readAll(from position: UInt64, limit: Int, visiting visit: (BorrowedEvent) throws -> Bool) async throws -> Int

    /// The position of the last committed event, 0 if there is none.
    func lastPosition() async throws -> UInt64

    /// Opens a session with exclusive write access to `stream`.
    ///
    /// Waits up to `openTimeout` for another session's lease to end. The lease lasts `sessionTimeout` (positive, at
    /// most 100 years); every append through the session and every ``StreamSession/renew()`` extends it. A lease
    /// also ends with the store that holds it where no other holder can be alive: in memory, with the store; on the
    /// page file, with the writable open of the directory that took it (after a close or a crash the next writable
    /// open finds the stream free, whatever the timeout; a read-only open still sees it until it expires); on etcd it
    /// lasts until it expires, since other processes may share the cluster.
    /// - Throws: ``EventStoreError/streamLocked(stream:holder:leaseExpiresAt:)`` when the wait times out;
    ///   ``EventStoreError/streamDeleted(_:)`` for a hard-deleted stream, which no session could ever append to;
    ///   ``EventStoreError/invalidArgument(_:)`` for a timeout out of range, or for ``StreamName/deletedStreams``,
    ///   which the store appends to with every deletion.
    func openSession(on stream: StreamName, sessionTimeout: Duration, openTimeout: Duration) async throws
        -> any StreamSession

    // MARK: Consumers of the global log (subscriptions, checkpoints, indexed reads)

    /// A doorbell for live readers: yields after commits that may have added events to the global log, starting
    /// with the first commit after the call returns. Rings carry no data and may be merged, so a reader re-reads the
    /// log from where it stopped on each ring. Finishes when the store closes; cancelling the consumer ends it.
    /// Subscriptions (``subscribeToAll(from:filter:bufferSize:)``) are built on it.
    func logNotifications() async throws -> AsyncThrowingStream<Void, any Error>

    /// Up to `limit` events of streams in `category` (the part of a stream name before its first `-`; empty for a
    /// name that starts with `-`), from global `position` (inclusive), in position order. Served by an index written with each append: the cost is
    /// O(log n + k) for k events returned, independent of the rest of the log.
    func readCategory(_ category: String, from position: UInt64, limit: Int) async throws -> [RecordedEvent]

    /// Up to `limit` events of type `type`, from global `position` (inclusive), in position order. Served by an index
    /// written with each append: O(log n + k) for k events returned.
    func readEvents(ofType type: String, from position: UInt64, limit: Int) async throws -> [RecordedEvent]

    /// Up to `limit` existing streams whose names start with `prefix`, in name order, starting after `after`.
    /// Deleted streams are not listed.
    func listStreams(prefix: String, after: StreamName?, limit: Int) async throws -> [StreamSummary]

    /// The last position the named consumer stored, or nil if it never stored one.
    func checkpoint(of consumer: String) async throws -> UInt64?

    /// Stores `position` as the named consumer's checkpoint: on restart it resumes after that position. A position
    /// past the log's last is refused (``EventStoreError/invalidArgument(_:)``).
    func saveCheckpoint(_ position: UInt64, for consumer: String) async throws

    // MARK: Retention (metadata and deletion)

    /// The retention rules of `stream` (empty if none were set) and their version: how many times they were set
    /// (0 if never), for a read-modify-write with ``setMetadata(_:for:expectedVersion:)``.
    func versionedMetadata(of stream: StreamName) async throws -> VersionedStreamMetadata

    /// Sets the retention rules of `stream` if their version meets `expectedVersion`; stream reads honour them at
    /// once. Empty metadata removes every limit. Each change counts one version, as each write to a KurrentDB
    /// metadata stream does: `.noStream` (or `.exact(0)`) expects metadata never set, `.streamExists` metadata set
    /// at least once, and `.any` nothing. A soft delete that removes `truncateBefore` counts one version too.
    /// - Returns: the metadata's new version.
    /// - Throws: ``EventStoreError/wrongExpectedMetadataVersion(stream:expected:actual:)`` when the version differs
    ///   (nothing is written), ``EventStoreError/streamLocked(stream:holder:leaseExpiresAt:)`` while a session holds
    ///   the stream, ``EventStoreError/streamDeleted(_:)`` for a hard-deleted stream.
    @discardableResult
    func setMetadata(_ metadata: StreamMetadata, for stream: StreamName, expectedVersion: ExpectedVersion)
        async throws -> UInt64

    /// Deletes `stream` if its version meets `expectedVersion`, and records the deletion as a ``StreamDeletion``
    /// event in ``StreamName/deletedStreams``.
    /// - Returns: the global position of that deletion event.
    ///
    /// A stream exists while ``version(of:)`` is above 0, even when retention hides all its events (truncateBefore
    /// past its end, or every event past maxAge), as in KurrentDB: such a stream can be soft-deleted, and an append
    /// after the deletion continues its versions.
    /// - Throws: ``EventStoreError/streamNotFound(_:)`` for a soft delete of a stream at version 0 (never written to,
    ///   or soft-deleted and not written to since), ``EventStoreError/streamDeleted(_:)`` if it was hard-deleted
    ///   already, and the append errors for expected versions and session locks.
    func delete(_ stream: StreamName, expectedVersion: ExpectedVersion, mode: DeletionMode) async throws -> UInt64
}

extension EventStoring {
    /// The retention rules of `stream` (empty if none were set).
    public func metadata(of stream: StreamName) async throws -> StreamMetadata {
        try await versionedMetadata(of: stream).metadata
    }

    /// Sets the retention rules of `stream` whatever their version (``ExpectedVersion/any``); stream reads honour
    /// them at once. Empty metadata removes every limit. See ``setMetadata(_:for:expectedVersion:)``.
    /// - Returns: the metadata's new version.
    @discardableResult
    public func setMetadata(_ metadata: StreamMetadata, for stream: StreamName) async throws -> UInt64 {
        try await setMetadata(metadata, for: stream, expectedVersion: .any)
    }

    /// Events a visiting read fetches per call of the array-returning read, in the default implementations.
    private static var visitingChunk: Int { 1_024 }

    /// Visits the events ``read(_:from:direction:limit:)`` returns, fetched in chunks and lent one by one. Stores
    /// that can lend events in place (KeyValueEventStore) replace this.
    @discardableResult
    public func read(
        _ stream: StreamName, from start: ReadStart, direction: ReadDirection, limit: Int,
        visiting visit: (BorrowedEvent) throws -> Bool
    ) async throws -> Int {
        try await lendInChunks(limit: limit, visiting: visit) { count, after in
            guard let after else { return try await read(stream, from: start, direction: direction, limit: count) }
            switch direction {
            case .forward:
                guard after.version < .max else { return nil }
                return try await read(stream, from: .version(after.version + 1), direction: direction, limit: count)
            case .backward:
                guard after.version > 1 else { return nil }
                return try await read(stream, from: .version(after.version - 1), direction: direction, limit: count)
            }
        }
    }

    /// Visits the events ``readAll(from:limit:)`` returns, fetched in chunks and lent one by one. Stores that can
    /// lend events in place (KeyValueEventStore) replace this.
    @discardableResult
    public func readAll(from position: UInt64, limit: Int, visiting visit: (BorrowedEvent) throws -> Bool)
        async throws -> Int
    {
        try await lendInChunks(limit: limit, visiting: visit) { count, after in
            guard let after else { return try await readAll(from: position, limit: count) }
            guard after.position < .max else { return nil }
            return try await readAll(from: after.position + 1, limit: count)
        }
    }

    /// Lends the events `fetch` returns, chunk by chunk, until `limit` events were lent, a chunk comes back short
    /// (the end), or `visit` returns false. `fetch` gets how many events to fetch and the last event lent (nil for
    /// the first chunk), and returns nil when nothing can follow that event. Returns how many were lent.
    private func lendInChunks(
        limit: Int, visiting visit: (BorrowedEvent) throws -> Bool,
        fetch: (_ count: Int, _ after: RecordedEvent?) async throws -> [RecordedEvent]?
    ) async throws -> Int {
        guard limit >= 0 else { throw EventStoreError.invalidArgument("limit must not be negative, got \(limit)") }
        var visited = 0
        var last: RecordedEvent?
        while visited < limit {
            try Task.checkCancellation()
            let requested = min(limit - visited, Self.visitingChunk)
            guard let chunk = try await fetch(requested, last) else { return visited }
            for event in chunk {
                visited += 1
                guard try BorrowedEvent.lend(event, to: visit) else { return visited }
            }
            guard chunk.count == requested, let end = chunk.last else { return visited }
            last = end
        }
        return visited
    }

    /// Every event of `stream` from `start`, oldest first.
    public func read(_ stream: StreamName, from start: ReadStart = .start) async throws -> [RecordedEvent] {
        try await read(stream, from: start, direction: .forward, limit: .max)
    }

    /// Up to `limit` events of `stream` from `start`, oldest first.
    public func read(_ stream: StreamName, from start: ReadStart = .start, limit: Int) async throws
        -> [RecordedEvent]
    {
        try await read(stream, from: start, direction: .forward, limit: limit)
    }

    /// Up to `limit` events of `stream`, newest first, from `start` (the end by default).
    public func readBackward(_ stream: StreamName, from start: ReadStart = .end, limit: Int = .max) async throws
        -> [RecordedEvent]
    {
        try await read(stream, from: start, direction: .backward, limit: limit)
    }

    /// Appends one event to `stream`.
    public func append(_ event: EventData, to stream: StreamName, expectedVersion: ExpectedVersion) async throws
        -> AppendResult
    {
        try await append([event], to: stream, expectedVersion: expectedVersion)
    }
}

/// Exclusive write access to one stream, held through a lease in the store. Other writers, with or without a
/// session, get ``EventStoreError/streamLocked(stream:holder:leaseExpiresAt:)`` until it is closed or expires: their
/// appends, deletions and metadata changes alike. On the page file the lease also ends with the writable open of the
/// store that took it (see ``EventStoring/openSession(on:sessionTimeout:openTimeout:)``).
public protocol StreamSession: Sendable {
    /// The session's unique id.
    var id: UUID { get }
    /// The stream it holds.
    var stream: StreamName { get }

    /// Appends through the session. The transaction itself checks that this session still holds the lease, so an
    /// expired session can never write; the append also renews the lease.
    /// - Throws: ``EventStoreError/sessionExpired(stream:sessionID:)`` once the lease is lost,
    ///   ``EventStoreError/sessionClosed(stream:sessionID:)`` after ``close()``.
    func append(_ events: [EventData], expectedVersion: ExpectedVersion) async throws -> AppendResult

    /// Appends atomically to the session's stream and to other streams: every part is written, or none is.
    ///
    /// The session's stream must be one of the parts; the transaction checks that this session still holds its
    /// lease and renews it. The other parts behave as in ``EventStoring/append(_:)``: a stream held by another
    /// session is refused. This is how an effect on other streams commits together with a record of it.
    /// - Returns: one result per part, in order.
    /// - Throws: ``EventStoreError/sessionExpired(stream:sessionID:)`` once the lease is lost,
    ///   ``EventStoreError/invalidArgument(_:)`` if the session's stream is not among the parts, and every error
    ///   ``EventStoring/append(_:)`` throws. Nothing is written when it throws, except when the outcome is unknown
    ///   (``EventStoreError/ioFailure(operation:path:errno:)``, ``EventStoreError/backend(_:)``), as for
    ///   ``EventStoring/append(_:)``: re-send the same events (same ids), which is idempotent, to find out.
    func append(_ appends: [StreamAppend]) async throws -> [AppendResult]

    /// Extends the lease by the session timeout from now.
    /// - Throws: ``EventStoreError/sessionExpired(stream:sessionID:)`` if it had already ended,
    ///   ``EventStoreError/sessionClosed(stream:sessionID:)`` after ``close()``.
    func renew() async throws

    /// Stores `position` as the named consumer's checkpoint, in a transaction that checks this session still holds
    /// its lease, and renews it: a holder whose lease ran out can never move the checkpoint. Runs of a consumer that
    /// must not overlap hold a session for it and save their checkpoints this way
    /// (``CheckpointedProjection/Exclusivity/exclusive(lease:)``).
    /// - Throws: ``EventStoreError/sessionExpired(stream:sessionID:)`` once the lease is lost,
    ///   ``EventStoreError/sessionClosed(stream:sessionID:)`` after ``close()``, and the errors of
    ///   ``EventStoring/saveCheckpoint(_:for:)``.
    func saveCheckpoint(_ position: UInt64, for consumer: String) async throws

    /// When the lease ends unless renewed, by the store's clock (`KeyValueEventStore`'s `clock`): the expiry it
    /// stores with the lease, and reports to other writers in ``EventStoreError/streamLocked(stream:holder:leaseExpiresAt:)``.
    func leaseExpiresAt() async -> Date

    /// Whether ``leaseExpiresAt()`` has passed, by the store's clock: compare here rather than with `Date()`, which
    /// is another clock when the store was given its own.
    func hasExpired() async -> Bool

    /// Releases the lock at once, also when the calling task is cancelled. Closing twice is harmless; after a close
    /// that threw (the backend failed), closing again tries the release again.
    func close() async throws
}
