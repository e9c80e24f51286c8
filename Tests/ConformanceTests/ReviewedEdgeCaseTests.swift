// Edge cases of the event-stream layer found in the seventh session's review, each of which failed before its fix:
// retries of the append that recreated a soft-deleted stream, empty appends to a deleted stream, and inputs the
// record formats cannot hold (over-long property keys and holder names, session timeouts and maxAge past Int64
// nanoseconds, a zero aggregate batch size). The crash cases run in a child process (exit tests).

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Edge cases found in review: retries after recreation, bounds, over-long inputs")
struct ReviewedEdgeCaseTests {
    /// A soft-deleted stream is recreated with `.noStream` (documented in DeletionMode.soft). Re-sending that very
    /// append (same ids, same expected version) must be an idempotent retry returning the original result, as every
    /// other retry is; it fails with wrongExpectedVersion because the retry check compares `.noStream` with the
    /// version before the first event (3) instead of the visible version the original append met (0).
    @Test("re-sending the .noStream append that recreated a soft-deleted stream is idempotent", arguments: Backends.all)
    func noStreamRetryAfterSoftDeleteRecreate(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            _ = try await store.append(makeEvents(3), to: stream, expectedVersion: .noStream)
            _ = try await store.delete(stream, expectedVersion: .exact(3), mode: .soft)
            let batch = makeEvents(2, label: "again")
            let original = try await store.append(batch, to: stream, expectedVersion: .noStream)
            #expect(original.version == 5)
            let retry = try await store.append(batch, to: stream, expectedVersion: .noStream)
            #expect(retry == original)
            #expect(try await store.read(stream).map(\.version) == [4, 5])
        }
    }

    /// The same with `.exact(0)`, which the recreating append met (the stream read as version 0).
    @Test("re-sending the .exact(0) append that recreated a soft-deleted stream is idempotent", arguments: Backends.all)
    func exactZeroRetryAfterSoftDeleteRecreate(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            _ = try await store.append(makeEvents(3), to: stream, expectedVersion: .noStream)
            _ = try await store.delete(stream, expectedVersion: .any, mode: .soft)
            let batch = [makeEvent("again")]
            let original = try await store.append(batch, to: stream, expectedVersion: .exact(0))
            let retry = try await store.append(batch, to: stream, expectedVersion: .exact(0))
            #expect(retry == original)
        }
    }

    /// An empty append to a soft-deleted stream succeeds with `.noStream` (the stream reads as version 0) but
    /// returns the hidden head version (3) as "the stream's version after the append", which version(of:) denies
    /// and which, used as the next expected version, fails (KeyValueEventStore.swift buildTransaction: `version`
    /// starts from the raw head version, not the visible one).
    @Test("an empty append to a soft-deleted stream returns the version it reads at", arguments: Backends.all)
    func emptyAppendToSoftDeletedStream(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            _ = try await store.append(makeEvents(3), to: stream, expectedVersion: .noStream)
            _ = try await store.delete(stream, expectedVersion: .any, mode: .soft)
            let result = try await store.append([], to: stream, expectedVersion: .noStream)
            #expect(result.version == (try await store.version(of: stream)))
            _ = try await store.append([makeEvent("next")], to: stream, expectedVersion: .exact(result.version))
        }
    }

    /// A metadata property key longer than 65,535 UTF-8 bytes passes validation (it is well within
    /// maximumEventSize) and then traps in EventRecord.prepare (`UInt16(value.utf8.count)` in ByteWriter.string16),
    /// killing the process instead of throwing a typed error. Run in a child process (an exit test).
    @Test("an over-long metadata property key is a typed error, not a crash")
    func overlongPropertyKeyDoesNotCrash() async {
        await #expect(processExitsWith: .success) {
            let store = KeyValueEventStore.inMemory()
            let stream = try StreamName("review-keys")
            let key = String(repeating: "k", count: 70_000)
            let event = EventData(
                type: "Tagged", data: Data("x".utf8), metadata: EventMetadata(properties: [key: "v"]))
            do {
                _ = try await store.append([event], to: stream, expectedVersion: .any)
                exit(3)  // accepted: the record format cannot hold the key
            } catch EventStoreError.invalidArgument {
                // Refused, and nothing is stored.
                guard try await store.read(stream).isEmpty else { exit(2) }
            }
        }
    }

    /// About 300 years: long enough to overflow a nanosecond Int64 deadline counted from 1970, as a caller wanting
    /// a session that "never expires" might ask for.
    static let centuries: Duration = .seconds(300 * 365 * 86_400)

    /// A very long session timeout is not refused by openSession. The page file computes the lease expiry with a
    /// wrapping add (`max(1, now &+ $0.nanoseconds)`, PageFileKeyValueStore.swift:398), so the lease is written
    /// already expired: the session holds nothing, another writer appends to the "locked" stream, and the
    /// session's own append fails as expired.
    @Test("a session timeout over 100 years is refused, and one of 100 years really holds the stream (page file)")
    func centuriesSessionTimeoutOnPageFile() async throws {
        try await Backend.pageFile.withStore { store in
            let stream = try uniqueStream()
            await #expect {
                _ = try await store.openSession(on: stream, sessionTimeout: Self.centuries, openTimeout: .zero)
            } throws: { error in
                guard case EventStoreError.invalidArgument(let message) = error else { return false }
                return message.contains("100 years")
            }
            // The longest timeout allowed really holds the stream.
            let session = try await store.openSession(
                on: stream, sessionTimeout: .seconds(100 * 365 * 86_400), openTimeout: .zero)
            await #expect(throws: EventStoreError.self, "another writer must find the stream locked") {
                _ = try await store.append([makeEvent("intruder")], to: stream, expectedVersion: .any)
            }
            #expect(try await store.read(stream).isEmpty)
            _ = try await session.append([makeEvent("holder")], expectedVersion: .any)
            try await session.close()
        }
    }

    /// The same input on the in-memory backend traps (`now + $0.nanoseconds` overflows in
    /// InMemoryKeyValueStore.apply, InMemoryKeyValueStore.swift:180), killing the process. Run in a child process.
    @Test("a very long session timeout does not crash the in-memory store")
    func centuriesSessionTimeoutInMemoryDoesNotCrash() async {
        await #expect(processExitsWith: .success) {
            try await expectSessionRefused(KeyValueEventStore.inMemory(), timeout: .seconds(300 * 365 * 86_400))
        }
    }

    /// `.seconds(Int64.max)` traps on every backend before the backend is reached: LeaseRecord.encoded()
    /// converts the expiry in microseconds to Int64 (RecordCodec.swift:237). Run in a child process.
    @Test("a session timeout of Int64.max seconds is a typed error, not a crash")
    func maximalSessionTimeoutDoesNotCrash() async {
        await #expect(processExitsWith: .success) {
            try await expectSessionRefused(KeyValueEventStore.inMemory(), timeout: .seconds(Int64.max))
        }
    }

    /// A holder name longer than 65,535 UTF-8 bytes is accepted by KeyValueEventStore.init and traps when a
    /// session writes its lease (`UInt16(value.utf8.count)` in ByteWriter.string16, via LeaseRecord.encoded).
    @Test("an over-long holder name is a typed error, not a crash")
    func overlongHolderNameDoesNotCrash() async {
        await #expect(processExitsWith: .success) {
            let store = KeyValueEventStore(
                backend: InMemoryKeyValueStore(), holderName: String(repeating: "h", count: 70_000))
            try await expectSessionRefused(store, timeout: .seconds(30))
        }
    }

    /// A maxAge longer than about 292 years passes StreamMetadata.validate() but is stored saturated to Int64.max
    /// nanoseconds (StreamMetadataRecord.encode, via Duration.nanoseconds), so the
    /// metadata read back is not the metadata set. Too long must be a typed error, or be kept as given.
    @Test("a maxAge past Int64 nanoseconds is refused, and the longest one allowed reads back as set", arguments: Backends.all)
    func longMaxAgeRoundTrips(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            await #expect {
                try await store.setMetadata(StreamMetadata(maxAge: .seconds(20_000_000_000)), for: stream)
            } throws: { error in
                guard case EventStoreError.invalidArgument(let message) = error else { return false }
                return message.contains("maxAge")
            }
            let longest = StreamMetadata(maxAge: .nanoseconds(Int64.max))
            try await store.setMetadata(longest, for: stream)
            #expect(try await store.metadata(of: stream) == longest)
        }
    }

    /// `AggregateRepository(readBatchSize: 0)` is accepted, and `load` then spins forever: each round reads with
    /// limit 0, gets no events, and `events.count < limit` (0 < 0) never ends the loop (Aggregate.swift, replay).
    /// A bad batch size must be a typed error (or be clamped), not a hang. The 10-second bound only detects the hang.
    @Test("loading an aggregate with readBatchSize 0 is refused instead of spinning")
    func aggregateLoadWithZeroBatchSizeEnds() async throws {
        let store = KeyValueEventStore.inMemory()
        var registry = EventTypeRegistry()
        try registry.register(ReviewNoted.self)
        let stream = try uniqueStream("notebook")
        _ = try await store.append(
            [try registry.encode(ReviewNoted(text: "hello"))], to: stream, expectedVersion: .noStream)
        let repository = AggregateRepository<ReviewNotebook>(store: store, registry: registry, readBatchSize: 0)
        let outcome = await withTaskGroup(of: String?.self) { group -> String in
            group.addTask {
                do {
                    return "loaded \(try await repository.load(stream).version)"
                } catch is EventStoreError {
                    return "refused"
                } catch {
                    return "hung until cancelled (\(type(of: error)))"
                }
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(10))
                return nil
            }
            var result = "no result"
            for await value in group {
                if let value {
                    result = value
                    break
                }
                group.cancelAll()
            }
            group.cancelAll()
            return result
        }
        #expect(outcome == "refused", "load: \(outcome)")
    }
}

private struct ReviewNoted: DomainEvent {
    static let eventType = "ReviewNoted"
    var text: String
}

private struct ReviewNotebook: Aggregate {
    var notes = 0
    init() {}
    mutating func apply(_ event: any DomainEvent) { notes += 1 }
}

/// In an exit test's child: opening a session with `timeout` must fail with `invalidArgument` (anything else thrown
/// fails the child; an accepted session exits with status 3).
private func expectSessionRefused(_ store: KeyValueEventStore, timeout: Duration) async throws {
    do {
        let session = try await store.openSession(
            on: try StreamName("refused-session"), sessionTimeout: timeout, openTimeout: .zero)
        try await session.close()
        exit(3)  // accepted: the lease record cannot hold it
    } catch EventStoreError.invalidArgument {
        // Refused with a clear error.
    }
}
