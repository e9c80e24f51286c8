// HTTP transport to etcd's JSON gateway, with endpoint failover, per-request timeouts and a retry policy that
// depends on whether the operation is safe to repeat.
//
// Invariants:
// - `preferred` is the member that answered last; a failure moves it to the next member only if no other request
//   has moved it already, so that concurrent failures do not skip a healthy member. A member that failed is thus
//   skipped until the members after it fail in turn; then it is tried again. `failovers` counts the moves.
// - A request that was never sent (connection refused, host not found) is retried on the next member, whatever it is.
// - A request whose outcome is unknown (timeout or connection lost after sending; etcd's "request timed out",
//   "leader changed", "no leader") is retried only when `idempotent` says so; otherwise the caller gets
//   `EtcdCallError.outcomeUnknown` and must resolve the outcome by reading, never by repeating blindly.
// - Every retry loop is bounded by the configuration's retry budget and honours Task cancellation. A request that is
//   not `cancellable` (a commit's Txn) is cut short only before it is sent (CancellationError, nothing written);
//   once sent it runs to its answer, so a cancelled caller still learns its outcome.
//   An answer that arrived is returned even if the task was cancelled meanwhile.
// - Every request in flight is registered until it ends, so `invalidate()` (the store's close) aborts them all, sent
//   Txns included, and returns only once each has ended: nothing waits out its deadline, holds a thread or a socket
//   after close. One that had sent nothing, or a read, ends with `closed`; a sent Txn ends as a lost answer
//   (`outcomeUnknown`), which the commit reports as an unknown outcome, never as failed.

import EventStore
import Foundation

/// How one call to the gateway failed.
enum EtcdCallError: Error {
    /// No member could be reached; nothing was sent.
    case unreachable(String)
    /// The request may or may not have taken effect.
    case outcomeUnknown(String)
    /// The server answered with a gRPC error status.
    case server(code: Int, message: String)
    /// The store was closed; nothing was sent.
    case closed

    /// Whether the request certainly did not reach the server.
    var nothingSent: Bool {
        switch self {
        case .unreachable, .closed: true
        case .outcomeUnknown, .server: false
        }
    }
}

/// gRPC status codes the backend acts on.
enum GRPCCode {
    static let deadlineExceeded = 4
    static let notFound = 5
    static let alreadyExists = 6
    static let resourceExhausted = 8
    static let failedPrecondition = 9
    static let outOfRange = 11
    static let unavailable = 14
}

final class EtcdTransport: Sendable {
    let endpoints: [URL]
    let requestTimeout: Duration
    /// The member to use now, and how many times requests have moved to another member.
    private let preferred = Locked((index: 0, failovers: 0))
    /// Requests in flight, whether the owner has closed (closed refuses new requests), and a close waiting for the
    /// requests in flight to end.
    private let lifecycle = Locked<Lifecycle>(Lifecycle())

    private struct Lifecycle {
        var inFlight: [ObjectIdentifier: EtcdCancellableRequest] = [:]
        var closed = false
        var drained: [CheckedContinuation<Void, Never>] = []
    }
    private let retryBudget: Duration
    private let encoder = JSONEncoder()
    /// Connections kept open between requests, per member.
    let connections = EtcdConnectionPool()

    init(configuration: EtcdConfiguration) {
        endpoints = configuration.endpoints
        retryBudget = configuration.retryBudget
        requestTimeout = configuration.requestTimeout
    }

    /// The member to use now.
    var currentEndpoint: Int { preferred.withLock { $0.index } }

    /// How many times requests have moved to another member since this transport was made.
    var failoverCount: Int { preferred.withLock { $0.failovers } }

    /// Moves past `failed`, unless another request already did.
    func failOver(from failed: Int) {
        preferred.withLock { current in
            guard current.index == failed else { return }
            current.index = (failed + 1) % endpoints.count
            current.failovers += 1
        }
    }

    func encode(_ body: some Encodable) throws -> Data {
        do {
            return try encoder.encode(body)
        } catch {
            throw KeyValueStoreError.unavailable("could not encode an etcd request: \(error)")
        }
    }

