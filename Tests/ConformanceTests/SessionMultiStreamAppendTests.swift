// Conformance: a session's multi-stream append (StreamSession.append(_: [StreamAppend])), on every backend.
// The session's own stream is fenced and renewed; the other parts follow the plain append's rules; it is atomic.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite struct SessionMultiStreamAppendTests {
    func event(_ type: String) -> EventData { EventData(type: type, data: Data()) }

    @Test(arguments: Backends.all)
    func writesTheSessionStreamAndOtherStreamsTogether(backend: Backend) async throws {
        try await backend.withStore { store in
            let held = try StreamName("held")
            let other = try StreamName("other")
            let session = try await store.openSession(on: held, sessionTimeout: .seconds(30), openTimeout: .zero)
            let results = try await session.append([
                StreamAppend(stream: held, expectedVersion: .noStream, events: [event("A")]),
                StreamAppend(stream: other, expectedVersion: .noStream, events: [event("B"), event("C")]),
            ])
            #expect(results.map(\.version) == [1, 2])
            #expect(results[0].positions.upperBound == results[1].positions.lowerBound)
            #expect(try await store.read(other).map(\.type) == ["B", "C"])
            try await session.close()
        }
    }

    @Test(arguments: Backends.all)
    func refusesAnAppendWithoutTheSessionStream(backend: Backend) async throws {
        try await backend.withStore { store in
            let session = try await store.openSession(on: try StreamName("held"), sessionTimeout: .seconds(30), openTimeout: .zero)
            await #expect(throws: EventStoreError.self) {
                try await session.append([StreamAppend(stream: try StreamName("other"), expectedVersion: .any, events: [event("X")])])
            }
            #expect(try await store.lastPosition() == 0)
            try await session.close()
        }
    }

    @Test(arguments: Backends.all)
    func writesNothingWhenAnotherPartIsLockedOrConflicts(backend: Backend) async throws {
        try await backend.withStore { store in
            let held = try StreamName("held")
            let locked = try StreamName("locked")
            let existing = try StreamName("existing")
            _ = try await store.append(event("Opened"), to: existing, expectedVersion: .noStream)
            let session = try await store.openSession(on: held, sessionTimeout: .seconds(30), openTimeout: .zero)
            let foreign = try await store.openSession(on: locked, sessionTimeout: .seconds(30), openTimeout: .zero)
            await #expect(throws: EventStoreError.self) {
                try await session.append([
                    StreamAppend(stream: held, expectedVersion: .any, events: [event("A")]),
                    StreamAppend(stream: locked, expectedVersion: .any, events: [event("B")]),
                ])
            }
            await #expect(throws: EventStoreError.self) {
                try await session.append([
                    StreamAppend(stream: held, expectedVersion: .any, events: [event("A")]),
                    StreamAppend(stream: existing, expectedVersion: .noStream, events: [event("B")]),
                ])
            }
            #expect(try await store.version(of: held) == 0)
            #expect(try await store.version(of: locked) == 0)
            #expect(try await store.version(of: existing) == 1)
            try await foreign.close()
            try await session.close()
        }
    }

    @Test(arguments: Backends.all)
    func aClosedSessionCannotAppendAndPlainAppendsCannotWriteAHeldStream(backend: Backend) async throws {
        try await backend.withStore { store in
            let held = try StreamName("held")
            let session = try await store.openSession(on: held, sessionTimeout: .seconds(30), openTimeout: .zero)
            await #expect(throws: EventStoreError.self) {
                try await store.append([
                    StreamAppend(stream: held, expectedVersion: .any, events: [event("A")]),
                    StreamAppend(stream: try StreamName("free"), expectedVersion: .any, events: [event("B")]),
                ])
            }
            try await session.close()
            await #expect(throws: EventStoreError.self) {
                try await session.append([StreamAppend(stream: held, expectedVersion: .any, events: [event("C")])])
            }
            #expect(try await store.lastPosition() == 0)
        }
    }
}
