// A commit from a task already cancelled must throw CancellationError and write nothing on every backend, as the
// contract (KeyValueStore.commit) says: the in-memory store committed it anyway, where the page file refused, so a
// user's test on the in-memory store passed where production behaved otherwise (found by a review, twenty-fifth
// session).

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("A commit from a cancelled task, on every backend")
struct CancelledCommitConformanceTests {
    @Test("the key-value commit of a cancelled task throws CancellationError and writes nothing, on every backend",
          arguments: Backends.all)
    func keyValueCommit(backend: Backend) async throws {
        try await backend.withStore { store in
            let kv = store.backend
            let outcome = await Task {
                withUnsafeCurrentTask { $0?.cancel() }
                return try await kv.commit(KeyValueTransaction(writes: [.put([0x42], [1])]))
            }.result
            switch outcome {
            case .success(let revision):
                Issue.record("\(backend.name): a cancelled task's commit was applied at revision \(revision)")
            case .failure(let error):
                #expect(error is CancellationError, "\(backend.name): \(error)")
            }
            let found = try await kv.get(Key([0x42]))
            #expect(found == nil, "\(backend.name): the cancelled commit was written")
        }
    }

    @Test("saveCheckpoint in a cancelled task is refused the same way on every backend",
          arguments: Backends.all)
    func saveCheckpoint(backend: Backend) async throws {
        try await backend.withStore { store in
            _ = try await store.append([makeEvent("a")], to: try StreamName("cancelled-commit-1"), expectedVersion: .noStream)
            let outcome = await Task {
                withUnsafeCurrentTask { $0?.cancel() }
                try await store.saveCheckpoint(1, for: "cancelled-consumer")
            }.result
            if case .failure(let error) = outcome {
                #expect(error is CancellationError, "\(backend.name): \(error)")
            } else {
                Issue.record("\(backend.name): saveCheckpoint in a cancelled task succeeded")
            }
            let stored = try await store.checkpoint(of: "cancelled-consumer")
            #expect(stored == nil, "\(backend.name): checkpoint was stored")
        }
    }
}
