// The backends the conformance suite runs against. Every scenario is a parameterised test over `Backends.all`;
// a new backend adds one factory here and passes every scenario unchanged.

import EventStore
import EventStoreKV
import Foundation
import Testing

/// A store made for one test, with whatever it needs to clean up afterwards.
struct TestStore: Sendable {
    let store: KeyValueEventStore
    let cleanup: @Sendable () async -> Void
}

/// Makes fresh, empty stores of one backend kind.
struct Backend: Sendable, CustomTestStringConvertible {
    let name: String
    let make: @Sendable (EventStoreLimits) async throws -> TestStore

    var testDescription: String { name }

    /// Runs `body` against a fresh store, always cleaning up.
    func withStore<T>(
        limits: EventStoreLimits = EventStoreLimits(), _ body: (KeyValueEventStore) async throws -> T
    ) async throws -> T {
        let made = try await make(limits)
        do {
            let result = try await body(made.store)
            await made.cleanup()
            return result
        } catch {
            await made.cleanup()
            throw error
        }
    }

    static let inMemory = Backend(name: "in-memory") { limits in
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore(), limits: limits)
        return TestStore(store: store) { try? await store.close() }
    }
}

extension Backend {
    /// The page-file engine, each test in a fresh temporary directory that is removed afterwards.
    static let pageFile = Backend(name: "page-file") { limits in
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("eventstore-conformance-\(UUID().uuidString)").path
        let store = KeyValueEventStore(
            backend: try PageFileKeyValueStore.open(directory: directory), limits: limits)
        return TestStore(store: store) {
            try? await store.close()
            try? FileManager.default.removeItem(atPath: directory)
        }
    }
}

enum Backends {
    /// Every backend available in this run. Backends that need a server join when it is configured.
    static var all: [Backend] {
        [.inMemory, .pageFile]
    }
}
