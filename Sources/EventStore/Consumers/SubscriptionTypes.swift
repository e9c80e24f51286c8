// The vocabulary of subscriptions: where one starts, what it lets through, and what it delivers.
//
// Invariants:
// - A filter only decides which events are delivered; it never changes where the subscription reads next, so a
//   filtered subscription still advances past events it skips.

import Foundation

/// Where a subscription to the global log starts.
public enum SubscriptionStart: Sendable, Hashable {
    /// From the first event (position 1): the whole history, then live.
    case start
    /// Only events committed after the subscription starts: live only.
    case end
    /// The events after `position` (exclusive): what a consumer resumes from with its checkpoint.
    case after(UInt64)
}

/// Which events a subscription delivers. An empty list means "no restriction" for that criterion.
public struct SubscriptionFilter: Sendable, Hashable {
    /// Deliver only events of streams whose names start with one of these prefixes.
    public var streamPrefixes: [String]
    /// Deliver only events of these types.
    public var eventTypes: Set<String>

    /// Creates a filter.
    public init(streamPrefixes: [String] = [], eventTypes: Set<String> = []) {
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
        SubscriptionFilter(eventTypes: Set(types))
    }

    /// Whether `event` passes the filter.
    public func matches(_ event: RecordedEvent) -> Bool {
        if !eventTypes.isEmpty && !eventTypes.contains(event.type) { return false }
        if !streamPrefixes.isEmpty && !streamPrefixes.contains(where: { event.stream.rawValue.hasPrefix($0) }) {
            return false
        }
        return true
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
