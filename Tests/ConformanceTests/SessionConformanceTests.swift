// Conformance: session-locked streams (exclusive leases with fencing). Leases expire by the wall clock, so these
// tests wait for real expiry with short timeouts; assertions are about outcomes, never about how long things took.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Conformance: sessions")
struct SessionConformanceTests {
    @Test("a second open waits for the open timeout, then fails naming the holder", arguments: Backends.all)
    func secondOpenWaitsThenFails(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let first = try await store.openSession(on: stream, sessionTimeout: .seconds(30), openTimeout: .zero)
            let clock = ContinuousClock()
            let started = clock.now
            do {
                _ = try await store.openSession(on: stream, sessionTimeout: .seconds(30), openTimeout: .milliseconds(300))
                Issue.record("a second session must not open while the first holds the stream")
            } catch EventStoreError.streamLocked(let locked, let holder, let expiresAt) {
                #expect(locked == stream)
                #expect(holder.contains(first.id.uuidString))
                #expect(expiresAt > Date())
            }
            // It waited rather than failing at once.
            #expect(clock.now - started >= .milliseconds(300))
            try await first.close()
        }
    }

    @Test("an expired session lets a new session in", arguments: Backends.all)
    func expiryLetsNewSessionIn(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let first = try await store.openSession(
                on: stream, sessionTimeout: backend.leaseTimeout(.milliseconds(300)), openTimeout: .zero)
            _ = try await first.append(makeEvents(1), expectedVersion: .noStream)
            // Not renewed: the second open succeeds once the lease has run out.
            let second = try await store.openSession(on: stream, sessionTimeout: .seconds(30), openTimeout: .seconds(20))
            #expect(try await second.append(makeEvents(1), expectedVersion: .exact(1)).version == 2)
            try await second.close()
        }
    }

    @Test("an expired session's append is rejected, before and after a takeover", arguments: Backends.all)
    func expiredSessionAppendRejected(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let timeout = backend.leaseTimeout(.milliseconds(200))
            let stale = try await store.openSession(on: stream, sessionTimeout: timeout, openTimeout: .zero)
            try await Task.sleep(for: timeout * 3)
            do {
                _ = try await stale.append(makeEvents(1), expectedVersion: .any)
                Issue.record("an expired session must not append")
            } catch EventStoreError.sessionExpired(let expiredStream, let id) {
                #expect(expiredStream == stream)
                #expect(id == stale.id)
            }
            let fresh = try await store.openSession(on: stream, sessionTimeout: .seconds(30), openTimeout: .zero)
            await #expect(throws: EventStoreError.self) { _ = try await stale.append(makeEvents(1), expectedVersion: .any) }
            await #expect(throws: EventStoreError.self) { try await stale.renew() }
            #expect(try await fresh.append(makeEvents(1), expectedVersion: .noStream).version == 1)
            #expect(try await store.version(of: stream) == 1)
            // Closing the stale session does not release the fresh one's lock.
            try await stale.close()
            await #expect(throws: EventStoreError.self) { _ = try await store.append(makeEvents(1), to: stream, expectedVersion: .any) }
            try await fresh.close()
        }
    }

    @Test("close releases the lock at once", arguments: Backends.all)
    func closeReleases(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let first = try await store.openSession(on: stream, sessionTimeout: .seconds(60), openTimeout: .zero)
            try await first.close()
            try await first.close()  // harmless
            let second = try await store.openSession(on: stream, sessionTimeout: .seconds(60), openTimeout: .zero)
            await #expect(throws: EventStoreError.self) { _ = try await first.append(makeEvents(1), expectedVersion: .any) }
            try await second.close()
            #expect(try await store.append(makeEvents(1), to: stream, expectedVersion: .any).version == 1)
        }
    }

    @Test("renew extends the lease past the session timeout", arguments: Backends.all)
    func renewExtends(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            // Generous margins: each renewal may be delayed by most of a timeout on a loaded machine.
            let timeout = backend.leaseTimeout(.seconds(3))
            let session = try await store.openSession(on: stream, sessionTimeout: timeout, openTimeout: .zero)
            let firstExpiry = await session.leaseExpiresAt()
            for _ in 0..<8 {
                try await Task.sleep(for: timeout / 6)
                try await session.renew()
            }
            // Over 1.3 timeouts after opening, the lease still holds because of the renewals.
            #expect(await session.leaseExpiresAt() > firstExpiry)
            await #expect(throws: EventStoreError.self) {
                _ = try await store.openSession(on: stream, sessionTimeout: .seconds(1), openTimeout: .zero)
            }
            #expect(try await session.append(makeEvents(1), expectedVersion: .noStream).version == 1)
            try await session.close()
        }
    }

    @Test("an append without a session to a locked stream fails with streamLocked", arguments: Backends.all)
    func appendWithoutSessionRejected(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let session = try await store.openSession(on: stream, sessionTimeout: .seconds(60), openTimeout: .zero)
            do {
                _ = try await store.append(makeEvents(1), to: stream, expectedVersion: .any)
                Issue.record("an append without the session must fail")
            } catch EventStoreError.streamLocked(let locked, let holder, _) {
                #expect(locked == stream)
                #expect(holder.contains(session.id.uuidString))
            }
            // Multi-stream appends touching the locked stream fail too, and write nothing.
            let other = try uniqueStream("other")
            await #expect(throws: EventStoreError.self) {
                _ = try await store.append([
                    StreamAppend(stream: other, expectedVersion: .any, events: makeEvents(1)),
                    StreamAppend(stream: stream, expectedVersion: .any, events: makeEvents(1)),
                ])
            }
            #expect(try await store.lastPosition() == 0)
            // Other streams are unaffected.
            #expect(try await store.append(makeEvents(1), to: other, expectedVersion: .any).version == 1)
            try await session.close()
        }
    }

    @Test("session appends check expected versions and renew the lease", arguments: Backends.all)
    func sessionAppends(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let timeout = backend.leaseTimeout(.seconds(3))
            let session = try await store.openSession(on: stream, sessionTimeout: timeout, openTimeout: .zero)
            for version in 0..<5 {
                try await Task.sleep(for: timeout / 4)
                _ = try await session.append(makeEvents(1), expectedVersion: .exact(UInt64(version)))
            }
            await #expect(throws: EventStoreError.self) { _ = try await session.append(makeEvents(1), expectedVersion: .exact(1)) }
            #expect(try await store.version(of: stream) == 5)
            try await session.close()
            await #expect(throws: EventStoreError.self) { _ = try await session.append(makeEvents(1), expectedVersion: .any) }
        }
    }

    @Test("invalid session timeouts are rejected", arguments: Backends.all)
    func invalidTimeouts(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            await #expect(throws: EventStoreError.self) {
                _ = try await store.openSession(on: stream, sessionTimeout: .zero, openTimeout: .zero)
            }
            await #expect(throws: EventStoreError.self) {
                _ = try await store.openSession(on: stream, sessionTimeout: .seconds(1), openTimeout: .seconds(-1))
            }
        }
    }
}
