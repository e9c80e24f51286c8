// Event-store API defects found in the eighth session's review, each of which failed before its fix:
// - a session's idempotent re-send did not write its lease, although the session then reported the lease extended
//   (StreamSession.append documents that every append renews it), so another writer could take the stream while
//   the session believed it held it;
// - StreamName compared and hashed by `String`'s canonical equivalence while the store keys streams by UTF-8 bytes:
//   "café" precomposed and decomposed were two streams but equal names, so a multi-stream append to both was refused
//   as naming one stream twice, and an idempotent re-send to one matched events recorded in the other.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Sessions renew on every append; stream names are their bytes")
struct ReviewedApiEdgeTests {
    /// The lease record's expiry as stored.
    private static func storedLeaseExpiry(_ store: KeyValueEventStore, _ stream: StreamName) async throws -> Date? {
        try await store.backend.get(KeyLayout.lease(stream)).map { try LeaseRecord.decode($0.value, stream: stream).expiresAt }
    }

    @Test("an idempotent re-send through a session renews the stored lease, as the session reports", arguments: Backends.all)
    func idempotentResendRenewsTheLease(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream("resend")
            let session = try await store.openSession(
                on: stream, sessionTimeout: backend.leaseTimeout(.seconds(30)), openTimeout: .zero)
            let events = makeEvents(2)
            let first = try await session.append(events, expectedVersion: .noStream)
            let before = try #require(try await Self.storedLeaseExpiry(store, stream))
            try await Task.sleep(for: .milliseconds(50))
            #expect(try await session.append(events, expectedVersion: .noStream) == first)
            let after = try #require(try await Self.storedLeaseExpiry(store, stream))
            #expect(after > before, "the re-send left the stored lease at \(before)")
            #expect(await session.leaseExpiresAt() <= after.addingTimeInterval(0.001))
            #expect(try await store.read(stream, limit: .max).count == 2)
            try await session.close()
        }
    }

    @Test("names that differ in bytes but not as Strings are different names and different streams", arguments: Backends.all)
    func canonicallyEquivalentNames(backend: Backend) async throws {
        try await backend.withStore { store in
            let suffix = UUID().uuidString.prefix(8)
            let composed = try StreamName("caf\u{E9}-\(suffix)")  // é as one scalar (NFC)
            let decomposed = try StreamName("cafe\u{301}-\(suffix)")  // e and a combining accent (NFD)
            #expect(composed.rawValue == decomposed.rawValue, "Swift's String calls them equal")
            #expect(composed != decomposed)
            #expect(Set([composed, decomposed]).count == 2)
            #expect((composed < decomposed) != (decomposed < composed))

            let events = makeEvents(1)
            _ = try await store.append(events, to: composed, expectedVersion: .noStream)
            // The same event id sent to the other stream is not a retry of the first append: it is a duplicate.
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append(events, to: decomposed, expectedVersion: .noStream)
            }
            let results = try await store.append([
                StreamAppend(stream: composed, expectedVersion: .exact(1), events: makeEvents(1)),
                StreamAppend(stream: decomposed, expectedVersion: .noStream, events: makeEvents(1)),
            ])
            #expect(results.map(\.version) == [2, 1])
            #expect(try await store.read(composed, limit: .max).count == 2)
            #expect(try await store.read(decomposed, limit: .max).map(\.stream) == [decomposed])
        }
    }
}

/// Found in the eighth session's review: the default coder wrote dates with `.iso8601`, whole seconds only, so a
/// `Date` in an event read back different from the one appended (1700000000.25 came back as 1700000000.0).
@Suite("The default event coder keeps dates exactly")
struct ExactDateCodingTests {
    struct Stamped: Codable, Equatable { var at: Date }

    @Test("dates of every magnitude and fraction read back exactly")
    func roundTrip() throws {
        let coder = JSONEventCoder()
        var generator = SystemRandomNumberGenerator()
        var dates = [
            Date(timeIntervalSince1970: 1_700_000_000.25), Date(timeIntervalSince1970: 0),
            Date(timeIntervalSinceReferenceDate: 0.5), Date(timeIntervalSinceReferenceDate: -1.75),
            Date(timeIntervalSinceReferenceDate: 1e-6), Date(timeIntervalSince1970: -2_208_988_800.123456),
            Date(timeIntervalSince1970: 4_102_444_800.999999), Date(),
        ]
        for _ in 0..<2_000 {
            dates.append(Date(timeIntervalSinceReferenceDate: Double.random(in: -3e9...3e9, using: &generator)))
            dates.append(Date(timeIntervalSinceReferenceDate: Double.random(in: -1e6...1e6, using: &generator)))
        }
        for date in dates {
            let decoded = try coder.decode(Stamped.self, from: try coder.encode(Stamped(at: date)))
            #expect(decoded.at == date, "\(date.timeIntervalSinceReferenceDate) came back as \(decoded.at.timeIntervalSinceReferenceDate)")
            if decoded.at != date { return }
        }
    }

    @Test("whole seconds are written as before, and dates written before (or with an offset) still decode")
    func compatibility() throws {
        let coder = JSONEventCoder()
        #expect(String(decoding: try coder.encode(Stamped(at: Date(timeIntervalSince1970: 1_700_000_000))), as: UTF8.self)
            == #"{"at":"2023-11-14T22:13:20Z"}"#)
        #expect(String(decoding: try coder.encode(Stamped(at: Date(timeIntervalSince1970: 1_700_000_000.25))), as: UTF8.self)
            == #"{"at":"2023-11-14T22:13:20.25Z"}"#)
        let old = try coder.decode(Stamped.self, from: Data(#"{"at":"2023-11-14T22:13:20Z"}"#.utf8))
        #expect(old.at == Date(timeIntervalSince1970: 1_700_000_000))
        let offset = try coder.decode(Stamped.self, from: Data(#"{"at":"2023-11-15T00:13:20.5+02:00"}"#.utf8))
        #expect(offset.at == Date(timeIntervalSince1970: 1_700_000_000.5))
        for bad in [#"{"at":"yesterday"}"#, #"{"at":"2023-11-14T22:13:20.Z"}"#, #"{"at":12}"#] {
            #expect(throws: DecodingError.self) { try coder.decode(Stamped.self, from: Data(bad.utf8)) }
        }
    }
}
