// Idle HTTP connections to the cluster's members, kept open between requests so that a request does not pay for a
// new TCP connection (and the gateway for a new HTTP session) every time.
//
// Invariants:
// - A connection is either in use by exactly one request or idle here, never both: `checkOut` removes it, and only
//   a request that read a whole, delimited answer puts it back (EtcdHTTP.post).
// - An idle connection is handed out only if it is still open with nothing to read; one the member closed (it
//   stopped, restarted or timed out the connection) is closed here and never used.
// - At most `maximumIdlePerMember` connections per member stay idle; extra ones are closed. After `close()` nothing
//   is kept: connections checked in later are closed at once.
// - All state is in one `Locked`; descriptors are closed outside it.

import EventStore
import Foundation

final class EtcdConnectionPool: Sendable {
    private struct State {
        var idle: [String: [EtcdHTTPConnection]] = [:]
        var closed = false
        var opened = 0
    }

    private let state = Locked(State())
    let maximumIdlePerMember: Int

    init(maximumIdlePerMember: Int = 16) {
        self.maximumIdlePerMember = maximumIdlePerMember
    }

    private static func member(_ url: URL) -> String { "\(url.host ?? "localhost"):\(url.port ?? 80)" }

    /// An idle, still-open connection to the member serving `url`, or nil.
    func checkOut(for url: URL) -> EtcdHTTPConnection? {
        let key = Self.member(url)
        while true {
            let candidate = state.withLock { state -> EtcdHTTPConnection? in
                guard !state.closed else { return nil }
                return state.idle[key]?.popLast()
            }
            guard let candidate else { return nil }
            if candidate.isIdleAndOpen() { return candidate }
            candidate.close()
        }
    }

    /// Opens a new connection to the member serving `url` (when none is idle), counting it; cancelling `request`
    /// aborts the connect.
    func open(for url: URL, deadline: ContinuousClock.Instant, request: EtcdCancellableRequest? = nil) throws
        -> EtcdHTTPConnection
    {
        let connection = try EtcdHTTP.open(url, deadline: deadline, request: request)
        state.withLock { $0.opened += 1 }
        return connection
    }

    /// How many connections are idle, for every member together.
    var idleConnections: Int { state.withLock { $0.idle.values.reduce(0) { $0 + $1.count } } }

    /// How many connections requests have opened so far (the rest of their requests reused one).
    var connectionsOpened: Int { state.withLock { $0.opened } }

    /// Keeps `connection` for the next request to its member, or closes it if enough are kept already.
    func checkIn(_ connection: EtcdHTTPConnection, for url: URL) {
        let key = Self.member(url)
        let kept = state.withLock { state -> Bool in
            guard !state.closed, state.idle[key, default: []].count < maximumIdlePerMember else { return false }
            state.idle[key, default: []].append(connection)
            return true
        }
        if !kept { connection.close() }
    }

    /// Closes every idle connection and keeps none from now on.
    func close() {
        let connections = state.withLock { state -> [EtcdHTTPConnection] in
            state.closed = true
            defer { state.idle.removeAll() }
            return state.idle.values.flatMap { $0 }
        }
        for connection in connections { connection.close() }
    }
}
