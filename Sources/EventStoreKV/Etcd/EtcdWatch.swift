// A contract change stream on an etcd watch: one streaming POST to /v3/watch, answered with one JSON object per
// line, reconnected to the next member from where it left off when the connection ends.
//
// Invariants:
// - `lastRevision` is the revision of the last change handed to the consumer (initially the requested `after`);
//   a reconnect asks for `lastRevision + 1` (clamped to Int64.max, etcd's last revision), so nothing is skipped. etcd sends all events of one revision in one
//   message, so a revision is never half-delivered across a reconnect.
// - Only event revisions and progress notifications advance `lastRevision`. A progress notification (a message with
//   no events that neither creates nor cancels the watch; asked for with progress_notify) goes only to a watch that
//   has been sent every change up to its header revision, so a quiet watch's reconnect does not start below a
//   compaction that passed none of its changes. No other header does (a catching-up watch's header is ahead).
// - The namespace's revision marker is never delivered.
// - An event the client cannot decode (no kv, a malformed key, no usable mod_revision) ends the stream with
//   unavailable, never skipped: a skipped event would be a change the consumer never sees.
// - Compacted history ends the stream with historyUnavailable; a full buffer ends it with watcherOverflow; failing
//   members end it with unavailable only once every member has failed since the last watch was created and the
//   retry budget has passed. Once finished, nothing more is yielded.
// - Connecting, sending the request and reading the answer up to `created` wait at most `requestTimeout`, as any
//   request does; only a created watch waits `watchIdleTimeout` for its next message. A created watch that was
//   silent that long checks its member (`memberAnswers`): while it answers a linearizable read requiring a leader
//   within `requestTimeout`, the namespace is merely quiet and the watch stays open, keeping its place in etcd's event
//   stream (a reopen would start after its last change, which a compaction may since have passed: historyUnavailable
//   for a watch that missed nothing); otherwise (a hung or stalled member) the member is left, as a failure. A
//   member that loses its leader ends its watches itself (the request requires one); TCP keep-alive probes end a
//   connection whose peer vanished without a word. Finishing cancels a connect or a check in progress. After a
//   failure, connections start at least `reconnectInterval` apart.
// - All mutable state is in `state`, a `Locked`. Each connection is read by its own thread; `generation` tells a thread
//   whose connection was replaced or aborted to deliver nothing more.

import EventStore
import Foundation

final class EtcdWatch: Sendable {
    private struct State {
        var buffer = Data()
        var lastRevision: UInt64
        var connection: EtcdHTTPConnection?
        var generation: UInt64 = 0
        var finished = false
        /// When the current run of failed connections started (nil while connected).
        var failingSince: ContinuousClock.Instant?
        /// Connections that failed since the last watch was created.
        var failures = 0
        /// Whether the current connection's watch was created (etcd answered `created`).
        var created = false
        /// When the current connection was started.
        var connectedAt: ContinuousClock.Instant?
        /// Checks of the member made because a created watch was silent for `watchIdleTimeout`.
        var idleChecks = 0
        /// The connect or the check of the member in progress, which finishing cancels.
        var pending: EtcdCancellableRequest?
    }

    private let state: Locked<State>
    private let continuation: AsyncThrowingStream<KeyValueChange, any Error>.Continuation
    private let transport: EtcdTransport
    private let key: [UInt8]
    private let rangeEnd: [UInt8]
    private let namespaceLength: Int
    private let configuration: EtcdConfiguration
    private let onFinish: @Sendable () -> Void

    init(
        after revision: UInt64, key: [UInt8], rangeEnd: [UInt8], namespaceLength: Int, transport: EtcdTransport,
        configuration: EtcdConfiguration, continuation: AsyncThrowingStream<KeyValueChange, any Error>.Continuation,
        onFinish: @escaping @Sendable () -> Void
    ) {
        self.state = Locked(State(lastRevision: revision))
        self.key = key
        self.rangeEnd = rangeEnd
        self.namespaceLength = namespaceLength
        self.transport = transport
        self.configuration = configuration
        self.continuation = continuation
        self.onFinish = onFinish
    }

    /// Opens the first connection.
    func start() { connect() }

