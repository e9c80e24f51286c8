// The vocabulary of subscriptions: where one starts, what it lets through, and what it delivers.
//
// Invariants:
// - A filter only decides which events are delivered; it never changes where the subscription reads next, so a
//   filtered subscription still advances past events it skips.
// - Prefixes and types are matched by their UTF-8 bytes, as the store keys names (StreamName's ==,
//   listStreams(prefix:), the event-type index), never by String's canonical equivalence: "Café" spelled NFC and
//   NFD are two types, and two prefixes.

import Foundation

/// Where a subscription to the global log starts.
public enum SubscriptionStart: Sendable, Hashable {
    /// From the first event (position 1): the whole history, then live.
    case start
    /// Only events committed after the subscription starts: live only. It starts when iteration does (the first
    /// `next()`), not when it is made, so an event committed in between is not delivered; to start from the log's
    /// end as it is now, use `.after(try await store.lastPosition())`.
    case end
    /// The events after `position` (exclusive): what a consumer resumes from with its checkpoint.
    case after(UInt64)
}

/// Which events a subscription delivers. An empty list means "no restriction" for that criterion. Names are
/// compared by their UTF-8 bytes, as the store keys them.
public struct SubscriptionFilter: Sendable, Hashable {
    /// Deliver only events of streams whose names start with the bytes of one of these prefixes.
    public var streamPrefixes: [String]
    /// Deliver only events of these types (byte for byte).
    public var eventTypes: [String]

    /// Creates a filter.
    public init(streamPrefixes: [String] = [], eventTypes: [String] = []) {
        self.streamPrefixes = streamPrefixes
        self.eventTypes = eventTypes
    }

    /// Every event, system events included.
    public static let all = SubscriptionFilter()

    /// Events of streams whose names start with one of `prefixes`.
    public static func streamPrefix(_ prefixes: String...) -> SubscriptionFilter {
        SubscriptionFilter(streamPrefixes: prefixes)
    }

    /// Events of one of `types`.
    public static func eventTypes(_ types: String...) -> SubscriptionFilter {
        SubscriptionFilter(eventTypes: types)
    }

    /// Whether `event` passes the filter.
    public func matches(_ event: RecordedEvent) -> Bool {
        if !eventTypes.isEmpty && !eventTypes.contains(where: { $0.hasSameUTF8(as: event.type) }) { return false }
        if !streamPrefixes.isEmpty
            && !streamPrefixes.contains(where: { event.stream.rawValue.utf8.starts(with: $0.utf8) })
        {
            return false
        }
        return true
    }

    /// Whether two filters have the same prefixes and types, byte for byte and in the same order.
    public static func == (lhs: SubscriptionFilter, rhs: SubscriptionFilter) -> Bool {
        func same(_ left: [String], _ right: [String]) -> Bool {
            left.count == right.count && zip(left, right).allSatisfy { $0.hasSameUTF8(as: $1) }
        }
        return same(lhs.streamPrefixes, rhs.streamPrefixes) && same(lhs.eventTypes, rhs.eventTypes)
    }

    /// Hashes the prefixes' and types' UTF-8 bytes, consistently with ``==(_:_:)``.
    public func hash(into hasher: inout Hasher) {
        for list in [streamPrefixes, eventTypes] {
            hasher.combine(list.count)
            for name in list { name.hashUTF8(into: &hasher) }
        }
    }
}

/// What a subscription delivers.
public enum SubscriptionMessage: Sendable, Hashable {
    /// The next event, in position order (version order for a stream subscription).
    case event(RecordedEvent)
    /// The subscription has read everything committed so far, through this global position (stream version for a
    /// stream subscription). Sent when history has been read, and again each time it catches up after new events.
    case caughtUp(through: UInt64)

    /// The event, if this message carries one.
    public var event: RecordedEvent? {
        if case .event(let event) = self { return event }
        return nil
    }
}
