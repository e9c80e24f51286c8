// A soft delete is KurrentDB's truncateBefore = last version + 1, which replaces the stream's $tb, so appending to
// the stream afterwards makes a stream whose new events read back (twentieth session's review: a truncateBefore set
// before the soft delete survived it and hid the recreating events, though version(of:) said 4).

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Retention: a soft delete ends an earlier truncateBefore")
struct SoftDeleteTruncateTests {
    @Test(
        "a stream recreated after a soft delete reads its new events, whatever truncateBefore was before",
        arguments: Backends.all)
    func recreatedEventsAreVisible(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("acct")
            _ = try await store.append(makeEvents(3), to: stream, expectedVersion: .noStream)
            // Hide everything written so far (and, in KurrentDB's terms, set $tb = 100), and keep 50 at most.
            try await store.setMetadata(StreamMetadata(maxCount: 50, truncateBefore: 100), for: stream)
            _ = try await store.delete(stream, expectedVersion: .exact(3), mode: .soft)
            #expect(try await store.metadata(of: stream) == StreamMetadata(maxCount: 50), "only truncateBefore goes")
            let recreated = try await store.append([makeEvent("new")], to: stream, expectedVersion: .noStream)
            #expect(recreated.version == 4)
            #expect(try await store.version(of: stream) == 4)
            #expect(try await store.read(stream).map(\.label) == ["new"])
        }
    }

    @Test("a hard delete leaves the metadata as it was", arguments: Backends.all)
    func hardDeleteKeepsMetadata(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("acct")
            _ = try await store.append(makeEvents(2), to: stream, expectedVersion: .noStream)
            try await store.setMetadata(StreamMetadata(truncateBefore: 2), for: stream)
            _ = try await store.delete(stream, expectedVersion: .any, mode: .hard)
            #expect(try await store.metadata(of: stream) == StreamMetadata(truncateBefore: 2))
        }
    }
}
