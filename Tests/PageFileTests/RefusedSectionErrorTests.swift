// A failed writer section's error is replaced by the failure of a commit it observed only when the error rests on
// that state (a wrong expected version, a duplicate id, a failed condition). A refusal about the request or the store
// itself keeps its answer: a closed store says `closed`, and bad input says what was wrong with it.

import EventStore
@testable import EventStoreKV
import Foundation
import Glibc
import Synchronization
import Testing

/// Set once a task has finished.
private final class DoneFlag: Sendable {
    let done = Atomic<Bool>(false)
}

@Suite(
    "Page file: a refused section keeps an answer that does not rest on what it saw", .timeLimit(.minutes(5)))
struct RefusedSectionErrorTests {
    @Test("a commit on a store closed after an I/O failure throws closed, not the old commit's ioFailure")
    func commitOnClosedFailedStoreSaysClosed() async throws {
        let directory = TemporaryDirectory("closed-after-failure")
        defer { directory.remove() }
        // WAL sync 1: the warm-up commit. Sync 2: commit A's, failing with EIO.
        let faults = IOFaultPlan([IOFault(operation: .sync, onCall: 2, kind: .fail(EIO), pathSuffix: "/wal")])
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions(faults: faults))
        _ = try await store.commit(KeyValueTransaction(writes: [.put(Array("warm".utf8), [1])]))
        do {
            _ = try await store.commit(KeyValueTransaction(writes: [.put(Array("a".utf8), [2])]))
            Issue.record("setup: commit A should have failed its fdatasync")
        } catch EventStoreError.ioFailure {
            // A's outcome is unknown, as documented.
        }
        try? await store.close()

        // Nothing can be written to a closed store: the caller must hear `closed`, not "outcome unknown".
        do {
            _ = try await store.commit(KeyValueTransaction(writes: [.put(Array("b".utf8), [3])]))
            Issue.record("a commit on a closed store succeeded")
        } catch KeyValueStoreError.closed {
        } catch {
            Issue.record("a commit on a closed store threw \(error), not closed")
        }
        do {
            _ = try await store.update { _ in (KeyValueTransaction(writes: []), 0) }
            Issue.record("an update on a closed store succeeded")
        } catch KeyValueStoreError.closed {
        } catch {
            Issue.record("an update on a closed store threw \(error), not closed")
        }
    }

    /// Bad input gets a clear error (the brief's bar; `commit` documents `tooLarge` for oversized input). A key over
    /// the limit is refused without looking at any state, so a commit queued ahead of it that then fails changes
    /// nothing about that answer.
    @Test("an oversized key is refused with tooLarge even when a commit queued ahead of it then fails")
    func oversizedKeyKeepsTooLarge() async throws {
        let directory = TemporaryDirectory("too-large-behind-failure")
        defer { directory.remove() }
        let gate = IOGate(pathSuffix: "/wal")
        // WAL sync 1: the warm-up commit. Sync 2: group G0, held by the gate, then failing with EIO.
        let faults = IOFaultPlan(
            [IOFault(operation: .sync, onCall: 2, kind: .fail(EIO), pathSuffix: "/wal")], syncGate: gate)
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions(faults: faults))
        _ = try await store.commit(KeyValueTransaction(writes: [.put(Array("warm".utf8), [1])]))

        gate.hold()
        let g0 = Task { try await store.commit(KeyValueTransaction(writes: [.put(Array("g0".utf8), [2])])) }
        await gate.arrival()  // G0's fdatasync is in progress, held
        // A: queued behind G0, applied to the writer's state, not yet written.
        let a = Task { try await store.commit(KeyValueTransaction(writes: [.put(Array("a".utf8), [3])])) }
        while store.pipeline.waiterCount < 2 {
            try Task.checkCancellation()
            await Task.yield()
        }
        // B: bad input, refused by validation.
        let oversized = [UInt8](repeating: 7, count: store.maximumKeyLength + 1)
        let bFinished = DoneFlag()
        let b = Task {
            defer { bFinished.done.store(true, ordering: .sequentiallyConsistent) }
            return try await store.commit(KeyValueTransaction(writes: [.put(oversized, [4])]))
        }
        // B has answered (as it should, at once) or is waiting on A's durability (the defect).
        while store.pipeline.waiterCount < 3, !bFinished.done.load(ordering: .sequentiallyConsistent) {
            try Task.checkCancellation()
            await Task.yield()
        }
        gate.release()  // G0's sync fails; A, never written, gets storeFailed

        _ = await g0.result
        _ = await a.result
        let bResult = await b.result
        try? await store.close()
        switch bResult {
        case .success(let revision):
            Issue.record("an oversized key was committed at \(revision)")
        case .failure(KeyValueStoreError.tooLarge):
            break
        case .failure(let error):
            Issue.record("an oversized key got \(error), not tooLarge")
        }
    }
}
