// KeyValueEventStore: the event store built only on the key-value contract.
//
// Invariants (checked by the conformance suite on every backend):
// - One append (single- or multi-stream) is exactly one key-value transaction, built by `KeyValueStore.update`
//   from reads of the global head, the stream heads, the leases and the event-id index. Serializable isolation of
//   `update` makes the read-check-write atomic: a failed append writes nothing.
// - Global positions are assigned inside that transaction from the global head, so they are gapless (1, 2, 3, ...)
//   and in commit order. Stream versions likewise come from the stream head: contiguous from 1.
// - Every event is written once, under its global position (`L`); the stream index (`S`) and the event-id index
//   (`I`) hold only positions. A stream read is an index range scan plus log range scans for runs of
//   consecutive positions and a sorted batch get for the rest (LogFetch.swift): O(log n + k).
// - A session's lease lives in the store as a TTL key. Every append checks the lease inside its transaction:
//   a session append requires the lease to be its own and live; any other append requires it to be absent.
// - The same transaction refuses a hard-deleted stream, checks a soft-deleted one as version 0 while continuing its
//   versions, and writes the category and event-type index entries of each event (Consumers/ConsumerKeys.swift).
// - Stream reads hide what deletion and metadata hide (Retention/StreamVisibility.swift) and tolerate events that
//   scavenge removed; readAll simply skips scavenged positions. A stream read never skips a version in the middle:
//   one that finds a version scavenged after lending earlier ones ends there (see `readStream`).
// - Reads decode each event in place from the bytes the backend lends (borrowed scan and batch get, BorrowedEntry):
//   positions come from the lent keys and index values, and only the payload is copied out of the backend.

import EventStore
import Foundation

/// An event store on any ``KeyValueStore`` backend.
public final class KeyValueEventStore: EventStoring {
    /// The key-value backend holding the events.
    public let backend: any KeyValueStore
    /// The limits this store enforces.
    public let limits: EventStoreLimits
    /// How this process names itself in session leases (shown to writers who find a stream locked).
    public let holderName: String
    /// How many events a read fetches per round trip to the backend.
    public let readBatchSize: Int
    /// The wall clock this store stamps events with (`recordedAt`), ages them by (stream metadata's maxAge) and
    /// dates its sessions' leases by (``StreamSession/leaseExpiresAt()``).
    public let clock: @Sendable () -> Date
    /// Appends and events written through this instance, for ``metrics()``.
    let counters = EventStoreCounters()

    /// The longest event type name accepted, in UTF-8 bytes. A backend whose keys are shorter accepts less: the
    /// page file on 4 KiB pages takes types of up to 965 bytes (its event-type index key holds the type), and
    /// refuses longer ones with ``EventStoreError/invalidEventType(_:reason:)`` as it does types over this.
    public static let maximumEventTypeLength = 1024

    /// The longest event type this store's backend can index: ``maximumEventTypeLength``, or less when the backend's
    /// keys are shorter.
    let typeLengthLimit: Int

    /// Creates an event store on `backend`.
    /// - Parameters:
    ///   - holderName: how sessions of this store name their holder; defaults to the pid and host name.
    ///   - readBatchSize: events fetched per backend round trip while reading, from 1 to 65,536 (values outside are
    ///     taken as the nearest of those).
    ///   - clock: the wall clock for `recordedAt` and maxAge; the system clock unless replaced (e.g. in tests). An
    ///     append or deletion whose reading (or its session's lease expiry) is not a number or lies about 292,000
    ///     years or more from 1970, beyond what a record stores, is refused with
    ///     ``EventStoreError/invalidArgument(_:)``.
    /// The largest `readBatchSize`: reads reserve room for a batch up front.
    static let maximumReadBatchSize = 1 << 16

    public init(
        backend: any KeyValueStore, limits: EventStoreLimits = EventStoreLimits(), holderName: String? = nil,
        readBatchSize: Int = 4_096, clock: @escaping @Sendable () -> Date = { Date() }
    ) {
        self.clock = clock
        self.backend = backend
        self.limits = limits
        self.holderName =
            holderName ?? "pid \(ProcessInfo.processInfo.processIdentifier) on \(ProcessInfo.processInfo.hostName)"
        self.readBatchSize = min(max(1, readBatchSize), Self.maximumReadBatchSize)
        let indexKeyOverhead = KeyLayout.secondaryIndex(.eventType, "", position: 0).count
        typeLengthLimit = min(
            Self.maximumEventTypeLength,
            (backend as? PageFileKeyValueStore).map { $0.maximumKeyLength - indexKeyOverhead } ?? .max)
    }

    /// An event store held in memory, for tests and ephemeral use.
    public static func inMemory(limits: EventStoreLimits = EventStoreLimits()) -> KeyValueEventStore {
        KeyValueEventStore(backend: InMemoryKeyValueStore(), limits: limits)
    }

    /// Closes the backend.
    public func close() async throws {
        try await backend.close()
    }

    // MARK: Appending

    public func append(_ events: [EventData], to stream: StreamName, expectedVersion: ExpectedVersion) async throws
        -> AppendResult
    {
        let results = try await append([StreamAppend(stream: stream, expectedVersion: expectedVersion, events: events)])
        return results[0]
    }

    public func append(_ appends: [StreamAppend]) async throws -> [AppendResult] {
        try await commit(appends, session: nil)
    }

