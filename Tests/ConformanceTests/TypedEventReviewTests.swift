// Defects found by the fifteenth session's review of typed events, each of which failed before its fix:
// - a second Swift type registered under a taken event type name silently replaced the first, so stored events
//   decoded as the wrong type with default field values;
// - a typed upcaster never ran when its old type was registered too (and, once it did, an upcaster that keeps its
//   type's name looped until the cycle limit);
// - JSONEventCoder wrote dates in the second around 2001-01-01T00:00:00Z with too few digits (or, just before it,
//   a whole second off), so they did not read back exactly.

import EventStore
import Foundation
import Testing

private struct Stamp: Codable, Equatable { var at: Date }
private struct SharedCredited: DomainEvent {
    static let eventType = "Shared"
    var amount: Int?
}
private struct SharedNoted: DomainEvent {
    static let eventType = "Shared"
    var note: String?
}
private struct OpenedOld: DomainEvent {
    static let eventType = "ReviewOpened.v1"
    var name: String
}
private struct OpenedNew: DomainEvent {
    static let eventType = "ReviewOpened"
    var owner: String
}

private func recorded(_ data: EventData) throws -> RecordedEvent {
    RecordedEvent(
        id: data.id, stream: try StreamName("review-1"), version: 1, position: 1, recordedAt: Date(), type: data.type,
        data: data.data, metadata: data.metadata)
}

@Suite("Typed events: conflicting registrations, upcasters over registered types, exact dates")
struct TypedEventReviewTests {
    @Test("a second Swift type under a registered event type name is refused; the same type again is not")
    func conflictingRegistration() throws {
        var registry = EventTypeRegistry()
        try registry.register(SharedCredited.self)
        try registry.register(SharedCredited.self)
        #expect {
            try registry.register(SharedNoted.self)
        } throws: { error in
            guard case EventStoreError.invalidArgument(let message) = error else { return false }
            return message.contains("\"Shared\" is already registered")
        }
        let decoded = try registry.decode(try recorded(try registry.encode(SharedCredited(amount: 5))))
        #expect((decoded as? SharedCredited)?.amount == 5, "decoded as \(decoded)")
    }

    @Test("a typed upcaster runs even when its old type is registered; a second upcaster for a type is refused")
    func upcasterWithRegisteredOldType() throws {
        var registry = EventTypeRegistry()
        try registry.register(OpenedOld.self)
        try registry.register(OpenedNew.self)
        try registry.registerUpcaster(from: OpenedOld.self, to: OpenedNew.self) { OpenedNew(owner: $0.name) }
        let decoded = try registry.decode(try recorded(try registry.encode(OpenedOld(name: "ada"))))
        #expect((decoded as? OpenedNew)?.owner == "ada", "decoded as \(decoded)")
        #expect(throws: EventStoreError.self) {
            try registry.registerUpcaster(from: OpenedOld.eventType) { ($0.isEmpty ? "a" : "b", $0) }
        }
    }

    @Test(
        "dates in the seconds around 2001-01-01T00:00:00Z read back exactly",
        arguments: [1e-20, -1e-20, 0.0012345678901234567, 0.010480833064701045, -0.3, -0.5, -1, -1 + 1e-12, Double.leastNonzeroMagnitude,
            -Double.leastNonzeroMagnitude, 0.9999999999999999, -0.9999999999999999])
    func datesNearTheReferenceDate(seconds: Double) throws {
        let coder = JSONEventCoder()
        let date = Date(timeIntervalSinceReferenceDate: seconds)
        let data = try coder.encode(Stamp(at: date))
        let back = try coder.decode(Stamp.self, from: data).at
        #expect(
            back == date,
            "\(seconds) written as \(String(decoding: data, as: UTF8.self)), read back as \(back.timeIntervalSinceReferenceDate)")
    }

    @Test("random dates within a few seconds of the reference date, and across the years, read back exactly")
    func randomDates() throws {
        let coder = JSONEventCoder()
        var generator = SystemRandomNumberGenerator()
        var failures: [String] = []
        for index in 0..<20_000 {
            let seconds: Double
            switch index % 4 {
            case 0: seconds = Double.random(in: -3...3, using: &generator)
            case 1: seconds = Double.random(in: -1...1, using: &generator) * pow(10, -Double.random(in: 0...300, using: &generator))
            case 2: seconds = Double.random(in: -6e10...2e11, using: &generator)
            default: seconds = Double.random(in: -1e6...1e6, using: &generator)
            }
            let date = Date(timeIntervalSinceReferenceDate: seconds)
            let back = try coder.decode(Stamp.self, from: try coder.encode(Stamp(at: date))).at
            if back != date, failures.count < 5 { failures.append("\(seconds) → \(back.timeIntervalSinceReferenceDate)") }
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test("an upcaster that keeps its type's name upgrades the payload in place, once")
    func inPlaceUpcaster() throws {
        var registry = EventTypeRegistry()
        try registry.register(Priced.self)
        // Old payloads of the same name get the new field.
        try registry.registerUpcaster(from: Priced.eventType) { data in
            var object = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
            if object["currency"] == nil { object["currency"] = "EUR" }
            return (Priced.eventType, try JSONSerialization.data(withJSONObject: object))
        }
        let old = RecordedEvent(
            id: UUID(), stream: try StreamName("priced-1"), version: 1, position: 1, recordedAt: Date(),
            type: Priced.eventType, data: Data(#"{"amount":5}"#.utf8), metadata: EventMetadata())
        #expect((try registry.decode(old) as? Priced) == Priced(amount: 5, currency: "EUR"))
    }

    @Test("a typed upcaster that keeps its type's name is refused: it would rewrite the current payloads too")
    func typedUpcasterKeepingItsName() throws {
        var registry = EventTypeRegistry()
        try registry.register(Priced.self)
        #expect(throws: EventStoreError.self) {
            try registry.registerUpcaster(from: PricedBefore.self, to: Priced.self) { Priced(amount: $0.amount, currency: "EUR") }
        }
        let current = try registry.encode(Priced(amount: 5, currency: "USD"))
        let recorded = RecordedEvent(
            id: current.id, stream: try StreamName("priced-2"), version: 1, position: 1, recordedAt: Date(),
            type: current.type, data: current.data, metadata: current.metadata)
        #expect((try registry.decode(recorded) as? Priced) == Priced(amount: 5, currency: "USD"))
    }
}

private struct PricedBefore: DomainEvent, Equatable {
    static let eventType = "Priced"
    var amount: Int
}

private struct Priced: DomainEvent, Equatable {
    static let eventType = "Priced"
    var amount: Int
    var currency: String
}