    private func connect() {
        let endpoint = transport.currentEndpoint
        let url = transport.endpoints[endpoint].appendingPathComponent("v3/watch")
        let claim: (generation: UInt64, body: Data)? = state.withLock { state in
            guard !state.finished else { return nil }
            state.generation += 1
            state.buffer.removeAll()
            state.created = false
            state.connectedAt = ContinuousClock.now
            let body = EtcdWire.WatchRequest(createRequest: EtcdWire.WatchCreateRequest(
                key: EtcdWire.encode(key), rangeEnd: EtcdWire.encode(rangeEnd),
                startRevision: String(Self.startRevision(after: state.lastRevision)), progressNotify: true))
            return (state.generation, (try? JSONEncoder().encode(body)) ?? Data())
        }
        guard let claim else { return }
        let (timeout, idle) = (configuration.requestTimeout, configuration.watchIdleTimeout)
        Thread.detachNewThread { [self] in
            var reason = "the member closed the watch"
            do {
                let deadline = ContinuousClock.now.advanced(by: timeout)
                // Finishing cancels the connect too, so a member that never completes the handshake does not keep this
                // thread and its socket for requestTimeout after the store closed.
                let opening = EtcdCancellableRequest()
                let opened = state.withLock { state -> Bool in
                    guard state.generation == claim.generation, !state.finished else { return false }
                    state.pending = opening
                    return true
                }
                guard opened else { return }
                let connection = try EtcdHTTP.start(
                    url, body: claim.body, deadline: deadline, keepAliveAfter: idle, request: opening)
                defer { connection.close() }
                let current = state.withLock { state -> Bool in
                    if state.pending === opening { state.pending = nil }
                    guard state.generation == claim.generation, !state.finished else { return false }
                    state.connection = connection
                    return true
                }
                guard current else { return }
                var reader = EtcdHTTPResponseReader(connection: connection, deadline: deadline)
                try reader.readHead()
                guard reader.status == 200 else { throw EtcdCallError.outcomeUnknown("HTTP \(reader.status)") }
                // Until etcd answers `created`, reads share the request's deadline; then each may wait `idle`.
                reader.readDeadline = { [state] in
                    state.withLock { $0.created } ? ContinuousClock.now.advanced(by: idle) : deadline
                }
                reader.whenIdle = { [self] in memberAnswers(endpoint, generation: claim.generation) }
                try reader.readBody { bytes in receive(bytes, generation: claim.generation) }
            } catch EtcdCallError.outcomeUnknown(let detail) where detail == EtcdHTTPConnection.timedOut {
                reason = "no answer within the timeout (or, for a silent watch, to a read checking the member)"
            } catch {
                reason = "\(error)"
            }
            // Nothing more when the watch moved on without this connection.
            let current = state.withLock { state -> Bool in
                guard state.generation == claim.generation, !state.finished else { return false }
                state.connection = nil
                return true
            }
            guard current else { return }
            reconnect(after: reason, from: endpoint)
        }
    }

    /// Whether member `endpoint` still serves: asked when this connection's created watch has been silent for
    /// `watchIdleTimeout`. It does while it answers a linearizable read requiring a leader within `requestTimeout`
    /// (the read needs a round with the leader and an apply up to its commit index, so a member whose disk or apply
    /// loop stalled fails it, where a status request is answered from local state). While it does, the watch stays
    /// open (see the header), whatever the client's other requests met meanwhile: they fail over for reasons that
    /// say nothing of this member (a read that met a leader election), and a reopen elsewhere would start after the
    /// watch's last change. Blocks the connection's own thread, never the cooperative pool; finishing cancels it.
    private func memberAnswers(_ endpoint: Int, generation: UInt64) -> Bool {
        let check = EtcdCancellableRequest()
        let current = state.withLock { state -> Bool in
            guard state.generation == generation, !state.finished, state.created else { return false }
            state.idleChecks += 1
            state.pending = check
            return true
        }
        guard current else { return false }
        defer { state.withLock { state in if state.pending === check { state.pending = nil } } }
        let url = transport.endpoints[endpoint].appendingPathComponent("v3/kv/range")
        let read = EtcdWire.RangeRequest(key: EtcdWire.encode(key), countOnly: true)
        let deadline = ContinuousClock.now.advanced(by: configuration.requestTimeout)
        guard let body = try? JSONEncoder().encode(read),
            let connection = try? EtcdHTTP.open(url, deadline: deadline, request: check)
        else { return false }
        defer { connection.close() }
        guard (try? check.willSend()) != nil,
            let answer = try? EtcdHTTP.exchange(
                url, body: body, on: connection, deadline: deadline, requireLeader: true)
        else { return false }
        return answer.status == 200 && state.withLock { $0.generation == generation && !$0.finished }
    }

