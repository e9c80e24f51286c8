// Catch-up subscriptions as AsyncSequences: to the global log, or to one stream. Both read history first, then
// switch to live delivery on the store's doorbell, with no gap and no duplicate at the switch (see
// CatchUpReader.swift for the invariants). Delivery to a consumer that checkpoints is at-least-once.

import Foundation

/// A subscription to the global log: every matching event once, in position order, then live events as they
/// commit. Ends when the consuming task is cancelled, the consumer stops iterating, or the store closes.
public struct AllSubscription: AsyncSequence, Sendable {
    /// The element delivered: an event, or a "caught up" marker.
    public typealias Element = SubscriptionMessage

    private let reader: CatchUpReader

    /// - Parameter openDoorbell: the doorbell to wait on once caught up; the store's log notifications if nil.
    init(
        store: any EventStoring, start: SubscriptionStart, filter: SubscriptionFilter, bufferSize: Int,
        openDoorbell: (@Sendable () async throws -> AsyncThrowingStream<Void, any Error>)? = nil
    ) {
        reader = CatchUpReader(
            store: store, bufferSize: bufferSize, filter: filter,
            resolveStart: {
                switch start {
                case .start: return 1
                case .after(let position): return position == .max ? .max : position + 1
                case .end:
                    // As for `.after`, the cursor stays at the last UInt64 rather than overflowing past a head
                    // there (which only damaged bytes can say).
                    let last = try await store.lastPosition()
                    return last == .max ? .max : last + 1
                }
            },
            read: { cursor, limit in try await store.readAll(from: cursor, limit: limit) },
            cursorOf: { $0.position },
            head: { try await store.lastPosition() },
            openDoorbell: openDoorbell ?? { try await store.logNotifications() })
    }

    /// Creates an iterator; each iterator is an independent subscription.
    public func makeAsyncIterator() -> Iterator { Iterator(state: CatchUpState(reader: reader)) }

    /// Iterates an ``AllSubscription``.
    public struct Iterator: AsyncIteratorProtocol {
        fileprivate var state: CatchUpState

        /// The next event or marker; nil once the subscription has ended.
        public mutating func next() async throws -> SubscriptionMessage? { try await state.next() }

        /// Events read ahead and not yet delivered; never more than the subscription's buffer size.
        public var bufferedEventCount: Int { state.bufferedEventCount }
    }
}

/// A subscription to one stream: its events once, in version order, then live ones as they commit. Events hidden by
/// the stream's metadata or deletion are not delivered, but for those read ahead before the change (at most
/// `bufferSize`), which are delivered as they were read.
public struct StreamSubscription: AsyncSequence, Sendable {
    /// The element delivered: an event, or a "caught up" marker carrying a stream version.
    public typealias Element = SubscriptionMessage

    private let reader: CatchUpReader

    init(store: any EventStoring, stream: StreamName, start: ReadStart, bufferSize: Int) {
        reader = CatchUpReader(
            store: store, bufferSize: bufferSize, filter: .all,
            resolveStart: {
                switch start {
                case .start: 1
                case .version(let version): Swift.max(version, 1)
                case .end: try await store.version(of: stream) + 1
                }
            },
            read: { cursor, limit in try await Self.read(stream, of: store, from: cursor, limit: limit) },
            cursorOf: { $0.version },
            openDoorbell: { try await store.logNotifications() })
    }

    /// Creates an iterator; each iterator is an independent subscription.
    public func makeAsyncIterator() -> Iterator { Iterator(state: CatchUpState(reader: reader)) }

    /// Up to `limit` events of `stream` from version `cursor`. A read that meets a version scavenged under it stops
    /// there (``EventStoring/read(_:from:direction:limit:)``), short of the stream's end: the subscription would
    /// take that for the end and report itself caught up. This reads on past the hole (versions retention hides
    /// anyway) while the stream has later versions.
    private static func read(_ stream: StreamName, of store: any EventStoring, from cursor: UInt64, limit: Int)
        async throws -> [RecordedEvent]
    {
        var events = try await store.read(stream, from: .version(cursor), direction: .forward, limit: limit)
        while events.count < limit, let last = events.last?.version, last < .max,
            try await store.version(of: stream) > last
        {
            let more = try await store.read(
                stream, from: .version(last + 1), direction: .forward, limit: limit - events.count)
            guard !more.isEmpty else { break }  // the later versions are hidden (maxAge)
            events += more
        }
        return events
    }

    /// Iterates a ``StreamSubscription``.
    public struct Iterator: AsyncIteratorProtocol {
        fileprivate var state: CatchUpState

        /// The next event or marker; nil once the subscription has ended.
        public mutating func next() async throws -> SubscriptionMessage? { try await state.next() }

        /// Events read ahead and not yet delivered; never more than the subscription's buffer size.
        public var bufferedEventCount: Int { state.bufferedEventCount }
    }
}

extension EventStoring {
    /// Subscribes to the global log from `start`, delivering the events that pass `filter`.
    /// - Parameter bufferSize: how many events are read ahead at most; a slow consumer holds no more than this.
    public func subscribeToAll(
        from start: SubscriptionStart = .start, filter: SubscriptionFilter = .all, bufferSize: Int = 256
    ) -> AllSubscription {
        AllSubscription(store: self, start: start, filter: filter, bufferSize: bufferSize)
    }

    /// Subscribes to `stream` from `start` (``ReadStart/end`` for live events only, from the first `next()` on).
    /// - Parameter bufferSize: how many events are read ahead at most.
    public func subscribe(to stream: StreamName, from start: ReadStart = .start, bufferSize: Int = 256)
        -> StreamSubscription
    {
        StreamSubscription(store: self, stream: stream, start: start, bufferSize: bufferSize)
    }
}
