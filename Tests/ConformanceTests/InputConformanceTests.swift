// Conformance: bad input gets a typed error and harms nothing stored.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Conformance: input validation")
struct InputConformanceTests {
    @Test("invalid stream names name the rule they broke")
    func invalidNames() throws {
        let cases: [(String, StreamNameRule)] = [
            ("", .empty),
            (String(repeating: "x", count: 256), .tooLong),
            (String(repeating: "é", count: 128), .tooLong),
            ("bad\nname", .controlCharacter),
            ("tab\tname", .controlCharacter),
            ("nul\u{0}name", .controlCharacter),
            ("del\u{7F}", .controlCharacter),
            ("$system", .reservedPrefix),
        ]
        for (name, rule) in cases {
            do {
                _ = try StreamName(name)
                Issue.record("\(name.debugDescription) must be rejected")
            } catch EventStoreError.invalidStreamName(let rejected, let broken) {
                #expect(rejected == name)
                #expect(broken == rule)
            }
        }
        #expect(try StreamName(String(repeating: "x", count: 255)).rawValue.utf8.count == 255)
        #expect(try StreamName("account-42 ünïcödé ✓").category == "account")
        // The category ends at the first "-" character: found byte-wise in ASCII names, character-wise otherwise,
        // where a "-" with a combining mark is not a "-".
        let categories = [
            ("order-42", "order"), ("orders", "orders"), ("a-b-c", "a"), ("-x", ""),
            ("averylongcategoryname-with-more", "averylongcategoryname"), ("naïve-1", "naïve"),
            ("a-\u{301}b-c", "a-\u{301}b"), ("é-\u{301}", "é-\u{301}"),
        ]
        for (name, category) in categories {
            #expect(try StreamName(name).category.utf8.elementsEqual(category.utf8), "\(name.debugDescription)")
        }
        #expect(try StreamName.system("$deleted").isSystem)
        #expect(throws: EventStoreError.self) { try StreamName.system("plain") }
    }

    @Test("an empty event type is rejected and nothing is written", arguments: Backends.all)
    func emptyType(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            do {
                _ = try await store.append(
                    [makeEvent("ok"), EventData(type: "", data: Data())], to: stream, expectedVersion: .any)
                Issue.record("an empty event type must be rejected")
            } catch EventStoreError.invalidEventType(let type, _) {
                #expect(type == "")
            }
            #expect(try await store.version(of: stream) == 0)
            #expect(try await store.lastPosition() == 0)
        }
    }

    @Test("an oversized event gets eventTooLarge and nothing is written", arguments: Backends.all)
    func oversizedEvent(backend: Backend) async throws {
        try await backend.withStore(limits: EventStoreLimits(maximumEventSize: 4_096)) { store in
            let stream = try uniqueStream()
            _ = try await store.append([makeEvent("before")], to: stream, expectedVersion: .noStream)
            let big = EventData(type: "Big", data: Data(count: 4_097))
            do {
                _ = try await store.append([big], to: stream, expectedVersion: .exact(1))
                Issue.record("an oversized event must be rejected")
            } catch EventStoreError.eventTooLarge(let id, let size, let limit) {
                #expect(id == big.id)
                #expect(size > 4_096)
                #expect(limit == 4_096)
            }
            // Exactly at the limit is accepted.
            let fits = EventData(type: "Big", data: Data(count: 4_096 - 3))
            #expect(try await store.append([fits], to: stream, expectedVersion: .exact(1)).version == 2)
            #expect(try await store.read(stream).map(\.label).first == "before")
        }
    }

    @Test("the default event size limit is 16 MiB and large events round-trip", arguments: Backends.all)
    func largeEvent(backend: Backend) async throws {
        try await backend.withStore { store in
            #expect(store.limits.maximumEventSize == 16 * 1024 * 1024)
            let stream = try uniqueStream()
            let payload = Data((0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
            _ = try await store.append([EventData(type: "Blob", data: payload)], to: stream, expectedVersion: .noStream)
            #expect(try await store.read(stream).first?.data == payload)
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append(
                    [EventData(type: "Blob", data: Data(count: 16 * 1024 * 1024 + 1))], to: stream, expectedVersion: .any)
            }
        }
    }

    @Test("negative limits and duplicate streams or ids within one append are rejected", arguments: Backends.all)
    func malformedArguments(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            await #expect(throws: EventStoreError.self) { _ = try await store.read(stream, from: .start, limit: -1) }
            await #expect(throws: EventStoreError.self) { _ = try await store.readAll(from: 1, limit: -1) }
            let event = makeEvent("twice")
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append([event, event], to: stream, expectedVersion: .any)
            }
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append([
                    StreamAppend(stream: stream, expectedVersion: .any, events: makeEvents(1)),
                    StreamAppend(stream: stream, expectedVersion: .any, events: makeEvents(1)),
                ])
            }
            await #expect(throws: EventStoreError.self) { _ = try await store.append([]) }
            #expect(try await store.lastPosition() == 0)
        }
    }

    @Test(
        "an id repeated anywhere in one append is rejected, in increasing or any other order", arguments: Backends.all)
    func repeatedIDsInAnyOrder(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let other = try uniqueStream("other")
            // Five ids in increasing byte order (the order default ids come in, which validation checks without
            // hashing), and events for them.
            let bytes = { (id: UUID) in withUnsafeBytes(of: id.uuid) { Array($0) } }
            let ids = (0..<5).map { _ in UUID() }.sorted { bytes($0).lexicographicallyPrecedes(bytes($1)) }
            let events = ids.enumerated().map { makeEvent("e\($0.offset)", id: $0.element) }
            // A repeat after a larger id, in one part and across two parts.
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append([events[0], events[2], events[0]], to: stream, expectedVersion: .any)
            }
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append([
                    StreamAppend(stream: stream, expectedVersion: .any, events: [events[0]]),
                    StreamAppend(stream: other, expectedVersion: .any, events: [events[1], events[0]]),
                ])
            }
            #expect(try await store.lastPosition() == 0)
            // Distinct ids are accepted in decreasing order and in increasing order, across parts too.
            let first = try await store.append([events[1], events[0]], to: stream, expectedVersion: .noStream)
            #expect(first.version == 2)
            let second = try await store.append([
                StreamAppend(stream: stream, expectedVersion: .exact(2), events: [events[2]]),
                StreamAppend(stream: other, expectedVersion: .noStream, events: [events[3], events[4]]),
            ])
            #expect(second.map(\.version) == [3, 2])
            #expect(try await store.lastPosition() == 5)
        }
    }
}