    /// What a session append proves: the lease it must still hold, and how to renew it.
    struct SessionClaim: Sendable {
        var id: UUID
        /// The stream the session holds; other parts of a session's multi-stream append must be unlocked.
        var stream: StreamName
        var holder: String
        var timeout: Duration
    }

    /// Validates and commits `appends` in one key-value transaction.
    func commit(_ appends: [StreamAppend], session: SessionClaim?) async throws -> [AppendResult] {
        guard !appends.isEmpty else { throw EventStoreError.invalidArgument("an append needs at least one stream") }
        let partBytes = try validate(appends)
        if let session, !appends.contains(where: { $0.stream == session.stream }) {
            throw EventStoreError.invalidArgument(
                "a session's append must include its own stream \"\(session.stream)\"")
        }
        let prepared = PreparedRecords(appends)
        let clock = self.clock
        let leaseExpiry = session.map { clock().addingTimeInterval($0.timeout.timeInterval) }
        do {
            let outcome = try await backend.update { context in
                try await Self.buildTransaction(
                    appends, prepared: prepared, partBytes: partBytes, session: session, leaseExpiry: leaseExpiry,
                    clock: clock, context: context)
            }
            if outcome.revision != nil, outcome.value.written.events > 0 {
                counters.record(events: outcome.value.written.events, bytes: outcome.value.written.bytes)
            }
            return outcome.value.results
        } catch let error as KeyValueStoreError {
            throw Self.translate(error)
        }
    }

    /// Checks `appends` against the limits and for repeats; returns the bytes (``EventData/size``) of each part's
    /// events.
    private func validate(_ appends: [StreamAppend]) throws -> [Int] {
        // Duplicates need two streams or two events: a single-event append (the common case) builds no sets, and
        // ids in strictly increasing order (default ids are time-ordered) are distinct without hashing them.
        let checkStreams = appends.count > 1
        let checkIDs = (checkStreams || appends[0].events.count > 1) && !Self.idsIncrease(appends)
        var streams = Set<StreamName>()
        var ids = Set<UUID>()
        var partBytes = [Int](repeating: 0, count: appends.count)
        for (partIndex, part) in appends.enumerated() {
            guard !checkStreams || streams.insert(part.stream).inserted else {
                throw EventStoreError.invalidArgument("stream \"\(part.stream)\" appears twice in one append")
            }
            // By index: `for event in` would copy each event out of the array, retaining and releasing its fields.
            for index in part.events.indices {
                let size = part.events[index].size
                partBytes[partIndex] += size
                let typeLength = part.events[index].type.utf8.count
                if typeLength == 0 || typeLength > typeLengthLimit || size > limits.maximumEventSize
                    || !part.events[index].metadata.properties.isEmpty
                    || part.events[index].data.count > Self.maximumFieldLength
                {
                    try check(part.events[index], size: size)
                }
                guard !checkIDs || ids.insert(part.events[index].id).inserted else {
                    throw EventStoreError.invalidArgument("event id \(part.events[index].id) appears twice in one append")
                }
            }
        }
        return partBytes
    }

    /// Refuses an event with an empty or too long type, over the size limit, or with fields the record format
    /// cannot store. `size` is its ``EventData/size``.
    private func check(_ event: EventData, size: Int) throws {
        if event.type.isEmpty {
            throw EventStoreError.invalidEventType(event.type, reason: "an event type must not be empty")
        }
        if event.type.utf8.count > typeLengthLimit {
            throw EventStoreError.invalidEventType(
                String(event.type.prefix(64)),
                reason: "an event type must be at most \(typeLengthLimit) UTF-8 bytes"
                    + (typeLengthLimit < Self.maximumEventTypeLength ? " on this backend" : ""))
        }
        if size > limits.maximumEventSize {
            throw EventStoreError.eventTooLarge(eventID: event.id, size: size, limit: limits.maximumEventSize)
        }
        if !event.metadata.properties.isEmpty || event.data.count > Self.maximumFieldLength {
            try Self.checkFieldLengths(event)
        }
    }

    /// The record format stores a payload and a property value with a 32-bit length (RecordCodec.swift): the limit
    /// for each, whatever `maximumEventSize` allows.
    private static let maximumFieldLength = Int(UInt32.max)

    /// Refuses what the record format cannot store: a property key over 65,535 UTF-8 bytes (a 16-bit length), a
    /// payload or property value over 4 GiB - 1 (a 32-bit length).
    private static func checkFieldLengths(_ event: EventData) throws {
        if event.data.count > maximumFieldLength {
            throw EventStoreError.eventTooLarge(eventID: event.id, size: event.size, limit: maximumFieldLength)
        }
        for (key, value) in event.metadata.properties {
            if key.utf8.count > Int(UInt16.max) {
                throw EventStoreError.invalidArgument(
                    "metadata property key \"\(key.prefix(64))…\" of event \(event.id) is \(key.utf8.count) UTF-8 bytes; "
                        + "at most \(UInt16.max) are allowed")
            }
            if value.utf8.count > maximumFieldLength {
                throw EventStoreError.eventTooLarge(eventID: event.id, size: event.size, limit: maximumFieldLength)
            }
        }
    }