    /// Posts `body` to `path` and decodes the answer, retrying on other members as `idempotent` allows.
    func call<Response: Decodable>(
        _ path: String, body: some Encodable, idempotent: Bool, as type: Response.Type = Response.self
    ) async throws -> Response {
        let data = try encode(body)
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: retryBudget)
        var attempt = 0
        var lastFailure = ""
        while true {
            try Task.checkCancellation()
            let endpoint = currentEndpoint
            do {
                return try await send(path, data: data, to: endpoint, as: type)
            } catch let error as EtcdCallError {
                switch error {
                case .closed:
                    throw error
                case .unreachable(let detail):
                    lastFailure = detail
                case .outcomeUnknown(let detail):
                    guard idempotent else { throw error }
                    lastFailure = detail
                case .server(let code, let message):
                    guard code == GRPCCode.unavailable || code == GRPCCode.deadlineExceeded else { throw error }
                    guard idempotent else { throw EtcdCallError.outcomeUnknown(message) }
                    lastFailure = message
                }
            }
            failOver(from: endpoint)
            attempt += 1
            guard clock.now < deadline else {
                throw EtcdCallError.unreachable("no etcd member answered within \(retryBudget): \(lastFailure)")
            }
            // A full round over the members without success: back off a little before the next round.
            if attempt % endpoints.count == 0 {
                try await Task.sleep(for: .milliseconds(min(50 * attempt, 500)))
            }
        }
    }

    /// One request to one member. A `cancellable` request ends with CancellationError as soon as its task is
    /// cancelled; one that is not (a commit) ends so only while nothing was sent, and once sent runs to its answer.
    /// An answer in hand is returned either way.
    func send<Response: Decodable>(
        _ path: String, data: Data, to endpoint: Int, as type: Response.Type, cancellable: Bool = true
    ) async throws -> Response {
        let url = endpoints[endpoint].appendingPathComponent(path)
        let body: Data
        let status: Int
        let request = EtcdCancellableRequest(cancellableOnceSent: cancellable)
        try enter(request)
        defer { leave(request) }
        do {
            (status, body) = try await EtcdHTTP.post(
                url, body: data, timeout: requestTimeout, pool: connections, request: request)
        } catch let error as EtcdCallError {
            // `unreachable` means nothing was sent, so a cancelled request that is not `cancellable` may end too.
            if Task.isCancelled, cancellable || error.nothingSent { throw CancellationError() }
            // The same for a request that close() aborted: a sent Txn's outcome stays unknown.
            if isClosed, cancellable || error.nothingSent { throw EtcdCallError.closed }
            switch error {
            case .unreachable(let detail): throw EtcdCallError.unreachable("\(url): \(detail)")
            case .outcomeUnknown(let detail): throw EtcdCallError.outcomeUnknown("\(url): \(detail)")
            default: throw error
            }
        }
        guard status == 200 else {
            let parsed = try? JSONDecoder().decode(EtcdWire.ErrorBody.self, from: body)
            let message = parsed?.message ?? parsed?.error ?? String(decoding: body.prefix(200), as: UTF8.self)
            guard let code = parsed?.code else {
                // Not a gateway answer (a proxy, a crashing member): the request may or may not have been applied.
                throw EtcdCallError.outcomeUnknown("\(url) answered HTTP \(status): \(message)")
            }
            throw EtcdCallError.server(code: code, message: message)
        }
        do {
            return try JSONDecoder().decode(type, from: body)
        } catch {
            throw EtcdCallError.outcomeUnknown("\(url) sent an answer that is not etcd's JSON: \(error)")
        }
    }

    private var isClosed: Bool { lifecycle.withLock { $0.closed } }

    private func enter(_ request: EtcdCancellableRequest) throws {
        try lifecycle.withLock { state in
            guard !state.closed else { throw EtcdCallError.closed }
            state.inFlight[ObjectIdentifier(request)] = request
        }
    }

    private func leave(_ request: EtcdCancellableRequest) {
        let waiting = lifecycle.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.inFlight[ObjectIdentifier(request)] = nil
            guard state.inFlight.isEmpty else { return [] }
            defer { state.drained.removeAll() }
            return state.drained
        }
        for close in waiting { close.resume() }
    }

    /// Refuses new requests, aborts every request in flight (their blocking calls wake at once), closes idle
    /// connections, and returns once every request in flight has ended.
    func invalidate() async {
        let aborted = lifecycle.withLock { state in
            state.closed = true
            return Array(state.inFlight.values)
        }
        for request in aborted { request.abort() }
        connections.close()
        await withCheckedContinuation { (close: CheckedContinuation<Void, Never>) in
            let drained = lifecycle.withLock { state in
                if !state.inFlight.isEmpty { state.drained.append(close) }
                return state.inFlight.isEmpty
            }
            if drained { close.resume() }
        }
    }
}

