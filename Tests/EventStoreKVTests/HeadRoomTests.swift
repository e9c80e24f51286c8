// Stored heads near the last UInt64: no store reaches them, but damaged bytes can say so, and StreamHead and
// PositionValue decode them (reads and scavenge must not trap over them). An append or a deletion after such a head
// must then refuse with a typed error naming the head, not trap on the version or position arithmetic. Found in
// the eleventh session's review (an append of 2 events after a head at UInt64.max - 1 died with SIGILL).

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Heads with no room left")
struct HeadRoomTests {
    /// A store whose head for `stream` (if given) and global head are written as stored bytes.
    private func store(streamHead: (StreamName, UInt64)?, globalHead: UInt64) async throws -> KeyValueEventStore {
        let backend = InMemoryKeyValueStore()
        var writes: [KeyWrite] = [.put(KeyLayout.globalHead, PositionValue.encode(globalHead))]
        if let (stream, version) = streamHead {
            writes.append(.put(KeyLayout.streamHead(stream), StreamHead(version: version, lastPosition: 1).encoded()))
        }
        _ = try await backend.commit(KeyValueTransaction(writes: writes))
        return KeyValueEventStore(backend: backend)
    }

    private func events(_ count: Int) -> [EventData] {
        (0..<count).map { EventData(type: "T", data: Data([UInt8($0)])) }
    }

    @Test("an append after a stream head at UInt64.max - 1 is refused as corruption of that head")
    func streamHeadNearLastVersion() async throws {
        let stream = try StreamName("near-max")
        let store = try await store(streamHead: (stream, .max - 1), globalHead: 1)
        do {
            _ = try await store.append(events(2), to: stream, expectedVersion: .any)
            Issue.record("appended past the last version")
        } catch EventStoreError.corrupted(let location, _) {
            #expect(location.contains("near-max"), "\(location)")
        }
        // Nothing was written, and a stream with room still takes appends.
        #expect(try await store.lastPosition() == 1)
        _ = try await store.append(events(1), to: try StreamName("other"), expectedVersion: .noStream)
        #expect(try await store.lastPosition() == 2)
    }

    static let nearLastPositions: [UInt64] = [.max, .max - 1, .max - 2]

    @Test("an append after a global head at or near UInt64.max is refused as corruption of the global head",
          arguments: nearLastPositions)
    func globalHeadNearLastPosition(head: UInt64) async throws {
        let store = try await store(streamHead: nil, globalHead: head)
        do {
            _ = try await store.append(events(3), to: try StreamName("s"), expectedVersion: .any)
            Issue.record("appended past the last position")
        } catch EventStoreError.corrupted(let location, let detail) {
            #expect(location == "the global head")
            #expect(detail == "\(head) leaves no room for 3 more events")
        }
        #expect(try await store.lastPosition() == head)
    }

    @Test("an empty append still reports its version one below the last, and is refused only at the last position")
    func emptyAppendsNearTheEnd() async throws {
        let stream = try StreamName("full")
        let room = try await store(streamHead: (stream, .max - 1), globalHead: .max - 1)
        let result = try await room.append([], to: stream, expectedVersion: .exact(.max - 1))
        #expect(result.version == .max - 1 && result.positions.isEmpty)
        let none = try await store(streamHead: (stream, .max - 1), globalHead: .max)
        do {
            _ = try await none.append([], to: stream, expectedVersion: .exact(.max - 1))
            Issue.record("an empty append after the last position reported a position range")
        } catch EventStoreError.corrupted(let location, _) {
            #expect(location == "the global head")
        }
    }

    @Test("deleting a stream after a global head at UInt64.max is refused as corruption, not a trap")
    func deletionAfterGlobalHeadAtLastPosition() async throws {
        let stream = try StreamName("doomed")
        let store = try await store(streamHead: (stream, 3), globalHead: .max)
        do {
            _ = try await store.delete(stream, expectedVersion: .any, mode: .soft)
            Issue.record("deleted with no position left for the deletion's record")
        } catch EventStoreError.corrupted(let location, _) {
            #expect(location == "the global head")
        }
    }
}
