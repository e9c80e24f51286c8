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

/// The default coder: JSON with sorted keys and ISO-8601 dates that keep their fractional seconds, so a `Date`
/// reads back exactly as it was written ("2023-11-14T22:13:20.25Z"; a whole second has no fraction, as before).
/// Dates written without a fraction, or with a time zone offset, decode as with `.iso8601`. Dates from 0001-01-01
/// through 9999-12-31 (UTC) are written; encoding one outside those years, or NaN, throws
/// `EncodingError.invalidValue`, since ISO 8601 text could not read it back.
public struct JSONEventCoder: EventCoder {
    /// Creates a JSON coder.
    public init() {}

    public func encode<Value: Encodable>(_ value: Value) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.dateEncodingStrategy = .custom { date, encoder in
            guard ExactISO8601.writable.contains(date.timeIntervalSince1970) else {
                // The seconds, not the Date: describing a NaN or infinite Date traps in Foundation.
                throw EncodingError.invalidValue(
                    date.timeIntervalSince1970,
                    EncodingError.Context(
                        codingPath: encoder.codingPath,
                        debugDescription: "JSONEventCoder writes dates from 0001-01-01 through 9999-12-31 UTC; "
                            + "\(date.timeIntervalSince1970) s since 1970 would not read back"))
            }
            var container = encoder.singleValueContainer()
            try container.encode(ExactISO8601.string(from: date))
        }
        return try encoder.encode(value)
    }

    public func decode<Value: Decodable>(_ type: Value.Type, from data: Data) throws -> Value {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .custom { decoder in
            let container = try decoder.singleValueContainer()
            let text = try container.decode(String.self)
            guard let date = ExactISO8601.date(from: text) else {
                throw DecodingError.dataCorruptedError(
                    in: container, debugDescription: "expected an ISO-8601 date, found \"\(text)\"")
            }
            return date
        }
        return try decoder.decode(type, from: data)
    }
}

/// ISO-8601 text for a `Date` with as many fractional digits as it takes to read the same `Date` back.
enum ExactISO8601 {
    /// The dates, in seconds since 1970, that read back exactly: 0001-01-01T00:00:00Z up to, not including,
    /// 10000-01-01T00:00:00Z (ISO 8601 text has four-digit years; NaN is in no range).
    static let writable = -62_135_596_800.0..<253_402_300_800.0

    static func string(from date: Date) -> String {
        // Whole seconds through the standard format; the rest, less than 1, as the shortest decimal fraction that
        // reads back as the same Double. `reference - whole` is exact unless the date lies in the second before the
        // reference date (whole == -1), where it would round: there the digits written are 1 minus the shortest
        // digits of -reference, and `date(from:)` takes that complement back.
        let reference = date.timeIntervalSinceReferenceDate
        let whole = reference.rounded(.down)
        var text = Date(timeIntervalSinceReferenceDate: whole).formatted(Date.ISO8601FormatStyle())
        guard reference > whole, text.hasSuffix("Z") else { return text }
        let digits = whole == -1 ? complement(of: shortestDigits(of: -reference)) : shortestDigits(of: reference - whole)
        guard let digits else { return text }
        text.insert(contentsOf: "." + digits, at: text.index(before: text.endIndex))
        return text
    }

    static func date(from text: String) -> Date? {
        // A fractional part right after the seconds is split off, the rest parsed as before, and the fraction added.
        var whole = text
        var digits = ""
        if let dot = text.firstIndex(of: ".") {
            let fraction = text[text.index(after: dot)...].prefix { $0.isASCII && $0.isNumber }
            guard !fraction.isEmpty else { return nil }
            digits = String(fraction)
            whole = String(text[..<dot]) + String(text[fraction.endIndex...])
        }
        guard let seconds = try? Date.ISO8601FormatStyle().parse(whole).timeIntervalSinceReferenceDate else {
            return nil
        }
        guard !digits.isEmpty else { return Date(timeIntervalSinceReferenceDate: seconds) }
        if seconds == -1 {
            // -1 + 0.d, computed as -(0.(1 - 0.d)) so that it is exact (see `string(from:)`).
            guard let rest = complement(of: digits) else { return Date(timeIntervalSinceReferenceDate: seconds) }
            guard let value = Double("0." + rest) else { return nil }
            return Date(timeIntervalSinceReferenceDate: -value)
        }
        guard let fraction = Double("0." + digits) else { return nil }
        return Date(timeIntervalSinceReferenceDate: seconds + fraction)
    }

