// Conformance: KurrentDB's idempotent-append semantics.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Conformance: idempotency")
struct IdempotencyConformanceTests {
    @Test("re-sending the same batch with the same expected version returns the original result", arguments: Backends.all)
    func sameBatchResent(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            _ = try await store.append(makeEvents(2), to: stream, expectedVersion: .noStream)
            let batch = makeEvents(3)
            let original = try await store.append(batch, to: stream, expectedVersion: .exact(2))
            for _ in 0..<3 {
                #expect(try await store.append(batch, to: stream, expectedVersion: .exact(2)) == original)
            }
            #expect(try await store.append(batch, to: stream, expectedVersion: .any) == original)
            #expect(try await store.version(of: stream) == 5)
            #expect(try await store.lastPosition() == 5)
        }
    }

    @Test("re-sending a .noStream batch is idempotent", arguments: Backends.all)
    func noStreamResent(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let batch = makeEvents(2)
            let original = try await store.append(batch, to: stream, expectedVersion: .noStream)
            #expect(try await store.append(batch, to: stream, expectedVersion: .noStream) == original)
            #expect(try await store.read(stream).count == 2)
        }
    }

    @Test("re-sending a prefix of a committed batch is a no-op", arguments: Backends.all)
    func prefixResent(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let batch = makeEvents(4)
            _ = try await store.append(batch, to: stream, expectedVersion: .noStream)
            let prefix = try await store.append(Array(batch.prefix(2)), to: stream, expectedVersion: .noStream)
            #expect(prefix == AppendResult(version: 2, positions: 1..<3))
            #expect(try await store.version(of: stream) == 4)
            #expect(try await store.lastPosition() == 4)
        }
    }

    @Test("a superset of a committed batch is an error and writes nothing", arguments: Backends.all)
    func supersetIsError(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let batch = makeEvents(2)
            _ = try await store.append(batch, to: stream, expectedVersion: .noStream)
            let superset = batch + makeEvents(1, label: "extra")
            do {
                _ = try await store.append(superset, to: stream, expectedVersion: .noStream)
                Issue.record("a superset of a committed batch must fail")
            } catch EventStoreError.duplicateEventID(let id, let recordedIn, let version) {
                #expect(id == batch[0].id)
                #expect(recordedIn == stream)
                #expect(version == 1)
            }
            #expect(try await store.version(of: stream) == 2)
            #expect(try await store.lastPosition() == 2)
        }
    }

    @Test("a recorded event id inside a different batch is duplicateEventID", arguments: Backends.all)
    func duplicateInDifferentBatch(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let other = try uniqueStream("other")
            let original = makeEvents(3)
            _ = try await store.append(original, to: stream, expectedVersion: .noStream)
            // The id of version 2, reused in a new batch on another stream.
            do {
                _ = try await store.append(
                    [makeEvent("x"), original[1]], to: other, expectedVersion: .any)
                Issue.record("a reused event id must fail")
            } catch EventStoreError.duplicateEventID(let id, let recordedIn, let version) {
                #expect(id == original[1].id)
                #expect(recordedIn == stream)
                #expect(version == 2)
            }
            // Reused alone on another stream.
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append([original[0]], to: other, expectedVersion: .any)
            }
            // Reused in a later, different batch of the same stream, at the version the stream is at: the id is the
            // conflict, not the version (it was reported as wrongExpectedVersion, expected 3, actual 3).
            await #expect {
                _ = try await store.append([original[2], makeEvent("y")], to: stream, expectedVersion: .exact(3))
            } throws: { error in
                guard case EventStoreError.duplicateEventID(let id, _, let version) = error else { return false }
                return id == original[2].id && version == 3
            }
            #expect(try await store.version(of: other) == 0)
            #expect(try await store.lastPosition() == 3)
        }
    }

    @Test("a re-sent batch with a different expected version is a conflict", arguments: Backends.all)
    func resentWithOtherExpectation(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            _ = try await store.append(makeEvents(1), to: stream, expectedVersion: .noStream)
            let batch = makeEvents(2)
            let result = try await store.append(batch, to: stream, expectedVersion: .exact(1))
            // .streamExists held for the original append too: the re-send is idempotent.
            #expect(try await store.append(batch, to: stream, expectedVersion: .streamExists) == result)
            // An expectation the stream does not meet is wrongExpectedVersion, with the version it is at.
            await #expect {
                _ = try await store.append(batch, to: stream, expectedVersion: .exact(0))
            } throws: { error in
                guard case EventStoreError.wrongExpectedVersion(_, .exact(0), 3) = error else { return false }
                return true
            }
            // One the stream meets now but the original did not is no version conflict: the recorded ids refuse it.
            await #expect {
                _ = try await store.append(batch, to: stream, expectedVersion: .exact(3))
            } throws: { error in
                guard case EventStoreError.duplicateEventID(let id, _, 2) = error else { return false }
                return id == batch[0].id
            }
            #expect(try await store.version(of: stream) == 3)
        }
    }
}
