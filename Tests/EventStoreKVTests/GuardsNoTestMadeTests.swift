// Mutation testing, third round (twenty-fifth session): each test here fails on a hand-made mutant of the line it
// names (the check removed or weakened) and passes on the code as it is, so none of these guards goes untested.
// (The round's two tests of `execute`'s attempt limit are in ConformanceTests/AggregateExecuteAttemptTests.swift.)

import EventStore
import Foundation
import Synchronization
import Testing

@testable import EventStoreKV

private func storedRecord(version: UInt64, stream: String = "order-1", type: String = "Deposited") throws -> [UInt8] {
    let event = EventData(type: type, data: Data("payload".utf8))
    let prepared = EventRecord.prepare(event, stream: try StreamName(stream), recordedAtMicroseconds: 1_000_000)
    return EventRecord.encode(prepared: prepared, version: version)
}

private func isCorruption(_ error: any Error, containing text: String) -> Bool {
    guard case EventStoreError.corrupted(let location, let detail) = error else { return false }
    return (location + " " + detail).contains(text)
}

private struct Hop: DomainEvent {
    static let eventType = "Hop"
    var n: Int
}

/// Encodes its amount as text but decodes it as a number: no replay can decode what it writes.
private struct UnreadableDeposit: DomainEvent {
    static let eventType = "UnreadableDeposit"
    var amount: Int
    enum CodingKeys: String, CodingKey { case amount }
    init(amount: Int) { self.amount = amount }
    init(from decoder: any Decoder) throws {
        amount = try decoder.container(keyedBy: CodingKeys.self).decode(Int.self, forKey: .amount)
    }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode("\(amount)", forKey: .amount)
    }
}

private struct HopCount: Aggregate {
    var deposits = 0
    mutating func apply(_ event: any DomainEvent) { if event is Hop { deposits += 1 } }
}