    /// The digits after "0." of the shortest decimal that reads back as `value` (0 < value < 1), without an exponent.
    static func shortestDigits(of value: Double) -> String? {
        let description = "\(value)"  // shortest round-trip form: "0.25", "1.5e-05", "1e-20"
        guard let e = description.firstIndex(of: "e") else {
            guard description.hasPrefix("0.") else { return nil }
            let digits = description.dropFirst(2)
            return digits.allSatisfy({ $0 == "0" }) ? nil : String(digits)
        }
        guard let exponent = Int(description[description.index(after: e)...]), exponent < 0 else { return nil }
        let mantissa = description[..<e].filter { $0 != "." }
        return String(repeating: "0", count: -exponent - 1) + mantissa
    }

    /// The digits after "0." of 1 - 0.`digits`, trailing zeros removed; nil when `digits` are all zeros (1 - 0 is
    /// not a fraction).
    static func complement(of digits: String?) -> String? {
        guard let digits, digits.contains(where: { $0 != "0" }) else { return nil }
        // 10^n - D: the nines' complement of every digit, plus one at the last.
        var result = digits.utf8.map { 9 - ($0 - UInt8(ascii: "0")) }
        var index = result.count - 1
        while result[index] == 9 {
            result[index] = 0
            index -= 1
        }
        result[index] += 1
        while result.last == 0 { result.removeLast() }
        return String(decoding: result.map { $0 + UInt8(ascii: "0") }, as: UTF8.self)
    }
}

/// Maps event type names to Swift types, encodes domain events into ``EventData`` and decodes recorded events back,
/// running registered upcasters on older payloads first.
///
/// Type names are compared byte for byte (their UTF-8), as the store compares them: canonically equivalent
/// spellings, such as "Caf\u{E9}" and "Cafe\u{301}", are different types, each with its own registration.
public struct EventTypeRegistry: Sendable {
    /// A type name as a dictionary key: equal and hashed by its UTF-8 bytes, not by String's canonical equivalence.
    private struct TypeName: Hashable, Sendable {
        let name: String
        init(_ name: String) { self.name = name }
        static func == (left: TypeName, right: TypeName) -> Bool { left.name.hasSameUTF8(as: right.name) }
        func hash(into hasher: inout Hasher) { name.hashUTF8(into: &hasher) }
    }

    /// Rewrites an older payload into a newer one: given the payload, returns the new type name and payload.
    public typealias Upcaster = @Sendable (Data) throws -> (type: String, data: Data)

    private var decoders: [TypeName: @Sendable (Data, any EventCoder) throws -> any DomainEvent] = [:]
    /// The Swift type registered under each name, so that a second type claiming a name is refused.
    private var registeredTypes: [TypeName: ObjectIdentifier] = [:]
    private var upcasters: [TypeName: Upcaster] = [:]
    /// The coder for payloads.
    public let coder: any EventCoder

    /// Creates an empty registry using `coder` (JSON by default).
    public init(coder: any EventCoder = JSONEventCoder()) {
        self.coder = coder
    }

    /// Registers a domain event type under its ``DomainEvent/eventType``. Registering the same type again does
    /// nothing.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` if another Swift type is already registered under that name
    ///   (the same UTF-8 bytes): events of one would otherwise decode as the other.
    public mutating func register<Event: DomainEvent>(_ type: Event.Type) throws {
        let name = TypeName(Event.eventType)
        if let existing = registeredTypes[name] {
            guard existing == ObjectIdentifier(Event.self) else {
                throw EventStoreError.invalidArgument(
                    "event type \"\(name.name)\" is already registered for another Swift type than \(Event.self)")
            }
            return
        }
        registeredTypes[name] = ObjectIdentifier(Event.self)
        decoders[name] = { data, coder in try coder.decode(Event.self, from: data) }
    }

