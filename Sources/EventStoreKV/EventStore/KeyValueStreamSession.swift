// A session lock on one stream, held as a TTL lease key (`K name`) in the key-value store, so that it protects the
// stream across processes and nodes. Fencing: every append through the session checks, inside its own transaction,
// that the lease is still this session's; a paused holder whose lease ran out can never write.
// The lease key lasts as long as the backend keeps TTL keys (KeyWrite.put): on the page file no longer than the
// writable open that wrote it, so a session left open by a store that closed or crashed locks nothing after reopening.

import EventStore
import Foundation

/// A ``StreamSession`` of a ``KeyValueEventStore``. Its lease expiries are by the store's
/// ``KeyValueEventStore/clock``: those it reports, those it stores, and those other writers are told in
/// ``EventStoreError/streamLocked(stream:holder:leaseExpiresAt:)``. (The backend ends the lease key after the session
/// timeout by its own clock.)
public final class KeyValueStreamSession: StreamSession {
    public let id: UUID
    public let stream: StreamName
    /// How this session names its holder to others.
    public let holder: String
    /// How long the lease lasts without activity.
    public let sessionTimeout: Duration

    private let store: KeyValueEventStore
    private struct State {
        var leaseExpiresAt: Date
        /// Set by the first `close()`: the session takes no more appends or renewals.
        var closed = false
        /// Set once a `close()` has released the lease (or found it gone); until then a later `close()` tries again.
        var released = false
    }
    private let state: Locked<State>

    private init(store: KeyValueEventStore, stream: StreamName, id: UUID, timeout: Duration, expiresAt: Date) {
        self.store = store
        self.stream = stream
        self.id = id
        self.holder = "\(store.holderName), session \(id)"
        self.sessionTimeout = timeout
        self.state = Locked(State(leaseExpiresAt: expiresAt))
    }

    private enum Attempt: Sendable {
        case acquired
        case held(LeaseRecord)
    }

    /// The longest lease a session may ask for. Expiries are kept as nanoseconds since 1970 in an Int64 (until the
    /// year 2262), so a longer one would overflow; 100 years is already "until released" (on the page file: until
    /// released or the store that holds it closes or crashes, see ``KeyWrite/put(_:_:ttl:)``).
    static let maximumTimeout = Duration.seconds(100 * 365 * 86_400)

    static func open(
        store: KeyValueEventStore, stream: StreamName, sessionTimeout: Duration, openTimeout: Duration
    ) async throws -> KeyValueStreamSession {
        // The store itself appends to `$deleted` with every deletion: a session could not keep it exclusive.
        guard stream != .deletedStreams else {
            throw EventStoreError.invalidArgument(
                "\"\(stream)\" is written by the store with every deletion, so no session can hold it")
        }
        guard sessionTimeout > .zero, sessionTimeout <= maximumTimeout else {
            throw EventStoreError.invalidArgument(
                "sessionTimeout must be positive and at most 100 years, got \(sessionTimeout)")
        }
        guard openTimeout >= .zero else {
            throw EventStoreError.invalidArgument("openTimeout must not be negative, got \(openTimeout)")
        }
        let id = UUID()
        let holder = "\(store.holderName), session \(id)"
        // The lease record stores the holder with a 16-bit length (RecordCodec.swift).
        guard holder.utf8.count <= Int(UInt16.max) else {
            throw EventStoreError.invalidArgument(
                "the store's holderName is \(store.holderName.utf8.count) UTF-8 bytes; a session's holder must fit in "
                    + "\(UInt16.max)")
        }
        let clock = ContinuousClock()
        // Beyond 100 years a wait is as good as endless, and far larger durations would overflow the clock.
        let deadline = clock.now.advanced(by: min(openTimeout, maximumTimeout))
        var pause = Duration.milliseconds(5)
        let key = KeyLayout.lease(stream)
        while true {
            try Task.checkCancellation()
            // By the store's clock, as every append through the session dates the stored lease.
            let expiresAt = store.clock().addingTimeInterval(sessionTimeout.timeInterval)
            let lease = LeaseRecord(sessionID: id, expiresAt: expiresAt, holder: holder)
            let outcome = try await store.backendCall {
                try await store.backend.update { context -> (transaction: KeyValueTransaction, value: Attempt) in
                    let entries = try await context.get([key, KeyLayout.streamHead(stream)])
                    // No append can ever succeed on a hard-deleted stream: refused now, as KurrentDB refuses any write
                    // to a tombstoned stream, rather than at the session's first append.
                    if let head = entries[1], try StreamHead.decode(head.value, stream: stream).state == .hardDeleted {
                        throw EventStoreError.streamDeleted(stream)
                    }
                    if let entry = entries[0] {
                        return (KeyValueTransaction(), .held(try LeaseRecord.decode(entry.value, stream: stream)))
                    }
                    return (KeyValueTransaction(writes: [.put(key, try lease.encoded(), ttl: sessionTimeout)]), .acquired)
                }
            }
            switch outcome.value {
            case .acquired:
                return KeyValueStreamSession(
                    store: store, stream: stream, id: id, timeout: sessionTimeout, expiresAt: expiresAt)
            case .held(let other):
                let now = clock.now
                guard now < deadline else {
                    throw EventStoreError.streamLocked(
                        stream: stream, holder: other.holder, leaseExpiresAt: other.expiresAt)
                }
                // Poll with a growing pause, never sleeping past the deadline.
                try await Task.sleep(for: min(pause, deadline - now))
                pause = min(pause * 2, .milliseconds(50))
            }
        }
    }

