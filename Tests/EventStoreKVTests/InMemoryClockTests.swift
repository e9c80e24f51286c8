// The in-memory store judges TTL expiry by a clock its creator may replace, so tests can hold a lease still (or move
// it on) whatever the real time: a loaded test run no longer loses a lease because its renewals were starved.

import EventStore
import Foundation
import Synchronization
import Testing

@testable import EventStoreKV

@Suite("In-memory store: TTL expiry follows the store's clock")
struct InMemoryClockTests {
    @Test("a TTL key lives until the store's clock passes its expiry, and no longer")
    func ttlFollowsTheClock() async throws {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let offset = Mutex<TimeInterval>(0)
        let backend = InMemoryKeyValueStore(clock: { start.addingTimeInterval(offset.withLock { $0 }) })
        _ = try await backend.commit(KeyValueTransaction(writes: [.put([1], [7], ttl: .seconds(30)), .put([2], [8])]))

        offset.withLock { $0 = 29.999 }
        #expect(try await backend.get([1])?.value == [7])
        #expect(try await backend.scan(KeyRange(from: [], to: nil), direction: .forward, limit: 10).map(\.key) == [[1], [2]])

        offset.withLock { $0 = 30 }
        #expect(try await backend.get([1]) == nil)
        #expect(try await backend.scan(KeyRange(from: [], to: nil), direction: .forward, limit: 10).map(\.key) == [[2]])
        // An expired key is absent to conditions too.
        _ = try await backend.commit(KeyValueTransaction(conditions: [.absent([1])], writes: [.put([1], [9])]))
        #expect(try await backend.get([1])?.value == [9])
        try await backend.close()
    }

    @Test("a clock reading far outside what nanoseconds since 1970 can hold saturates instead of trapping")
    func extremeClockReadings() async throws {
        for reading in [Date.distantFuture, Date.distantPast, Date(timeIntervalSince1970: .nan)] {
            let backend = InMemoryKeyValueStore(clock: { reading })
            _ = try await backend.commit(KeyValueTransaction(writes: [.put([1], [1], ttl: .seconds(5)), .put([2], [2])]))
            // Such a reading does not fit Int64 nanoseconds (a plain conversion traps): it saturates, and the store works.
            #expect(try await backend.get([2])?.value == [2], "clock \(reading)")
            try await backend.close()
        }
    }
}