@Suite("Mutation testing, third round: guards no test could fail")
struct GuardsNoTestMadeTests {
    // RecordCodec.swift:177 (`version > 0`): versions start at 1.
    @Test("an event record of version 0 or UInt64.max is corruption naming its position, not an event")
    func impossibleRecordVersions() throws {
        for version: UInt64 in [0, .max] {
            let bytes = try storedRecord(version: version)
            var names = StreamNameCache()
            #expect(performing: { try EventRecord.decode(bytes, position: 9, names: &names) }, throws: { error in
                isCorruption(error, containing: "event record at global position 9")
            })
        }
    }

    // RecordCodec.swift:177, end to end: the global log has no index to cross-check the version against.
    @Test("readAll over a log record of version 0 is corruption naming its position, not an event of version 0")
    func readAllOverVersionZeroRecord() async throws {
        let backend = InMemoryKeyValueStore()
        let store = KeyValueEventStore(backend: backend)
        _ = try await store.append([EventData(type: "Deposited", data: Data())], to: try StreamName("order-1"),
                                   expectedVersion: .noStream)
        _ = try await backend.commit(KeyValueTransaction(writes: [.put(KeyLayout.log(1), try storedRecord(version: 0))]))
        await #expect(performing: { try await store.readAll(from: 1, limit: 10) }, throws: { error in
            isCorruption(error, containing: "event record at global position 1")
        })
    }

    // ByteReader.swift:132 (`utf8.count == field.count`): a truncated sequence that repair turns into U+FFFD,
    // whose UTF-8 starts with the same bytes.
    @Test("an event type of a truncated UTF-8 sequence (EF BF) is corruption, not U+FFFD")
    func truncatedUTF8SequenceIsCorruption() throws {
        var bytes = try storedRecord(version: 1, type: "AB")
        // Offsets: stream length 33, stream 35 ("order-1", 7 bytes), type length 42, type 44.
        bytes[44] = 0xEF
        bytes[45] = 0xBF
        var names = StreamNameCache()
        #expect(performing: { try EventRecord.decode(bytes, position: 3, names: &names) }, throws: { error in
            isCorruption(error, containing: "invalid UTF-8")
        })
    }

    // LogFetch.swift:77: a scanned run that ends at the last position (its key range ends past the log's prefix).
    @Test("an indexed read of a run ending at position UInt64.max returns its events")
    func scannedRunEndingAtLastPosition() async throws {
        // No append reaches the last position, but the log's key space has it: the records, index runs and heads of
        // 8 events at UInt64.max - 7 ... UInt64.max are written as stored bytes.
        let backend = InMemoryKeyValueStore()
        let stream = try StreamName("edge-1")
        let positions = Array((UInt64.max - 7)...UInt64.max)
        var writes: [KeyWrite] = [
            .put(KeyLayout.globalHead, PositionValue.encode(.max)),
            .put(KeyLayout.secondaryIndex(.eventType, "Edge", position: .max), IndexRun.encode(count: 8)),
            .put(KeyLayout.streamIndex(stream, version: 8), StreamIndexRun.value(lastPosition: .max, count: 8)),
            .put(KeyLayout.streamHead(stream), StreamHead(version: 8, lastPosition: .max).encoded()),
        ]
        for (offset, position) in positions.enumerated() {
            writes.append(.put(KeyLayout.log(position), try storedRecord(version: UInt64(offset + 1), stream: "edge-1", type: "Edge")))
        }
        _ = try await backend.commit(KeyValueTransaction(writes: writes))
        let store = KeyValueEventStore(backend: backend)
        #expect(try await store.readEvents(ofType: "Edge", from: 1, limit: 100).map(\.position) == positions)
        #expect(try await store.read(stream).map(\.position) == positions)
    }

    // RecordCodec.swift:213 (identity, which idempotent re-sends judge by).
    @Test("the identity read of an event record of version 0 or UInt64.max is corruption naming its position")
    func impossibleIdentityVersions() throws {
        for version: UInt64 in [0, .max] {
            let bytes = try storedRecord(version: version)
            #expect(performing: { try EventRecord.identity(bytes, position: 11) }, throws: { error in
                isCorruption(error, containing: "event record at global position 11")
            })
        }
    }

    // RecordCodec.swift:273: a head that hides more versions than it has, or is at the last UInt64.
    @Test("a stream head hiding more versions than it has, or at UInt64.max, is corruption naming the stream")
    func impossibleStreamHeads() throws {
        let stream = try StreamName("order-1")
        let heads = [
            StreamHead(version: 3, lastPosition: 10, state: .softDeleted, hiddenThrough: 4),
            StreamHead(version: .max, lastPosition: 10),
        ]
        for head in heads {
            #expect(performing: { try StreamHead.decode(head.encoded(), stream: stream) }, throws: { error in
                isCorruption(error, containing: "stream head of \"order-1\"")
            })
        }
    }

    // RecordCodec.swift:259 (StreamHead.decode) and :357 (LeaseRecord.decode): a format byte the code does not know.
    @Test("a stream head or session lease of an unknown format is corruption naming the stream, not a value")
    func unknownHeadAndLeaseFormats() throws {
        let stream = try StreamName("order-1")
        for format: UInt8 in [0, 3, 0xFF] {
            var head = StreamHead(version: 3, lastPosition: 10).encoded()
            head[0] = format
            #expect(performing: { try StreamHead.decode(head, stream: stream) }, throws: { error in
                isCorruption(error, containing: "stream head of \"order-1\"")
            })
        }
        for format: UInt8 in [0, 2, 0xFF] {
            var lease = try LeaseRecord(sessionID: UUID(), expiresAt: Date(timeIntervalSince1970: 1_000), holder: "h")
                .encoded()
            lease[0] = format
            #expect(performing: { try LeaseRecord.decode(lease, stream: stream) }, throws: { error in
                isCorruption(error, containing: "session lease of \"order-1\"")
            })
        }
    }

    // StreamIndexRun.swift:52: a stream index key one byte too long (a longer name's key read as this one's).
    @Test("a stream index entry whose key is not prefix and version is corruption, not a run")
    func malformedStreamIndexKey() throws {
        let value = StreamIndexRun.value(lastPosition: 9, count: 2)
        for key: [UInt8] in [[3, 0x61, 0, 0, 0, 0, 0, 0, 0, 0, 5, 1], [3, 0x61, 0, 0, 0, 0, 0, 0, 0, 5]] {
            #expect(throws: EventStoreError.self) {
                try key.withUnsafeBytes { key in
                    try value.withUnsafeBytes { value in
                        try StreamIndexRun.decode(key: key, value: value, versionOffset: 3, location: "stream index")
                    }
                }
            }
        }
    }

    // TypedEvents.swift:240: upcasters that form a cycle end with an error instead of looping.
    @Test("upcasters that form a cycle throw codingFailed after at most 64 hops")
    func upcasterCycle() throws {
        let calls = Mutex(0)
        var registry = EventTypeRegistry()
        try registry.register(Hop.self)
        for (from, to) in [("CycleA", "CycleB"), ("CycleB", "CycleA")] {
            try registry.registerUpcaster(from: from) { data in
                // Stop a runaway loop from here, so that a missing cycle check fails instead of hanging.
                let count = calls.withLock { $0 += 1; return $0 }
                guard count <= 1_000 else { throw CancellationError() }
                return (to, data)
            }
        }
        let recorded = RecordedEvent(
            id: UUID(), stream: try StreamName("cycle-1"), version: 1, position: 1, recordedAt: Date(), type: "CycleA",
            data: Data(#"{"n":1}"#.utf8), metadata: EventMetadata())
        #expect(performing: { try registry.decode(recorded) }, throws: { error in
            guard case EventStoreError.codingFailed(_, let reason) = error else { return false }
            return reason.contains("cycle")
        })
        #expect(calls.withLock { $0 } <= 64)
    }

    // TypedEvents.swift:299: "Whether a type name (or an upcaster for it) is registered".
    @Test("a type name with only an upcaster counts as registered")
    func upcasterOnlyTypeIsRegistered() throws {
        var registry = EventTypeRegistry()
        try registry.registerUpcaster(from: "OldHop") { data in ("Hop", data) }
        #expect(registry.isRegistered("OldHop"))
        #expect(!registry.isRegistered("OtherHop"))
    }

    // TypedEvents.swift:284: decodeAsReplayed's codingFailed names the event's place in the append, as documented.
    @Test("a save of an event no replay can decode is refused with codingFailed naming its place; nothing is written")
    func saveOfUndecodableEventNamesItsPlace() async throws {
        let store = KeyValueEventStore.inMemory()
        var registry = EventTypeRegistry()
        try registry.register(Hop.self)
        try registry.register(UnreadableDeposit.self)
        let repository = AggregateRepository<HopCount>(store: store, registry: registry)
        let stream = try StreamName("unreadable-1")
        await #expect {
            try await repository.save([Hop(n: 1), UnreadableDeposit(amount: 5)], to: stream, loadedAt: 0)
        } throws: { error in
            guard case EventStoreError.codingFailed(let type, let reason) = error else { return false }
            return type == "UnreadableDeposit"
                && reason.contains("event 2 of 2 to append to stream \"unreadable-1\" (after its visible version 0)")
        }
        #expect(try await store.version(of: stream) == 0)
    }

    // RecordCodec.swift:318 and :326 (`bytes.count == 8`): a position value with a byte too many is damage.
    @Test("a global head or position value of 9 bytes is corruption naming where it is, not its first 8 bytes")
    func positionValueOfNineBytes() async throws {
        let nine = PositionValue.encode(5) + [0]
        #expect(throws: EventStoreError.self) { try PositionValue.decode(nine, location: "the global head") }
        #expect(throws: EventStoreError.self) {
            try nine.withUnsafeBytes { try PositionValue.decode($0, location: "the global head") }
        }
        let backend = InMemoryKeyValueStore()
        _ = try await backend.commit(KeyValueTransaction(writes: [.put(KeyLayout.globalHead, nine)]))
        let store = KeyValueEventStore(backend: backend)
        await #expect(performing: { try await store.lastPosition() }, throws: { error in
            isCorruption(error, containing: "global head")
        })
    }
}