    /// The least time between the starts of two connections after a failure.
    static let reconnectInterval: Duration = .milliseconds(200)

    /// The revision a watch after `revision` starts from. etcd's revisions are int64, so a start past Int64.max is
    /// clamped to it: no revision after it can come, and the watch waits, delivering nothing, as the contract says.
    static func startRevision(after revision: UInt64) -> UInt64 {
        min(revision, UInt64(Int64.max) - 1) + 1
    }

    /// Ends the stream (with `error`, or normally when nil) and releases the connection.
    func finish(throwing error: (any Error)?) {
        typealias Taken = (wasOpen: Bool, connection: EtcdHTTPConnection?, pending: EtcdCancellableRequest?)
        let (wasOpen, connection, pending): Taken = state.withLock { state in
            guard !state.finished else { return (false, nil, nil) }
            state.finished = true
            state.generation += 1
            defer {
                state.connection = nil
                state.pending = nil
            }
            return (true, state.connection, state.pending)
        }
        guard wasOpen else { return }
        connection?.abort()
        pending?.cancel()
        continuation.finish(throwing: error)
        onFinish()
    }

    private func receive(_ bytes: [UInt8], generation: UInt64) {
        let lines: [Data] = state.withLock { state in
            guard !state.finished, state.generation == generation else { return [] }
            state.buffer.append(contentsOf: bytes)
            var lines: [Data] = []
            while let newline = state.buffer.firstIndex(of: UInt8(ascii: "\n")) {
                lines.append(state.buffer[state.buffer.startIndex..<newline])
                state.buffer.removeSubrange(state.buffer.startIndex...newline)
            }
            return lines
        }
        for line in lines where !line.allSatisfy({ $0 == 0x20 || $0 == 0x0D }) {
            handle(line)
        }
    }

    /// Opens a new connection after the one to member `failed` ended, on the next member.
    private func reconnect(after reason: String, from failed: Int) {
        let clock = ContinuousClock()
        let now = clock.now
        let (since, failures, connectedAt) = state.withLock { state in
            let since = state.failingSince ?? now
            state.failingSince = since
            state.failures += 1
            return (since, state.failures, state.connectedAt ?? now)
        }
        transport.failOver(from: failed)
        guard now - since < configuration.retryBudget || failures < transport.endpoints.count else {
            finish(throwing: KeyValueStoreError.unavailable("the etcd watch could not reconnect: \(reason)"))
            return
        }
        // Connections start at least this far apart, so that a member that fails at once (refusing, or closing each
        // watch it created) is not reconnected to in a tight loop; a slow failure moves on at once.
        let pause = max(.zero, Self.reconnectInterval - (now - connectedAt))
        Task { [self] in
            if pause > .zero { try? await Task.sleep(for: pause) }
            connect()
        }
    }

    // MARK: Messages

    private func handle(_ line: Data) {
        guard let message = try? JSONDecoder().decode(EtcdWire.WatchMessage.self, from: line) else {
            finish(throwing: KeyValueStoreError.unavailable(
                "the etcd watch sent something that is not JSON: \(String(decoding: line.prefix(200), as: UTF8.self))"))
            return
        }
        if let error = message.error {
            // The gateway reports a broken stream inside it; the connection ends next and is reopened then.
            state.withLock { $0.buffer.removeAll() }
            if error.grpcCode != GRPCCode.unavailable {
                finish(throwing: KeyValueStoreError.unavailable("the etcd watch failed: \(error.message ?? "unknown")"))
            }
            return
        }
        guard let result = message.result else { return }
        if result.canceled == true {
            cancelled(result)
            return
        }
        if result.created == true {
            state.withLock { state in
                state.failingSince = nil
                state.failures = 0
                state.created = true
            }
        } else if result.events?.isEmpty ?? true, result.compactRevision == nil {
            progressed(result.header?.revision)
            return
        }
        deliver(result.events ?? [])
    }

