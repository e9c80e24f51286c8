// When the log's last positions are scavenged, a caught-up subscription to the log reports the log's head, and a
// projection checkpoints it, as KurrentDB's $all read at the end reports the end of the log past scavenged records
// (twentieth session's review: both stopped at the last surviving event, below the head, until another append; a
// consumer waiting for its projection to reach a position it appended waited that long).

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Subscriptions: a scavenged tail of the log", .timeLimit(.minutes(2)))
struct ScavengedTailTests {
    @Test("a subscription and a projection catch up through a scavenged tail of the log", arguments: Backends.all)
    func caughtUpThroughScavengedTail(backend: Backend) async throws {
        try await backend.withStore { store in
            _ = try await store.append(samples(3), to: try stream("kept-1"), expectedVersion: .noStream)
            let hidden = try stream("hidden-1")
            _ = try await store.append(samples(3), to: hidden, expectedVersion: .noStream)  // positions 4...6
            try await store.setMetadata(StreamMetadata(truncateBefore: 100), for: hidden)
            _ = try await store.scavenge()
            #expect(try await store.lastPosition() == 6)
            var iterator = store.subscribeToAll().makeAsyncIterator()
            #expect(try await iterator.nextEvents(3).map(\.position) == [1, 2, 3])
            let caughtUp = try await iterator.next()
            #expect(caughtUp == .caughtUp(through: 6))
            let projection = CheckpointedProjection(store: store, consumer: "tail")
            let checkpoint = try await projection.run(until: .whenCaughtUp) { _ in }
            #expect(checkpoint == 6)
        }
    }
}