    /// Registers a raw upcaster for payloads stored under `oldType`. Upcasters chain: the result may be another old
    /// type with its own upcaster. A payload stored under `oldType` always goes through the upcaster, even if a
    /// type is registered under that name too; an upcaster that returns `oldType` itself upgrades the payload in
    /// place (it runs once, then the payload decodes as the type registered under that name).
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` if `oldType` already has an upcaster.
    public mutating func registerUpcaster(from oldType: String, _ upcaster: @escaping Upcaster) throws {
        guard upcasters[TypeName(oldType)] == nil else {
            throw EventStoreError.invalidArgument("event type \"\(oldType)\" already has an upcaster")
        }
        upcasters[TypeName(oldType)] = upcaster
    }

    /// Registers a typed upcaster: payloads stored as `Old.eventType` decode as `Old`, then `convert` makes the
    /// current event. This holds even if `Old` is registered too (to keep encoding it, say).
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` if `Old.eventType` already has an upcaster, or if it is
    ///   `New.eventType`: every payload under that name, the current ones too, would be read as `Old` and converted.
    ///   To upgrade old payloads in place under one name, register a raw upcaster that leaves current ones alone.
    public mutating func registerUpcaster<Old: DomainEvent, New: DomainEvent>(
        from old: Old.Type, to new: New.Type, _ convert: @escaping @Sendable (Old) throws -> New
    ) throws {
        guard !Old.eventType.hasSameUTF8(as: New.eventType) else {
            throw EventStoreError.invalidArgument(
                "a typed upcaster from \(Old.self) to \(New.self) must change the type name \"\(Old.eventType)\"; "
                    + "upgrade payloads in place with a raw upcaster that leaves current ones alone")
        }
        let coder = self.coder
        try registerUpcaster(from: Old.eventType) { data in
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
    /// - Throws: ``EventStoreError/unknownEventType(type:location:)`` or
    ///   ``EventStoreError/codingFailed(type:reason:)``.
    public func decode(_ recorded: RecordedEvent) throws -> any DomainEvent {
        var type = recorded.type
        var data = recorded.data
        var hops = 0
        while let upcaster = upcasters[TypeName(type)] {
            hops += 1
            guard hops <= 64 else {
                throw EventStoreError.codingFailed(type: recorded.type, reason: "upcasters form a cycle")
            }
            let previous = type
            do {
                (type, data) = try upcaster(data)
            } catch {
                throw EventStoreError.codingFailed(type: type, reason: "upcaster failed: \(error)")
            }
            // An upcaster that keeps its type's name upgrades the payload in place: it runs once.
            if type.hasSameUTF8(as: previous) { break }
        }
        guard let decoder = decoders[TypeName(type)] else {
            throw EventStoreError.unknownEventType(type: type, location: Self.location(of: recorded))
        }
        do {
            return try decoder(data, coder)
        } catch {
            throw EventStoreError.codingFailed(type: type, reason: "\(error)")
        }
    }

    /// `events`, about to be appended to `stream` after `version`, decoded from their exact bytes as a replay will
    /// decode them: the state they fold into is then the one a load builds (upcasters and a lossy coder included),
    /// and an event no replay could decode is refused before anything is written.
    /// - Throws: ``EventStoreError/unknownEventType(type:location:)`` or
    ///   ``EventStoreError/codingFailed(type:reason:)``, naming the event's place in the append and the stream's
    ///   visible version `version`. (Not a version of its own: after a soft delete, the stream's next version follows
    ///   the deleted ones, which a load does not see.)
    package func decodeAsReplayed(_ events: [EventData], appendingTo stream: StreamName, after version: UInt64) throws
        -> [any DomainEvent]
    {
        try events.enumerated().map { offset, event in
            // Decoding reads only the type and payload; the version and position are not known yet.
            let recorded = RecordedEvent(
                id: event.id, stream: stream, version: version &+ UInt64(offset) &+ 1, position: 0,
                recordedAt: Date(), type: event.type, data: event.data, metadata: event.metadata)
            let place =
                "event \(offset + 1) of \(events.count) to append to stream \"\(stream)\" (after its visible version "
                + "\(version))"
            do {
                return try decode(recorded)
            } catch EventStoreError.unknownEventType(let type, _) {
                throw EventStoreError.unknownEventType(type: type, location: place)
            } catch EventStoreError.codingFailed(let type, let reason) {
                throw EventStoreError.codingFailed(type: type, reason: "\(place): \(reason)")
            }
        }
    }

    /// Where `recorded` is, for errors: its version and stream, and its position once it has one (an event decoded
    /// before it is appended has none yet).
    static func location(of recorded: RecordedEvent) -> String {
        let place = "version \(recorded.version) of stream \"\(recorded.stream)\""
        return recorded.position == 0 ? place : place + " (position \(recorded.position))"
    }

    /// Whether a type name (or an upcaster for it) is registered, byte for byte.
    public func isRegistered(_ type: String) -> Bool {
        decoders[TypeName(type)] != nil || upcasters[TypeName(type)] != nil
    }
}
