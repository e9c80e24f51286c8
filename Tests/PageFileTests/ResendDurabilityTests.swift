// An idempotent re-send acknowledges the original append: it must not report success for events that never became
// durable. The re-send writes nothing itself; it finds its events in a commit still queued for the WAL, and that
// commit's fate is the re-send's.

import EventStore
@testable import EventStoreKV
import Foundation
import Glibc
import Testing

@Suite(
    "Page file: a re-send is acknowledged only once the commit it found is durable", .timeLimit(.minutes(5)))
struct ResendDurabilityTests {
    /// Holds a WAL fdatasync (group G0) and queues append A behind it; runs `retry` while A waits, then fails G0's
    /// sync with EIO. Returns A's result, the retry's, and the reopened store's events in `stream`.
    private func scenario<T: Sendable>(
        _ label: String, stream: StreamName, event placed: EventData,
        retry: @escaping @Sendable (KeyValueEventStore) async throws -> T
    ) async throws -> (a: Result<AppendResult, any Error>, retry: Result<T, any Error>, stored: [RecordedEvent])? {
        let directory = TemporaryDirectory(label)
        defer { directory.remove() }
        let gate = IOGate(pathSuffix: "/wal")
        // WAL sync 1: the warm-up append. Sync 2: group G0, held by the gate, then failing with EIO.
        let faults = IOFaultPlan(
            [IOFault(operation: .sync, onCall: 2, kind: .fail(EIO), pathSuffix: "/wal")], syncGate: gate)
        let backend = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions(faults: faults))
        let store = KeyValueEventStore(backend: backend)
        let other = try StreamName("other-1")
        _ = try await store.append([EventData(type: "Warm", data: Data())], to: other, expectedVersion: .any)

        gate.hold()
        let g0 = Task { try await store.append([EventData(type: "G0", data: Data())], to: other, expectedVersion: .any) }
        await gate.arrival()  // G0's fdatasync is in progress, held
        // A: queued behind G0, applied to the writer's state, not yet written to the WAL.
        let a = Task { try await store.append([placed], to: stream, expectedVersion: .noStream) }
        while backend.pipeline.waiterCount < 2 {
            try Task.checkCancellation()
            await Task.yield()
        }
        // The retry runs its writer section on A's state, then waits for A's durability.
        let retried = Task { try await retry(store) }
        while backend.pipeline.waiterCount < 3 {
            try Task.checkCancellation()
            await Task.yield()
        }
        gate.release()  // G0's sync fails: the store fails, and A, never written, gets storeFailed

        let g0Result = await g0.result
        let aResult = await a.result
        let retryResult = await retried.result
        try? await store.close()

        let reopened = try KeyValueEventStore.open(directory: directory.path, options: smallOptions())
        let stored = try await reopened.read(stream)
        try await reopened.close()
        guard case .failure(EventStoreError.ioFailure) = g0Result else {
            Issue.record("setup: G0 should have failed its sync, got \(g0Result)")
            return nil
        }
        guard case .failure(EventStoreError.storeFailed) = aResult else {
            Issue.record("setup: A was never written and should get storeFailed, got \(aResult)")
            return nil
        }
        #expect(stored.isEmpty, "A was never written: the stream must be empty after reopening")
        return (aResult, retryResult, stored)
    }

    @Test("a re-send that finds its events only in a commit that then fails is not acknowledged")
    func resendOfANeverWrittenAppendFails() async throws {
        let stream = try StreamName("orders-1")
        let placed = EventData(type: "Placed", data: Data([1]))
        // The client's retry of the same event (same id, same expected version): an idempotent re-send of A.
        guard let outcome = try await scenario("resend-undurable", stream: stream, event: placed, retry: { store in
            try await store.append([placed], to: stream, expectedVersion: .noStream)
        }) else { return }
        switch outcome.retry {
        case .success(let result):
            Issue.record("the re-send was acknowledged (\(result)) for an event the store does not hold after reopening")
        case .failure(let error):
            guard case EventStoreError.storeFailed = error else {
                Issue.record("the re-send found a commit that was never written, so nothing was: storeFailed, not \(error)")
                return
            }
        }
    }

    @Test("an append refused on a commit that then fails gets that commit's failure, not a duplicate id")
    func duplicateOfANeverWrittenAppendIsNotReported() async throws {
        let stream = try StreamName("orders-1")
        let placed = EventData(type: "Placed", data: Data([1]))
        // The same event id on another stream: refused as a duplicate of A's, which is never written.
        guard let outcome = try await scenario("duplicate-undurable", stream: stream, event: placed, retry: { store in
            try await store.append([placed], to: try StreamName("orders-2"), expectedVersion: .any)
        }) else { return }
        switch outcome.retry {
        case .success(let result):
            Issue.record("the append of an id held only by a failing commit succeeded: \(result)")
        case .failure(let error):
            guard case EventStoreError.storeFailed = error else {
                Issue.record("the id is not stored (its commit was never written), yet the append got \(error)")
                return
            }
        }
    }
}