    /// Whether the event ids of `appends`, in order, strictly increase in byte order (so no two are equal).
    private static func idsIncrease(_ appends: [StreamAppend]) -> Bool {
        var previous: (UInt64, UInt64)?
        for part in appends {
            for event in part.events {
                let id = withUnsafeBytes(of: event.id.uuid) { raw in
                    (UInt64(bigEndian: raw.loadUnaligned(as: UInt64.self)),
                     UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
                }
                if let previous, !(previous < id) { return false }
                previous = id
            }
        }
        return true
    }

    private static func buildTransaction(
        _ appends: [StreamAppend], prepared: PreparedRecords, partBytes: [Int], session: SessionClaim?,
        leaseExpiry: Date?, clock: @Sendable () -> Date, context: any KeyValueReadContext
    ) async throws -> (transaction: KeyValueTransaction, value: AppendOutcome) {
        // One batch read for everything the checks need: heads, leases and every event id. The writes below reuse
        // these keys instead of building them again.
        var keys: [Key] = []
        keys.reserveCapacity(1 + 2 * appends.count + appends.reduce(0) { $0 + $1.events.count })
        keys.append(KeyLayout.globalHead)
        for part in appends {
            keys.append(KeyLayout.streamHead(part.stream))
            keys.append(KeyLayout.lease(part.stream))
        }
        for part in appends { for event in part.events { keys.append(KeyLayout.eventID(event.id)) } }
        let entries = try await context.get(keys)
        // The clock is read here, after the read that saw every earlier commit: commits are stamped in the order
        // they are made (in the writer section of one process; on etcd, after the commits this attempt saw), so a
        // stream's and the log's recordedAt never go backwards while the clock does not.
        let micros = try EventRecord.microseconds(clock(), of: "the store's clock reading")

        let headPosition = try entries[0].map { try PositionValue.decode($0.value, location: "the global head") } ?? 0
        var position = headPosition
        var writes: [KeyWrite] = []
        writes.reserveCapacity(1 + 2 * appends.count + 5 * (keys.count - 1 - 2 * appends.count))
        var results: [AppendResult] = []
        // What the metrics count: the events of parts written now, not of idempotent re-sends.
        var written = (events: 0, bytes: 0)
        var idOffset = 1 + 2 * appends.count
        for (index, part) in appends.enumerated() {
            let head = try entries[1 + 2 * index].map { try StreamHead.decode($0.value, stream: part.stream) }
            if head?.state == .hardDeleted { throw EventStoreError.streamDeleted(part.stream) }
            let current = head?.version ?? 0
            // A soft-deleted stream meets expectations as if it did not exist; its versions continue from the end.
            let visible = head?.visibleVersion ?? 0
            let claim = session.flatMap { $0.stream == part.stream ? $0 : nil }
            try checkLease(entries[2 + 2 * index], stream: part.stream, session: claim)
            let idRange = idOffset..<(idOffset + part.events.count)
            let idEntries = entries[idRange]
            idOffset += part.events.count

            // Activity renews the session's lease, in the same transaction that proves it is held: an idempotent
            // re-send too, since the session reports its lease extended by every append.
            if let session = claim, let leaseExpiry {
                let lease = LeaseRecord(sessionID: session.id, expiresAt: leaseExpiry, holder: session.holder)
                writes.append(.put(keys[2 + 2 * index], try lease.encoded(), ttl: session.timeout))
            }
            if idEntries.contains(where: { $0 != nil }) {
                results.append(
                    try await idempotentResult(
                        part, idEntries: Array(idEntries), visible: visible, hiddenThrough: head?.hiddenThrough ?? 0,
                        context: context))
                continue
            }
            guard part.expectedVersion.isSatisfied(byVersion: visible) else {
                throw EventStoreError.wrongExpectedVersion(
                    stream: part.stream, expected: part.expectedVersion, actual: visible)
            }
            try Self.checkRoom(after: current, for: part.events.count, in: "stream head of \"\(part.stream)\"")
            try Self.checkRoom(after: position, for: part.events.count, in: "the global head")
            written.events += part.events.count
            written.bytes += partBytes[index]
            var version = current
            let first = position + 1
            appendEventWrites(
                part, records: prepared.records(ofPart: index, firstVersion: version + 1, recordedAtMicroseconds: micros),
                idKeys: keys[idRange],
                version: &version, position: &position, to: &writes)
            if !part.events.isEmpty {
                writes.append(
                    .put(
                        keys[1 + 2 * index],
                        StreamHead(version: version, lastPosition: position, hiddenThrough: head?.hiddenThrough ?? 0)
                            .encoded()))
            }
            // An empty append changes nothing: it reports the version it was checked against.
            results.append(
                AppendResult(version: part.events.isEmpty ? visible : version, positions: first..<(position + 1)))
        }
        if position > headPosition {
            writes.append(.put(KeyLayout.globalHead, PositionValue.encode(position)))
        }
        return (KeyValueTransaction(writes: writes), AppendOutcome(results: results, written: written))
    }

    /// An append's results, and the events and bytes it wrote (none for idempotent re-sends).
    private struct AppendOutcome: Sendable {
        var results: [AppendResult]
        var written: (events: Int, bytes: Int)
    }

    /// Refuses `count` more events after version or position `last` when they would reach the last UInt64, which
    /// no store reaches: only a damaged head says so, and the arithmetic that follows must not trap over it.
    static func checkRoom(after last: UInt64, for count: Int, in location: @autoclosure () -> String) throws {
        guard UInt64(count) < UInt64.max - last else {
            throw EventStoreError.corrupted(
                location: location(), detail: "\(last) leaves no room for \(count) more events")
        }
    }

    /// Appends the writes that record `part`'s events after `version` and `position` (advanced past them): the log
    /// records, the stream index run, the event-id index and the category and type index runs. Writes are grouped by
    /// key space, each group in key order (the event ids in event order, which is key order for default, time-ordered
    /// ids), so a backend storing ordered keys (the page file's B+tree) puts each run of them into one leaf without
    /// descending the tree again. Key prefixes are built once per part (and per run of one event type), the event-id
    /// keys are `idKeys`, the ones the batch read looked up, and the indexes share one position value per event.
    /// `records` are the part's log records, their versions already set.
    private static func appendEventWrites(
        _ part: StreamAppend, records: [[UInt8]], idKeys: ArraySlice<Key>, version: inout UInt64,
        position: inout UInt64, to writes: inout [KeyWrite]
    ) {
        let (firstVersion, firstPosition) = (version + 1, position + 1)
        let events = part.events
        let positionValues = (0..<UInt64(events.count)).map { PositionValue.encode(firstPosition + $0) }
        for index in events.indices {
            writes.append(.put(KeyLayout.log(firstPosition + UInt64(index)), records[index]))
        }
        // One stream index run for the part (StreamIndexRun.swift).
        if !events.isEmpty {
            let count = UInt64(events.count)
            writes.append(
                .put(
                    KeyLayout.streamIndex(part.stream, version: firstVersion + count - 1),
                    StreamIndexRun.value(lastPosition: firstPosition + count - 1, count: events.count)))
        }
        // The event-id keys the batch read looked up, in event order.
        for (index, key) in idKeys.enumerated() {
            writes.append(.put(key, positionValues[index]))
        }
        // One category run for the part, one type run per stretch of events of one type (ConsumerKeys.swift).
        if !events.isEmpty {
            let lastPosition = firstPosition + UInt64(events.count - 1)
            writes.append(
                .put(
                    KeyLayout.secondaryIndex(.category, part.stream.category, position: lastPosition),
                    IndexRun.encode(count: events.count)))
        }
        var runStart = 0
        // Types are keyed by their UTF-8 bytes: String's == would join two canonically equivalent spellings (NFC and
        // NFD "Café") into one run filed under the second one's bytes.
        for index in events.indices
        where index + 1 == events.count || !events[index + 1].type.hasSameUTF8(as: events[index].type) {
            writes.append(
                .put(
                    KeyLayout.secondaryIndex(.eventType, events[index].type, position: firstPosition + UInt64(index)),
                    IndexRun.encode(count: index - runStart + 1)))
            runStart = index + 1
        }
        version += UInt64(events.count)
        position += UInt64(events.count)
    }

    static func checkLease(_ entry: KeyValueEntry?, stream: StreamName, session: SessionClaim?) throws {
        if let session {
            guard let entry, try LeaseRecord.decode(entry.value, stream: stream).sessionID == session.id else {
                throw EventStoreError.sessionExpired(stream: stream, sessionID: session.id)
            }
        } else if let entry {
            let lease = try LeaseRecord.decode(entry.value, stream: stream)
            throw EventStoreError.streamLocked(stream: stream, holder: lease.holder, leaseExpiresAt: lease.expiresAt)
        }
    }

    /// Some event ids of `part` are already recorded. That is an idempotent retry (KurrentDB's semantics) when the
    /// ids are exactly the events at consecutive versions of this stream, starting where the original append
    /// started; the original result is returned and nothing is written. Anything else is a duplicate.
    private static func idempotentResult(
        _ part: StreamAppend, idEntries: [KeyValueEntry?], visible: UInt64, hiddenThrough: UInt64,
        context: any KeyValueReadContext
    ) async throws -> AppendResult {
        let positions = try idEntries.map { entry in
            try entry.map { try PositionValue.decode($0.value, location: "event-id index") }
        }
        guard let firstPosition = positions[0] else {
            // A new event followed by recorded ones: name the first recorded one.
            let (offset, position) = positions.enumerated().first { $0.element != nil }.map { ($0.offset, $0.element ?? 0) } ?? (0, 0)
            let identity = try await recordIdentity(at: position, context: context)
            throw EventStoreError.duplicateEventID(
                part.events[offset].id, stream: (try? StreamName.stored(identity.stream)) ?? part.stream,
                version: identity.version)
        }
        // The batch's positions must fit the log: a damaged event-id entry near UInt64.max is corruption, not a trap.
        guard firstPosition <= UInt64.max - UInt64(positions.count) else {
            throw EventStoreError.corrupted(
                location: "event-id index entry of \(part.events[0].id)",
                detail: "position \(firstPosition) leaves no room for a batch of \(positions.count)")
        }
        let first = try await recordIdentity(at: firstPosition, context: context)
        let recordedStream = (try? StreamName.stored(first.stream)) ?? part.stream
        guard first.stream.utf8.elementsEqual(part.stream.rawValue.utf8) else {
            throw EventStoreError.duplicateEventID(part.events[0].id, stream: recordedStream, version: first.version)
        }
        // The retry must state the same expectation the original append met. That append was checked against the
        // stream's visible version: 0 if it recreated a soft-deleted stream (it started right after the versions a
        // deletion hid), otherwise the version before its first event. Right after the last deletion's point it
        // was a recreation; after it, not; before it, the head (which keeps only the last deletion's point) cannot
        // tell whether an earlier deletion was there, so such a retry may state either expectation.
        let startedAt = first.version - 1
        let met: Bool
        if startedAt == hiddenThrough {
            met = part.expectedVersion.isSatisfied(byVersion: 0)
        } else if startedAt > hiddenThrough {
            met = part.expectedVersion.isSatisfied(byVersion: startedAt)
        } else {
            met = part.expectedVersion.isSatisfied(byVersion: 0) || part.expectedVersion.isSatisfied(byVersion: startedAt)
        }
        guard met else {
            // An expectation the stream meets now is no conflict: the recorded id is what refuses the append.
            if part.expectedVersion.isSatisfied(byVersion: visible) {
                throw EventStoreError.duplicateEventID(part.events[0].id, stream: recordedStream, version: first.version)
            }
            throw EventStoreError.wrongExpectedVersion(
                stream: part.stream, expected: part.expectedVersion, actual: visible)
        }
        // Every event must be the one recorded at the next version, at the next position.
        for (offset, position) in positions.enumerated() {
            guard let position, position == firstPosition + UInt64(offset) else {
                throw EventStoreError.duplicateEventID(part.events[0].id, stream: recordedStream, version: first.version)
            }
        }
        // And each recorded event must be this stream's, at the next version (consecutive positions can belong to
        // two appends, of other streams).
        let later = (1..<UInt64(positions.count)).map { firstPosition + $0 }
        for (offset, entry) in try await context.get(later.map(KeyLayout.log)).enumerated() {
            guard let entry else {
                throw EventStoreError.corrupted(
                    location: "global position \(later[offset])", detail: "the event-id index points to a missing event")
            }
            let recorded = try EventRecord.identity(entry.value, position: later[offset])
            guard recorded.stream.utf8.elementsEqual(part.stream.rawValue.utf8),
                recorded.version == first.version + UInt64(offset) + 1
            else {
                throw EventStoreError.duplicateEventID(part.events[0].id, stream: recordedStream, version: first.version)
            }
        }
        let count = UInt64(positions.count)
        return AppendResult(version: first.version + count - 1, positions: firstPosition..<(firstPosition + count))
    }

    private static func recordIdentity(at position: UInt64, context: any KeyValueReadContext) async throws
        -> (id: UUID, stream: String, version: UInt64)
    {
        guard let entry = try await context.get(KeyLayout.log(position)) else {
            throw EventStoreError.corrupted(
                location: "global position \(position)", detail: "the event-id index points to a missing event")
        }
        return try EventRecord.identity(entry.value, position: position)
    }

    /// A key-value contract error as the event store reports it (also for the packages built on the store). A key,
    /// value or transaction larger than the backend takes (etcd's --max-request-bytes and --max-txn-ops) wrote
    /// nothing: it is the request's fault, an `invalidArgument`, not a backend failure whose outcome is unknown.
    package static func translate(_ error: KeyValueStoreError) -> EventStoreError {
        switch error {
        case .closed: .storeClosed
        case .tooLarge, .transactionTooLarge: .invalidArgument(error.description)
        default: .backend(error.description)
        }
    }

    // MARK: Reading

    /// The most events a read reserves room for up front; a longer read grows its result as it goes.
    static let largestReservation: UInt64 = 1 << 16

    public func version(of stream: StreamName) async throws -> UInt64 {
        try await head(of: stream)?.visibleVersion ?? 0
    }

    /// The last version appended to `stream`, whether or not readers still see it: unlike ``version(of:)``, a deleted
    /// stream keeps the version it reached. 0 if the stream never had an event. For the packages built on the store
    /// (snapshots tell a deleted version from one never written).
    package func lastWrittenVersion(of stream: StreamName) async throws -> UInt64 {
        try await head(of: stream)?.version ?? 0
    }

    /// The stored head of `stream`, or nil if it never had an event.
    private func head(of stream: StreamName) async throws -> StreamHead? {
        guard let entry = try await backendCall({ try await self.backend.get(KeyLayout.streamHead(stream)) }) else {
            return nil
        }
        return try StreamHead.decode(entry.value, stream: stream)
    }

    public func lastPosition() async throws -> UInt64 {
        guard let entry = try await backendCall({ try await self.backend.get(KeyLayout.globalHead) }) else { return 0 }
        return try PositionValue.decode(entry.value, location: "the global head")
    }

    public func read(_ stream: StreamName, from start: ReadStart, direction: ReadDirection, limit: Int) async throws
        -> [RecordedEvent]
    {
        var events: [RecordedEvent] = []
        _ = try await readStream(
            stream, from: start, direction: direction, limit: limit,
            // Sized once from the visible versions (at most), so a long read does not grow the result by doubling.
            expecting: { events.reserveCapacity($0) },
            visiting: { event in
                events.append(event.copied())
                return true
            })
        return events
    }

    @discardableResult
    public func read(
        _ stream: StreamName, from start: ReadStart, direction: ReadDirection, limit: Int,
        visiting visit: (BorrowedEvent) throws -> Bool
    ) async throws -> Int {
        try await readStream(stream, from: start, direction: direction, limit: limit, expecting: { _ in }, visiting: visit)
    }

    /// Lends the visible events of `stream` in the read's range to `visit`, after telling `expecting` how many there
    /// can be at most. Returns how many were lent.
    ///
    /// The versions it lends follow one another (but for those maxAge hides). A version found missing, scavenged
    /// since the read computed what is visible, ends the read if it lent anything already: what it lent is then a
    /// consecutive part of the stream as it was, and a later read sees the stream as it is. Before anything is lent,
    /// the read starts at the oldest version still stored; if it finds none in its range, or one goes missing, it
    /// recomputes what is visible, and starts over if the stream moved on.
    private func readStream(
        _ stream: StreamName, from start: ReadStart, direction: ReadDirection, limit: Int,
        expecting: (Int) -> Void, visiting visit: (BorrowedEvent) throws -> Bool
    ) async throws -> Int {
        guard limit >= 0 else { throw EventStoreError.invalidArgument("limit must not be negative, got \(limit)") }
        guard limit > 0 else { return 0 }
        // Versions hidden by deletion or metadata are never read, nor versions appended after the head the limits
        // were computed from.
        guard var visibility = try await visibility(of: stream) else { return 0 }
        guard var next = Self.startVersion(of: visibility, from: start, direction: direction) else {
            expecting(0)
            return 0
        }
        expecting(Self.reservation(visibility, from: next, direction: direction, limit: limit))
        var names = StreamNameCache()
        var lent = 0
        while lent < limit {
            try Task.checkCancellation()
            // Under maxAge many versions may be hidden: whole batches, not one version per round trip for a small
            // limit.
            let chunk = visibility.notBefore == nil ? min(limit - lent, readBatchSize) : readBatchSize
            let bounds = visibility.firstVersion...visibility.lastVersion
            var batch = try await streamIndexBatch(
                of: stream, from: next, direction: direction, within: bounds, limit: chunk)
            // Nothing lent yet: start at the oldest version still stored (scavenge removes a stream's oldest first).
            if lent == 0, let first = batch.versions.first, first != next { next = first }
            let count = Self.consecutive(batch.versions, from: next, direction: direction)
            // The version the stream index holds after a hole, if the batch has one: only the versions before it
            // are fetched (trimmed in place, so a batch without a hole, the usual case, is not copied).
            let found = count < batch.versions.count ? batch.versions[count] : nil
            if found != nil {
                batch.versions.removeSubrange(count...)
                batch.positions.removeSubrange(count...)
                batch.runEnds.removeSubrange(count...)
            }
            let outcome = try await fetchVisible(
                positions: batch.positions, versions: batch.versions, runEnds: batch.runEnds, of: stream,
                visibility: visibility, names: &names
            ) { event in
                lent += 1
                return try visit(event) && lent < limit
            }
            if outcome == .stopped { return lent }
            let done = if case .missing(let index) = outcome { index } else { count }
            // The version after the ones done: the next batch's first, a hole, or past the read's range.
            guard let after = Self.version(next, movedBy: done, direction: direction, within: bounds) else {
                return lent
            }
            if done == chunk {
                next = after
                continue
            }
            // A hole (or the index ends early): stop at it once anything was lent, so that no version is skipped.
            guard lent == 0 else { return lent }
            let missing = outcome != .complete
            guard let resumed = try await resume(
                stream, from: start, direction: direction, visibility: visibility, hole: after, missing: missing,
                found: found)
            else { return 0 }
            (visibility, next) = resumed
        }
        return lent
    }

    /// Where a read of `stream` that has lent nothing goes on from a hole at version `hole` (its event `missing`,
    /// or absent from the stream index, which next holds `found`), or nil if it ends. If the stream moved on since
    /// `visibility` was computed, the read starts over on the stream as it is; otherwise it goes on past the hole,
    /// which scavenge made before the read began.
    private func resume(
        _ stream: StreamName, from start: ReadStart, direction: ReadDirection, visibility: StreamVisibility,
        hole: UInt64, missing: Bool, found: UInt64?
    ) async throws -> (visibility: StreamVisibility, next: UInt64)? {
        guard let fresh = try await self.visibility(of: stream) else { return nil }
        if fresh.firstVersion != visibility.firstVersion || fresh.lastVersion != visibility.lastVersion {
            return Self.startVersion(of: fresh, from: start, direction: direction).map { (fresh, $0) }
        }
        let bounds = fresh.firstVersion...fresh.lastVersion
        let next = missing ? Self.version(hole, movedBy: 1, direction: direction, within: bounds) : found
        return next.map { (fresh, $0) }
    }

    /// Where a read of `visibility` from `start` in `direction` begins, or nil if its range is empty.
    private static func startVersion(of visibility: StreamVisibility, from start: ReadStart, direction: ReadDirection)
        -> UInt64?
    {
        let (lowest, highest) = (visibility.firstVersion, visibility.lastVersion)
        let next: UInt64
        switch (direction, start) {
        case (.forward, .start): next = lowest
        case (.forward, .version(let version)): next = max(version, lowest)
        case (.forward, .end): return nil
        case (.backward, .end): next = highest
        case (.backward, .start): next = min(1, highest)
        case (.backward, .version(let version)): next = min(version, highest)
        }
        guard lowest <= highest, next >= lowest, next <= highest else { return nil }
        return next
    }

    /// How many events a read of `visibility` from `next` reserves room for.
    ///
    /// The versions in range bound the visible events from above, but maxAge hides events one by one and scavenged
    /// versions leave no event: the reservation is capped, and skipped under maxAge, so that a range of versions
    /// long gone does not reserve room (or trap reserving it) for events that do not exist.
    private static func reservation(
        _ visibility: StreamVisibility, from next: UInt64, direction: ReadDirection, limit: Int
    ) -> Int {
        guard visibility.notBefore == nil else { return 0 }
        let range = direction == .forward ? visibility.lastVersion - next + 1 : next - visibility.firstVersion + 1
        return Int(min(UInt64(limit), range, largestReservation))
    }

    /// How many of `versions` follow one another from `next` on in `direction`, from the first.
    private static func consecutive(_ versions: [UInt64], from next: UInt64, direction: ReadDirection) -> Int {
        var expected = next
        for (index, version) in versions.enumerated() {
            guard version == expected else { return index }
            expected = direction == .forward ? expected &+ 1 : expected &- 1
        }
        return versions.count
    }

    /// The version `steps` versions from `version` in `direction`, or nil if that lies outside `bounds`.
    private static func version(
        _ version: UInt64, movedBy steps: Int, direction: ReadDirection, within bounds: ClosedRange<UInt64>
    ) -> UInt64? {
        let distance = UInt64(steps)
        switch direction {
        case .forward:
            guard bounds.upperBound - version >= distance else { return nil }
            return version + distance
        case .backward:
            guard version - bounds.lowerBound >= distance else { return nil }
            return version - distance
        }
    }

    /// Up to `limit` versions of `stream` from `next` on in `direction`, all within `bounds`, with the global positions
    /// their stream index runs give and each run's last version (its key), in read order. Fewer than `limit` means
    /// the stream index holds no more in that direction.
    private func streamIndexBatch(
        of stream: StreamName, from next: UInt64, direction: ReadDirection, within bounds: ClosedRange<UInt64>,
        limit: Int
    ) async throws -> (versions: [UInt64], positions: [UInt64], runEnds: [UInt64]) {
        let prefix = KeyLayout.streamIndexPrefix(stream)
        let ceiling: Key? = bounds.upperBound == .max
            ? Key.successor(ofPrefix: prefix) : KeyLayout.appending(bounds.upperBound + 1, to: prefix)
        // The runs first (few, for batched appends), then their versions, outside any closure.
        var runs: [StreamIndexRun] = []
        switch direction {
        case .forward:
            // The first run whose key is at or after `next` holds `next` (or starts after it).
            let range = KeyRange(from: KeyLayout.appending(next, to: prefix), to: ceiling)
            runs = try await streamIndexRuns(range, direction: .forward, versions: limit, from: next, of: stream)
        case .backward:
            // Scan down from the run that holds `next`: its key may lie above `next`.
            var upper: Key? = next == .max ? Key.successor(ofPrefix: prefix) : KeyLayout.appending(next + 1, to: prefix)
            let holding = try await streamIndexRuns(
                KeyRange(from: KeyLayout.appending(next, to: prefix), to: ceiling), direction: .forward, versions: 1,
                from: next, of: stream)
            if let run = holding.first, run.firstVersion <= next {
                upper = run.lastVersion == .max
                    ? Key.successor(ofPrefix: prefix) : KeyLayout.appending(run.lastVersion + 1, to: prefix)
            }
            let range = KeyRange(from: KeyLayout.appending(bounds.lowerBound, to: prefix), to: upper)
            runs = try await streamIndexRuns(range, direction: .backward, versions: limit, from: next, of: stream)
        }
        var versions: [UInt64] = []
        var positions: [UInt64] = []
        var runEnds: [UInt64] = []
        versions.reserveCapacity(limit)
        positions.reserveCapacity(limit)
        runEnds.reserveCapacity(limit)
        var previous: StreamIndexRun?
        for run in runs {
            if let previous { try Self.checkAdjacent(previous, run, direction: direction, of: stream) }
            previous = run
            let span: ClosedRange<UInt64>
            switch direction {
            case .forward:
                guard run.lastVersion >= max(run.firstVersion, next) else { continue }
                span = max(run.firstVersion, next)...run.lastVersion
            case .backward:
                let (bottom, top) = (max(run.firstVersion, bounds.lowerBound), min(run.lastVersion, next))
                guard top >= bottom else { continue }
                span = bottom...top
            }
            let take = min(UInt64(limit - versions.count), UInt64(span.count))
            if direction == .forward {
                for version in span.lowerBound..<(span.lowerBound + take) {
                    versions.append(version)
                    positions.append(run.position(of: version))
                }
            } else {
                for version in stride(from: span.upperBound, to: span.upperBound - take, by: -1) {
                    versions.append(version)
                    positions.append(run.position(of: version))
                }
            }
            runEnds.append(contentsOf: repeatElement(run.lastVersion, count: Int(take)))
            if versions.count == limit { break }
        }
        return (versions, positions, runEnds)
    }

    /// Throws `corrupted` unless `run` continues `previous`, the run before it in one scan in `direction`. Versions
    /// missing between two runs were never scavenged (scavenge removes a stream's oldest events only, so it shortens
    /// or removes the first runs), and two runs naming one version contradict each other: a read must not skip the
    /// one or return the other twice.
    private static func checkAdjacent(
        _ previous: StreamIndexRun, _ run: StreamIndexRun, direction: ReadDirection, of stream: StreamName
    ) throws {
        let (lower, upper) = direction == .forward ? (previous, run) : (run, previous)
        guard lower.lastVersion < upper.firstVersion else {
            throw EventStoreError.corrupted(
                location: "stream index of \"\(stream)\"",
                detail: "the runs ending at versions \(lower.lastVersion) and \(upper.lastVersion) overlap")
        }
        guard upper.firstVersion - lower.lastVersion == 1 else {
            throw EventStoreError.corrupted(
                location: "stream index of \"\(stream)\"",
                detail: "versions \(lower.lastVersion + 1)...\(upper.firstVersion - 1) are missing between two runs; "
                    + "scavenge removes only a stream's oldest events")
        }
    }

    /// The stream index runs of `stream` in `range`, in scan order, decoded in place from one borrowed scan, until
    /// they hold `versions` versions counted from `next` on in the scan's direction (or the range ends).
    private func streamIndexRuns(
        _ range: KeyRange, direction: ScanDirection, versions wanted: Int, from next: UInt64, of stream: StreamName
    ) async throws -> [StreamIndexRun] {
        let versionOffset = KeyLayout.streamIndexPrefix(stream).count
        var runs: [StreamIndexRun] = []
        var counted = 0
        _ = try await backendCall {
            try await self.backend.scan(range, direction: direction, limit: wanted) { entry in
                let run = try StreamIndexRun.decode(
                    key: entry.key, value: entry.value, versionOffset: versionOffset,
                    location: "stream index of \"\(stream)\"")
                runs.append(run)
                // The versions it holds from `next` on. A backward scan may meet the run it positioned on shortened
                // past `next` since (a scavenge between the two scans): it holds none of them then.
                let (low, high) = direction == .forward
                    ? (max(run.firstVersion, next), run.lastVersion) : (run.firstVersion, min(run.lastVersion, next))
                if high >= low { counted += Int(clamping: high - low + 1) }
                return counted < wanted
            }
        }
        return runs
    }

    public func readAll(from position: UInt64, limit: Int) async throws -> [RecordedEvent] {
        var events: [RecordedEvent] = []
        _ = try await readLog(
            from: position, limit: limit,
            expecting: { events.reserveCapacity($0) },
            visiting: { event in
                events.append(event.copied())
                return true
            })
        return events
    }

    @discardableResult
    public func readAll(from position: UInt64, limit: Int, visiting visit: (BorrowedEvent) throws -> Bool)
        async throws -> Int
    {
        try await readLog(from: position, limit: limit, expecting: nil, visiting: visit)
    }

    /// Lends the global log's events from `position` to `visit`, decoded straight from the bytes the backend lends.
    /// A long read first tells `expecting` how many events there are up to the global head. Returns how many were lent.
    private func readLog(
        from position: UInt64, limit: Int, expecting: ((Int) -> Void)?, visiting visit: (BorrowedEvent) throws -> Bool
    ) async throws -> Int {
        guard limit >= 0 else { throw EventStoreError.invalidArgument("limit must not be negative, got \(limit)") }
        let end = Key.successor(ofPrefix: KeyLayout.logPrefix)
        var next = max(position, 1)
        var names = StreamNameCache()
        if let expecting, limit > readBatchSize {
            // A long read: size the result once from the global head instead of growing it by doubling (each growth
            // moves every event read so far). Appends racing the read only make it grow again.
            let head = try await lastPosition()
            // Scavenged positions hold no event: capped, as for stream reads.
            if head >= next { expecting(Int(min(UInt64(limit), head - next + 1, Self.largestReservation))) }
        }
        var lent = 0
        var stopped = false
        while lent < limit, !stopped {
            try Task.checkCancellation()
            let chunk = min(limit - lent, readBatchSize)
            var last: UInt64?
            let scanned = try await backendCall {
                try await self.backend.scan(KeyRange(from: KeyLayout.log(next), to: end), direction: .forward, limit: chunk) {
                    entry in
                    guard let position = KeyLayout.position(fromLogKey: entry.key) else {
                        throw EventStoreError.corrupted(
                            location: "global log", detail: "malformed log key \(Array(entry.key))")
                    }
                    last = position
                    lent += 1
                    guard try visit(try EventRecord.borrowed(entry.value, position: position, names: &names)) else {
                        stopped = true
                        return false
                    }
                    return true
                }
            }
            guard let last, scanned == chunk, last < .max else { break }
            next = last + 1
        }
        return lent
    }

    /// Runs a backend call, translating contract errors into ``EventStoreError``.
    func backendCall<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as KeyValueStoreError {
            throw Self.translate(error)
        }
    }

    // MARK: Sessions

    public func openSession(on stream: StreamName, sessionTimeout: Duration, openTimeout: Duration) async throws
        -> any StreamSession
    {
        try await KeyValueStreamSession.open(
            store: self, stream: stream, sessionTimeout: sessionTimeout, openTimeout: openTimeout)
    }
}

extension Duration {
    /// The duration in seconds, as a TimeInterval.
    var timeInterval: TimeInterval {
        // A ratio of durations, not `components`, which traps for durations past Int64 seconds.
        self / .seconds(1)
    }
}
