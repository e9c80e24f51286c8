// An idempotent re-send reads the recorded event's identity (id, stream, version) and, like every other decode of
// an event record, must refuse a record of an unknown format as corruption naming its position, rather than judge
// the re-send against bytes it cannot vouch for (found by mutation testing, twenty-fourth session).

import EventStore
@testable import EventStoreKV
import Foundation
import KeyValueTestSupport
import Testing

@Suite("An idempotent re-send refuses a record of an unknown format")
struct ResendRecordFormatTests {
    @Test("a re-send whose recorded event has an unknown format byte gets corrupted naming the position",
          arguments: Backends.all)
    func unknownFormatOnResend(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try StreamName("resent-1")
            let events = makeEvents(1)
            let appended = try await store.append(events, to: stream, expectedVersion: .noStream)
            let position = try #require(appended.positions.first)
            var record = try #require(try await store.backend.get(KeyLayout.log(position))).value
            record[0] = 0x7F
            _ = try await store.backend.commit(KeyValueTransaction(writes: [.put(KeyLayout.log(position), record)]))

            await #expect { try await store.append(events, to: stream, expectedVersion: .noStream) } throws: { error in
                guard case EventStoreError.corrupted(let location, let detail) = error else { return false }
                return location.contains("\(position)") && detail.contains("format")
            }
        }
    }
}
