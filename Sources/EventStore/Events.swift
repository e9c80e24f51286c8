import Foundation

/// Metadata carried with an event: the ids that tie it to the message that caused it, plus free-form properties.
public struct EventMetadata: Sendable, Hashable {
    /// The id shared by every event of one business transaction or conversation.
    public var correlationID: UUID?
    /// The id of the message or event that directly caused this one.
    public var causationID: UUID?
    /// Free-form properties, such as a user id or a schema version.
    public var properties: [String: String]

    /// Creates metadata.
    public init(correlationID: UUID? = nil, causationID: UUID? = nil, properties: [String: String] = [:]) {
        self.correlationID = correlationID
        self.causationID = causationID
        self.properties = properties
    }
}

/// An event to append.
public struct EventData: Sendable, Hashable {
    /// The event's unique id. Re-sending the same ids makes an append idempotent.
    public var id: UUID
    /// The event type name, such as "Deposited"; must not be empty.
    public var type: String
    /// The payload bytes, typically JSON.
    public var data: Data
    /// Correlation, causation and free-form properties.
    public var metadata: EventMetadata

    /// Creates an event. Pass `id` to make retries idempotent; otherwise the event gets a fresh time-ordered
    /// (version 7) UUID, which keeps the store's event-id index growing at its end.
    public init(id: UUID = .timeOrdered(), type: String, data: Data, metadata: EventMetadata = EventMetadata()) {
        self.id = id
        self.type = type
        self.data = data
        self.metadata = metadata
    }

    /// The bytes this event counts against ``EventStoreLimits/maximumEventSize``: payload, type and the keys and
    /// values of its metadata properties (its correlation and causation ids are not counted).
    public var size: Int {
        let fixed = data.count + type.utf8.count
        if metadata.properties.isEmpty { return fixed }
        return metadata.properties.reduce(fixed) { $0 + $1.key.utf8.count + $1.value.utf8.count }
    }
}

/// An event as recorded in a stream.
public struct RecordedEvent: Sendable, Hashable {
    /// The event's id.
    public var id: UUID
    /// The stream it belongs to.
    public var stream: StreamName
    /// Its version in that stream, starting at 1.
    public var version: UInt64
    /// Its position in the global log: gapless and strictly increasing, starting at 1.
    public var position: UInt64
    /// When it was committed, by the writer's clock. The clock is read as the append commits, so recordedAt
    /// follows the global log (and each stream) as long as the writers' clocks agree and none steps back: two etcd
    /// nodes whose clocks differ can stamp out of log order. It is not a sequence; several events may share one
    /// reading.
    public var recordedAt: Date
    /// The event type name.
    public var type: String
    /// The payload bytes.
    public var data: Data
    /// Correlation, causation and free-form properties.
    public var metadata: EventMetadata

    /// Creates a recorded event; stores call this when decoding.
    public init(
        id: UUID, stream: StreamName, version: UInt64, position: UInt64, recordedAt: Date, type: String, data: Data,
        metadata: EventMetadata
    ) {
        self.id = id
        self.stream = stream
        self.version = version
        self.position = position
        self.recordedAt = recordedAt
        self.type = type
        self.data = data
        self.metadata = metadata
    }
}

/// What an append requires of the stream's current version.
public enum ExpectedVersion: Sendable, Hashable, CustomStringConvertible {
    /// No requirement.
    case any
    /// The stream must not exist yet (its version is 0).
    case noStream
    /// The stream must have at least one event.
    case streamExists
    /// The stream must be at exactly this version (0 means it must not exist).
    case exact(UInt64)

    /// Whether a stream at `version` meets the expectation.
    public func isSatisfied(byVersion version: UInt64) -> Bool {
        switch self {
        case .any: true
        case .noStream: version == 0
        case .streamExists: version > 0
        case .exact(let expected): version == expected
        }
    }

    public var description: String {
        switch self {
        case .any: "any"
        case .noStream: "no stream"
        case .streamExists: "stream exists"
        case .exact(let version): "version \(version)"
        }
    }
}

/// The outcome of an append.
public struct AppendResult: Sendable, Hashable {
    /// The stream's version after the append: the version of its last event.
    public var version: UInt64
    /// The global positions given to the appended events, in order (empty for an empty append).
    public var positions: Range<UInt64>

    /// Creates a result.
    public init(version: UInt64, positions: Range<UInt64>) {
        self.version = version
        self.positions = positions
    }
}

/// One stream's part of a multi-stream append.
public struct StreamAppend: Sendable, Hashable {
    /// The stream to append to.
    public var stream: StreamName
    /// What the stream's version must be.
    public var expectedVersion: ExpectedVersion
    /// The events, in order.
    public var events: [EventData]

    /// Creates one stream's part of an append.
    public init(stream: StreamName, expectedVersion: ExpectedVersion, events: [EventData]) {
        self.stream = stream
        self.expectedVersion = expectedVersion
        self.events = events
    }
}

/// Where a stream read starts.
public enum ReadStart: Sendable, Hashable {
    /// The first event (version 1).
    case start
    /// After the last event: a backward read starts at the last event (the newest first), and a forward read returns
    /// nothing (as in KurrentDB; subscriptions use it for "live events only", from where iteration starts: the
    /// first `next()`, so pass `.version(try await store.version(of: stream) + 1)` to start from the end as it is
    /// now).
    case end
    /// The event at this version (inclusive).
    case version(UInt64)
}

/// The order of a read.
public enum ReadDirection: Sendable, Hashable {
    /// Oldest first.
    case forward
    /// Newest first.
    case backward
}

/// Limits an event store enforces.
public struct EventStoreLimits: Sendable, Hashable {
    /// The largest event accepted, in bytes of payload, type and metadata properties (``EventData/size``). 16 MiB
    /// unless configured.
    public var maximumEventSize: Int

    /// Creates limits.
    public init(maximumEventSize: Int = 16 * 1024 * 1024) {
        self.maximumEventSize = maximumEventSize
    }
}
