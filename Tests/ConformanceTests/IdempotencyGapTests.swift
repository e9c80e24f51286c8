// Idempotency checks that no test could fail: a review (twenty-third session) removed each check by hand and the
// whole conformance suite stayed green. These tests fail without them.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Conformance: idempotent re-sends, the checks no other test caught")
struct IdempotencyGapTests {
    /// A re-send whose first event opens an earlier append but whose second event was recorded later in the same
    /// stream (not at the next version) is not a retry of anything: it must be refused, not answered with a result
    /// that claims the second event sits at version 2.
    @Test("a re-send whose later event was recorded at a non-consecutive version is duplicateEventID", arguments: Backends.all)
    func nonConsecutiveResendIsDuplicate(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let first = makeEvents(2, label: "first")
            let later = makeEvents(1, label: "later")
            _ = try await store.append(first, to: stream, expectedVersion: .noStream)  // versions 1-2, positions 1-2
            _ = try await store.append(later, to: stream, expectedVersion: .exact(2))  // version 3, position 3
            // first[0] is at version 1; later[0] is at version 3, not at version 2.
            let mixed = [first[0], later[0]]
            do {
                let result = try await store.append(mixed, to: stream, expectedVersion: .noStream)
                Issue.record("a batch that is no prefix of one append must fail, got \(result)")
            } catch EventStoreError.duplicateEventID(let id, _, _) {
                #expect(id == first[0].id)
            }
            #expect(try await store.version(of: stream) == 3)
            #expect(try await store.lastPosition() == 3)
        }
    }

    /// The retry of a stream's first append must state an expectation that append met (version 0). Stating another
    /// one is a conflict, as in KurrentDB, not a silent success.
    @Test("re-sending a stream's first batch with another expected version is refused", arguments: Backends.all)
    func firstBatchResentWithOtherExpectation(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let batch = makeEvents(2)
            _ = try await store.append(batch, to: stream, expectedVersion: .noStream)
            do {
                let result = try await store.append(batch, to: stream, expectedVersion: .exact(5))
                Issue.record("a re-send expecting version 5 of a stream at version 2 must fail, got \(result)")
            } catch EventStoreError.wrongExpectedVersion(_, let expected, let actual) {
                #expect(expected == .exact(5))
                #expect(actual == 2)
            }
            do {
                let result = try await store.append(batch, to: stream, expectedVersion: .streamExists)
                Issue.record("the original append did not expect an existing stream, got \(result)")
            } catch EventStoreError.duplicateEventID(let id, _, let version) {
                #expect(id == batch[0].id)
                #expect(version == 1)
            }
            #expect(try await store.version(of: stream) == 2)
        }
    }
}