    public func append(_ events: [EventData], expectedVersion: ExpectedVersion) async throws -> AppendResult {
        try checkOpen()
        let results = try await append([StreamAppend(stream: stream, expectedVersion: expectedVersion, events: events)])
        return results[0]
    }

    public func append(_ appends: [StreamAppend]) async throws -> [AppendResult] {
        try checkOpen()
        let claim = KeyValueEventStore.SessionClaim(id: id, stream: stream, holder: holder, timeout: sessionTimeout)
        let started = store.clock()
        let results = try await store.commit(appends, session: claim)
        extendLocalExpiry(from: started)
        return results
    }

    public func renew() async throws {
        try checkOpen()
        try await commitHoldingLease(with: [])
    }

    public func saveCheckpoint(_ position: UInt64, for consumer: String) async throws {
        try checkOpen()
        let write = try await store.checkpointWrite(position, for: consumer)
        try await commitHoldingLease(with: [write])
    }

    /// Commits `writes` with a renewal of the lease, in one transaction that checks the lease is still this
    /// session's: nothing is written once it is lost.
    private func commitHoldingLease(with writes: [KeyWrite]) async throws {
        let key = KeyLayout.lease(stream)
        let started = store.clock()
        let lease = LeaseRecord(
            sessionID: id, expiresAt: started.addingTimeInterval(sessionTimeout.timeInterval), holder: holder)
        let (stream, id, timeout) = (self.stream, self.id, sessionTimeout)
        _ = try await store.backendCall {
            try await store.backend.update { context -> (transaction: KeyValueTransaction, value: Bool) in
                guard let entry = try await context.get(key),
                    try LeaseRecord.decode(entry.value, stream: stream).sessionID == id
                else { throw EventStoreError.sessionExpired(stream: stream, sessionID: id) }
                return (KeyValueTransaction(writes: [.put(key, try lease.encoded(), ttl: timeout)] + writes), true)
            }
        }
        extendLocalExpiry(from: started)
    }

    public func leaseExpiresAt() async -> Date {
        state.withLock { $0.leaseExpiresAt }
    }

    public func hasExpired() async -> Bool {
        state.withLock { $0.leaseExpiresAt } <= store.clock()
    }

    public func close() async throws {
        let alreadyReleased = state.withLock { state in
            state.closed = true
            return state.released
        }
        guard !alreadyReleased else { return }
        // The release runs in a task of its own: a close from a cancelled task (the usual clean-up on the way out)
        // must still release the stream rather than leave it locked until the lease ends. If it fails (a backend
        // error), the session stays unreleased and a later close() tries again.
        let key = KeyLayout.lease(stream)
        let (store, stream, id) = (self.store, self.stream, self.id)
        try await Task {
            _ = try await store.backendCall {
                try await store.backend.update { context -> (transaction: KeyValueTransaction, value: Bool) in
                    guard let entry = try await context.get(key),
                        try LeaseRecord.decode(entry.value, stream: stream).sessionID == id
                    else { return (KeyValueTransaction(), false) }  // already expired or taken over: nothing to release
                    return (KeyValueTransaction(writes: [.delete(key)]), true)
                }
            }
        }.value
        state.withLock { $0.released = true }
    }

    private func checkOpen() throws {
        if state.withLock({ $0.closed }) { throw EventStoreError.sessionClosed(stream: stream, sessionID: id) }
    }

    private func extendLocalExpiry(from start: Date) {
        state.withLock { $0.leaseExpiresAt = start.addingTimeInterval(sessionTimeout.timeInterval) }
    }
}
