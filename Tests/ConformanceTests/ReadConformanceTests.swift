// Conformance: stream slices, backward reads, empty streams, the global log, cancellation.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Conformance: reads")
struct ReadConformanceTests {
    /// A store holding one stream of 100 events labelled e0...e99 (versions 1...100).
    private func withHundred(_ backend: Backend, _ body: (KeyValueEventStore, StreamName) async throws -> Void)
        async throws
    {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            _ = try await store.append(makeEvents(100), to: stream, expectedVersion: .noStream)
            try await body(store, stream)
        }
    }

    @Test("forward slices: 50...75 exactly, from N to the end, past the end empty", arguments: Backends.all)
    func forwardSlices(backend: Backend) async throws {
        try await withHundred(backend) { store, stream in
            let slice = try await store.read(stream, from: .version(50), limit: 26)
            #expect(slice.map(\.version) == Array(50...75))
            #expect(slice.map(\.label) == (49...74).map { "e\($0)" })
            #expect(try await store.read(stream, from: .version(90)).map(\.version) == Array(90...100))
            #expect(try await store.read(stream, from: .version(101)).isEmpty)
            #expect(try await store.read(stream, from: .version(1_000)).isEmpty)
            #expect(try await store.read(stream, from: .start).count == 100)
            #expect(try await store.read(stream, from: .start, limit: 0).isEmpty)
            #expect(try await store.read(stream, from: .end, direction: .forward, limit: 10).isEmpty)
        }
    }

    @Test("backward reads from the end, from a version, from the start", arguments: Backends.all)
    func backwardReads(backend: Backend) async throws {
        try await withHundred(backend) { store, stream in
            let newest: [UInt64] = try await store.readBackward(stream, limit: 10).map(\.version)
            #expect(newest == Array((91...100).reversed()))
            let fromFifty: [UInt64] = try await store.readBackward(stream, from: .version(50), limit: 5).map(\.version)
            #expect(fromFifty == [50, 49, 48, 47, 46])
            let fromThree: [UInt64] = try await store.readBackward(stream, from: .version(3)).map(\.version)
            #expect(fromThree == [3, 2, 1])
            let fromStart: [UInt64] = try await store.readBackward(stream, from: .start).map(\.version)
            #expect(fromStart == [1])
            let pastEnd: [UInt64] = try await store.readBackward(stream, from: .version(500), limit: 2).map(\.version)
            #expect(pastEnd == [100, 99])
            #expect(try await store.readBackward(stream).count == 100)
        }
    }

    @Test("an empty or missing stream reads as empty at version 0", arguments: Backends.all)
    func emptyStream(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            #expect(try await store.read(stream).isEmpty)
            #expect(try await store.readBackward(stream).isEmpty)
            #expect(try await store.version(of: stream) == 0)
            #expect(try await store.lastPosition() == 0)
            #expect(try await store.readAll(from: 1, limit: 10).isEmpty)
        }
    }

    @Test("recorded events carry stream, version, position, time, type, payload and metadata", arguments: Backends.all)
    func recordedFields(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            let correlation = UUID()
            let causation = UUID()
            let event = EventData(
                type: "Opened", data: Data("{\"owner\":\"ada\"}".utf8),
                metadata: EventMetadata(
                    correlationID: correlation, causationID: causation, properties: ["user": "ada", "schema": "2"]))
            let before = Date().addingTimeInterval(-1)
            _ = try await store.append([event], to: stream, expectedVersion: .noStream)
            let after = Date().addingTimeInterval(1)
            let recorded = try #require(try await store.read(stream).first)
            #expect(recorded.id == event.id)
            #expect(recorded.stream == stream)
            #expect(recorded.version == 1)
            #expect(recorded.position == 1)
            #expect(recorded.type == "Opened")
            #expect(recorded.data == event.data)
            #expect(recorded.metadata == event.metadata)
            #expect(recorded.recordedAt > before && recorded.recordedAt < after)
            #expect(try await store.readAll(from: 1, limit: 1) == [recorded])
        }
    }

    @Test("the global log reads forward from a position with a limit", arguments: Backends.all)
    func globalLog(backend: Backend) async throws {
        try await backend.withStore { store in
            let a = try uniqueStream("a")
            let b = try uniqueStream("b")
            for round in 0..<10 {
                _ = try await store.append(makeEvents(3, label: "a\(round)-"), to: a, expectedVersion: .any)
                _ = try await store.append(makeEvents(2, label: "b\(round)-"), to: b, expectedVersion: .any)
            }
            let all = try await store.readAll(from: 1, limit: .max)
            #expect(all.map(\.position) == Array(1...50))
            #expect(try await store.readAll(from: 0, limit: .max) == all)
            #expect(try await store.readAll(from: 20, limit: 5).map(\.position) == Array(20...24))
            #expect(try await store.readAll(from: 49, limit: 100).map(\.position) == [49, 50])
            #expect(try await store.readAll(from: 51, limit: 100).isEmpty)
            #expect(try await store.lastPosition() == 50)
        }
    }

    @Test("cancelling a task stops a long stream read and a long log read", arguments: Backends.all)
    func cancellation(backend: Backend) async throws {
        try await backend.withStore { store in
            let stream = try uniqueStream()
            for batch in 0..<10 {
                _ = try await store.append(
                    makeEvents(1_000, label: "\(batch)-"), to: stream, expectedVersion: .exact(UInt64(batch * 1_000)))
            }
            let streamRead = Task { try await store.read(stream) }
            streamRead.cancel()
            await #expect(throws: CancellationError.self) { _ = try await streamRead.value }
            let logRead = Task { try await store.readAll(from: 1, limit: .max) }
            logRead.cancel()
            await #expect(throws: CancellationError.self) { _ = try await logRead.value }
            // The store is unharmed and complete.
            #expect(try await store.read(stream).count == 10_000)
        }
    }
}
