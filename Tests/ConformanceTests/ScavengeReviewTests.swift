// Review of scavenge: a damaged index must not make it delete live events.
import EventStore
@testable import EventStoreKV
import Foundation
import KeyValueTestSupport
import Testing

@Suite("Scavenge review")
struct ScavengeReviewTests {
    @Test("scavenge never removes another stream's visible events on the word of a damaged stream index run",
          arguments: Backends.all)
    func scavengeTrustsDamagedRun(backend: Backend) async throws {
        try await backend.withStore { store in
            let (gone, kept) = (try StreamName("gone-1"), try StreamName("kept-1"))
            _ = try await store.append(makeEvents(3, label: "g"), to: gone, expectedVersion: .noStream)  // positions 1...3
            _ = try await store.append(makeEvents(3, label: "k"), to: kept, expectedVersion: .noStream)  // positions 4...6
            _ = try await store.delete(gone, expectedVersion: .exact(3), mode: .soft)
            // Damage: gone-1's only run now names positions 4...6, which hold kept-1's events.
            _ = try await store.backend.commit(KeyValueTransaction(writes: [
                .put(KeyLayout.streamIndex(gone, version: 3), StreamIndexRun.value(lastPosition: 6, count: 3)),
            ]))
            // Scavenge reports the damage where it is, as reads do, and does not act on it.
            await #expect {
                try await store.scavenge()
            } throws: { error in
                guard case EventStoreError.corrupted(let location, _) = error else { return false }
                return location == "global position 4"
            }
            #expect(try await store.readAll(from: 1, limit: 3).map(\.stream) == [gone, gone, gone], "nothing committed")
            let survivors = try await store.readAll(from: 1, limit: 100).filter { $0.stream == kept }
            #expect(survivors.map(\.version) == [1, 2, 3], "kept-1's acknowledged events in the log after scavenge")
            #expect(try await store.read(kept).map(\.version) == [1, 2, 3])
        }
    }
}
