// Retention and consumer defects found in the eighth session's review, each of which failed before its fix:
// - the retry of an append that recreated a soft-deleted stream was refused once a second soft delete had moved the
//   head's deletion point past it (the head keeps only the last one);
// - reads trusted the index: a damaged stream index run returned another stream's events, and a run pointing back
//   to an earlier version made a stream subscription deliver that version again and again; a damaged category run
//   returned another category's event. The record must hold what the index names, or it is corruption;
// - invalid stored metadata (maxCount 0) and an impossible stream head (hiddenThrough past the version) were
//   trusted, and scavenge removed every event of the stream on their word;
// - a maxAge with a fraction of a nanosecond was accepted and stored as a different value (0, which is refused);
// - damaged bytes trapped on integer overflow: a head hiding through UInt64.max, a record of version 0.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Retention and consumers: retries after deletions, damaged indexes and metadata")
struct RetentionConsumerReviewTests {
    func damage(_ store: KeyValueEventStore, _ key: Key, _ value: [UInt8]) async throws {
        _ = try await store.backend.commit(KeyValueTransaction(writes: [.put(key, value)]))
    }

    @Test("re-sending the append that recreated a stream is idempotent after a second soft delete", arguments: Backends.all)
    func retryAfterSecondSoftDelete(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            _ = try await store.append(makeEvents(3), to: stream, expectedVersion: .noStream)
            _ = try await store.delete(stream, expectedVersion: .exact(3), mode: .soft)
            let batch = [makeEvent("recreated")]
            let original = try await store.append(batch, to: stream, expectedVersion: .noStream)
            _ = try await store.delete(stream, expectedVersion: .exact(4), mode: .soft)
            #expect(try await store.append(batch, to: stream, expectedVersion: .noStream) == original)
        }
    }

    @Test("a stream index run naming another stream's events is corruption, not its events", arguments: Backends.all)
    func runNamingAnotherStream(backend: Backend) async throws {
        try await backend.withStore { store in
            let (a, b) = (try StreamName("acct-a"), try StreamName("acct-b"))
            _ = try await store.append(makeEvents(3, label: "a"), to: a, expectedVersion: .noStream)
            _ = try await store.append(makeEvents(3, label: "b"), to: b, expectedVersion: .noStream)
            try await damage(store, KeyLayout.streamIndex(a, version: 3), StreamIndexRun.value(lastPosition: 6, count: 3))
            await #expect {
                let events = try await store.read(a)
                Issue.record("read returned \(events.map { "\($0.stream) v\($0.version)" })")
            } throws: { error in
                if case EventStoreError.corrupted = error { return true }
                return false
            }
        }
    }

    @Test("a stream subscription never repeats a version over a damaged run", arguments: Backends.all)
    func subscriptionOverDamagedRun(backend: Backend) async throws {
        try await backend.withStore { store in
            let a = try StreamName("acct-a")
            for index in 0..<3 { _ = try await store.append([makeEvent("a\(index)")], to: a, expectedVersion: .any) }
            try await damage(store, KeyLayout.streamIndex(a, version: 3), StreamIndexRun.value(lastPosition: 2, count: 1))
            var versions: [UInt64] = []
            do {
                var iterator = store.subscribe(to: a, bufferSize: 1).makeAsyncIterator()
                while versions.count < 5, let message = try await iterator.next() {
                    guard case .event(let event) = message else { break }
                    versions.append(event.version)
                }
            } catch EventStoreError.corrupted {}
            #expect(zip(versions, versions.dropFirst()).allSatisfy { $0 < $1 }, "delivered versions \(versions)")
        }
    }

    @Test("a category read never returns another category's event", arguments: Backends.all)
    func categoryRunNamingAnotherCategory(backend: Backend) async throws {
        try await backend.withStore { store in
            _ = try await store.append([makeEvent("o")], to: try StreamName("order-1"), expectedVersion: .any)
            _ = try await store.append([makeEvent("p", type: "Paid")], to: try StreamName("payment-1"), expectedVersion: .any)
            try await damage(store, KeyLayout.secondaryIndex(.category, "order", position: 2), [])
            do {
                let events = try await store.readCategory("order", from: 1, limit: 10)
                #expect(events.allSatisfy { $0.stream.category == "order" }, "\(events.map(\.stream))")
            } catch EventStoreError.corrupted {}
        }
    }

    @Test("invalid stored retention records are corruption; scavenge removes nothing on their word",
          arguments: Backends.all)
    func invalidStoredRetentionRecords(backend: Backend) async throws {
        try await backend.withStore { store in
            let capped = try uniqueStream()
            _ = try await store.append(makeEvents(5), to: capped, expectedVersion: .noStream)
            var metadata: [UInt8] = [1, 1]  // format 1, maxCount present ...
            metadata.appendBigEndian(0)  // ... and 0, which setMetadata refuses
            try await damage(store, KeyLayout.streamMetadata(capped), metadata)
            await #expect(throws: EventStoreError.self) { _ = try await store.metadata(of: capped) }
            let hidden = try uniqueStream()
            _ = try await store.append(makeEvents(3), to: hidden, expectedVersion: .noStream)
            var head: [UInt8] = [2]  // format 2: version 3, last position 8, live, hiddenThrough 10 > version
            head.appendBigEndian(3); head.appendBigEndian(8); head.append(0); head.appendBigEndian(10)
            try await damage(store, KeyLayout.streamHead(hidden), head)
            _ = try? await store.scavenge()
            let survivors = try await store.readAll(from: 1, limit: 100).count
            #expect(survivors == 8)
        }
    }

    @Test("a maxAge with a fraction of a nanosecond is refused, or reads back as set", arguments: Backends.all)
    func subNanosecondMaxAge(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let set = StreamMetadata(maxAge: .nanoseconds(0.5))
            do { try await store.setMetadata(set, for: stream) } catch EventStoreError.invalidArgument { return }
            let stored = try await store.metadata(of: stream)
            #expect(stored == set, "stored \(stored)")
            #expect(throws: Never.self) { try stored.validate() }
        }
    }

    @Test("a stream head hiding through UInt64.max is a typed error, not a trap")
    func hiddenThroughAtMax() async {
        await #expect(processExitsWith: .success) {
            let store = KeyValueEventStore.inMemory()
            let stream = try StreamName("damaged-head")
            _ = try await store.append(makeEvents(3), to: stream, expectedVersion: .noStream)
            var head: [UInt8] = [2]
            head.appendBigEndian(3); head.appendBigEndian(3); head.append(0); head.appendBigEndian(.max)
            _ = try await store.backend.commit(KeyValueTransaction(writes: [.put(KeyLayout.streamHead(stream), head)]))
            do { _ = try await store.read(stream) } catch EventStoreError.corrupted {}
        }
    }

    @Test("a retry meeting a record of version 0 is a typed error, not a trap")
    func retryOverVersionZeroRecord() async {
        await #expect(processExitsWith: .success) {
            let store = KeyValueEventStore.inMemory()
            let stream = try StreamName("damaged-record")
            let event = makeEvent("x")
            _ = try await store.append([event], to: stream, expectedVersion: .noStream)
            guard var record = try await store.backend.get(KeyLayout.log(1))?.value else { exit(2) }
            for index in 1...8 { record[index] = 0 }  // the record's u64 version becomes 0
            _ = try await store.backend.commit(KeyValueTransaction(writes: [.put(KeyLayout.log(1), record)]))
            do { _ = try await store.append([event], to: stream, expectedVersion: .noStream) } catch EventStoreError.corrupted {}
        }
    }
}
