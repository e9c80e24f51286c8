import Foundation

/// A domain event: a Codable value with a stable type name, stored as the recorded event's type.
public protocol DomainEvent: Codable, Sendable {
    /// The type name stored with the event, such as "Deposited". Keep it stable across renames of the Swift type.
    static var eventType: String { get }
}

/// Turns values into payload bytes and back. JSON by default; supply another coder to change the wire format.
public protocol EventCoder: Sendable {
    /// Encodes a value into payload bytes.
    func encode<Value: Encodable>(_ value: Value) throws -> Data
    /// Decodes a value from payload bytes.
    func decode<Value: Decodable>(_ type: Value.Type, from data: Data) throws -> Value
}

/// The default coder: JSON with sorted keys and ISO-8601 dates.
public struct JSONEventCoder: EventCoder {
    /// Creates a JSON coder.
    public init() {}

    public func encode<Value: Encodable>(_ value: Value) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .iso8601
        return try encoder.encode(value)
    }

    public func decode<Value: Decodable>(_ type: Value.Type, from data: Data) throws -> Value {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return try decoder.decode(type, from: data)
    }
}

/// Maps event type names to Swift types, encodes domain events into ``EventData`` and decodes recorded events back,
/// running registered upcasters on older payloads first.
public struct EventTypeRegistry: Sendable {
    /// Rewrites an older payload into a newer one: given the payload, returns the new type name and payload.
    public typealias Upcaster = @Sendable (Data) throws -> (type: String, data: Data)

    private var decoders: [String: @Sendable (Data, any EventCoder) throws -> any DomainEvent] = [:]
    private var upcasters: [String: Upcaster] = [:]
    /// The coder for payloads.
    public let coder: any EventCoder

    /// Creates an empty registry using `coder` (JSON by default).
    public init(coder: any EventCoder = JSONEventCoder()) {
        self.coder = coder
    }

    /// Registers a domain event type under its ``DomainEvent/eventType``.
    public mutating func register<Event: DomainEvent>(_ type: Event.Type) {
        decoders[Event.eventType] = { data, coder in try coder.decode(Event.self, from: data) }
    }

    /// Registers a raw upcaster for payloads stored under `oldType`. Upcasters chain: the result may be another old
    /// type with its own upcaster.
    public mutating func registerUpcaster(from oldType: String, _ upcaster: @escaping Upcaster) {
        upcasters[oldType] = upcaster
    }

    /// Registers a typed upcaster: payloads stored as `Old.eventType` decode as `Old`, then `convert` makes the
    /// current event.
    public mutating func registerUpcaster<Old: DomainEvent, New: DomainEvent>(
        from old: Old.Type, to new: New.Type, _ convert: @escaping @Sendable (Old) throws -> New
    ) {
        let coder = self.coder
        upcasters[Old.eventType] = { data in
            let upgraded = try convert(try coder.decode(Old.self, from: data))
            return (New.eventType, try coder.encode(upgraded))
        }
    }

    /// Encodes `event` as event data ready to append.
    public func encode<Event: DomainEvent>(
        _ event: Event, id: UUID = .timeOrdered(), metadata: EventMetadata = EventMetadata()
    ) throws -> EventData {
        do {
            return EventData(id: id, type: Event.eventType, data: try coder.encode(event), metadata: metadata)
        } catch {
            throw EventStoreError.codingFailed(type: Event.eventType, reason: "\(error)")
        }
    }

    /// Encodes an event whose static type is erased.
    public func encode(
        any event: any DomainEvent, id: UUID = .timeOrdered(), metadata: EventMetadata = EventMetadata()
    ) throws -> EventData {
        try encode(event, id: id, metadata: metadata)
    }

    /// Decodes a recorded event into its registered Swift type, upcasting older payloads first.
    /// - Throws: ``EventStoreError/unknownEventType(_:)`` or ``EventStoreError/codingFailed(type:reason:)``.
    public func decode(_ recorded: RecordedEvent) throws -> any DomainEvent {
        var type = recorded.type
        var data = recorded.data
        var hops = 0
        while decoders[type] == nil, let upcaster = upcasters[type] {
            hops += 1
            guard hops <= 64 else {
                throw EventStoreError.codingFailed(type: recorded.type, reason: "upcasters form a cycle")
            }
            do {
                (type, data) = try upcaster(data)
            } catch {
                throw EventStoreError.codingFailed(type: type, reason: "upcaster failed: \(error)")
            }
        }
        guard let decoder = decoders[type] else { throw EventStoreError.unknownEventType(type) }
        do {
            return try decoder(data, coder)
        } catch {
            throw EventStoreError.codingFailed(type: type, reason: "\(error)")
        }
    }

    /// Whether a type name (or an upcaster for it) is registered.
    public func isRegistered(_ type: String) -> Bool {
        decoders[type] != nil || upcasters[type] != nil
    }
}