    /// A progress notification (etcd's rule, as its own client reads it: no events, neither created nor cancelled,
    /// a header revision): every change up to that revision has been sent, so a reconnect may start after it.
    private func progressed(_ text: String?) {
        guard let revision = try? EtcdWire.revision(text, field: "header revision") else { return }
        state.withLock { state in
            guard !state.finished else { return }
            state.lastRevision = max(state.lastRevision, revision)
        }
    }

    /// The revision up to which the consumer has been handed every change (for tests).
    var deliveredThrough: UInt64 { state.withLock { $0.lastRevision } }
    /// How many times the watch checked its member after a silence (for tests).
    var idleCheckCount: Int { state.withLock { $0.idleChecks } }

    /// Ends the stream etcd cancelled: historyUnavailable when it names a compact revision (etcd omits a zero one).
    private func cancelled(_ result: EtcdWire.WatchResult) {
        let compacted: UInt64
        do {
            compacted = try EtcdWire.revision(orZero: result.compactRevision, field: "compact_revision")
        } catch {
            finish(throwing: KeyValueStoreError.unavailable("etcd cancelled the watch: \(error)"))
            return
        }
        let requested = state.withLock { $0.lastRevision }
        if compacted > 0 {
            finish(throwing: KeyValueStoreError.historyUnavailable(requested: requested, oldest: compacted - 1))
        } else {
            finish(throwing: KeyValueStoreError.unavailable(
                "etcd cancelled the watch: \(result.cancelReason ?? "no reason given")"))
        }
    }

    private func deliver(_ events: [EtcdWire.WatchEvent]) {
        for event in events {
            let fullKey: [UInt8], revision: UInt64
            do {
                guard let kv = event.kv else { throw KeyValueStoreError.unavailable("etcd sent a watch event without a kv") }
                fullKey = try EtcdWire.decode(kv.key, field: "key of a watch event")
                revision = try EtcdWire.revision(kv.modRevision, field: "mod_revision of a watch event")
            } catch {
                // Skipping it would lose a change: end the stream, as for a line that is not JSON.
                finish(throwing: error)
                return
            }
            let stillOpen = state.withLock { state -> Bool in
                guard !state.finished else { return false }
                state.lastRevision = max(state.lastRevision, revision)
                return true
            }
            guard stillOpen else { return }
            guard fullKey.count > namespaceLength else { continue }  // the revision marker
            let change = KeyValueChange(
                revision: revision, kind: event.type == "DELETE" ? .delete : .put,
                key: Array(fullKey.dropFirst(namespaceLength)))
            if case .dropped = continuation.yield(change) {
                finish(throwing: KeyValueStoreError.watcherOverflow)
                return
            }
        }
    }
}

extension EtcdKeyValueStore {
    public func changes(after revision: UInt64, prefix: Key) -> AsyncThrowingStream<KeyValueChange, any Error> {
        let (stream, continuation) = AsyncThrowingStream<KeyValueChange, any Error>.makeStream(
            bufferingPolicy: .bufferingOldest(configuration.watchBufferLimit))
        let key = namespace + prefix
        let start = key.isEmpty ? [0] : key
        let end = Key.successor(ofPrefix: key) ?? [0]
        // The check of `closed` and the insert are one critical section: a watch inserted after close() emptied
        // `watchers` would never be finished, and would go on reconnecting after the store was closed.
        let watch: EtcdWatch? = state.withLock { state in
            guard !state.closed else { return nil }
            state.nextWatcherID += 1
            let id = state.nextWatcherID
            let watch = EtcdWatch(
                after: revision, key: start, rangeEnd: end, namespaceLength: namespace.count, transport: transport,
                configuration: configuration, continuation: continuation,
                onFinish: { [weak self] in _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) } })
            state.watchers[id] = watch
            return watch
        }
        guard let watch else {
            continuation.finish(throwing: KeyValueStoreError.closed)
            return stream
        }
        continuation.onTermination = { _ in watch.finish(throwing: nil) }
        watch.start()
        return stream
    }
}
