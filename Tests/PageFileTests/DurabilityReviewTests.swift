import EventStore
@testable import EventStoreKV
import Foundation
import Glibc
import Testing

/// The group commit's failure contract (GroupCommit.swift's invariants): a commit whose WAL bytes were written when
/// the store failed has an unknown outcome (`ioFailure`; re-sending the same events finds out), a commit never
/// written gets `storeFailed`, and a later commit's failure never reports failure for a commit already written.
@Suite("Durability review")
struct DurabilityReviewTests {
    @Test("an append that throws ioFailure after its fdatasync failed can be re-sent after reopening, exactly once")
    func failedSyncAppendIsResolvedByResending() async throws {
        let directory = TemporaryDirectory("eio-reappears")
        defer { directory.remove() }
        let faults = IOFaultPlan([IOFault(operation: .sync, onCall: 2, kind: .fail(EIO), pathSuffix: "/wal")])
        let backend = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions(faults: faults))
        let store = KeyValueEventStore(backend: backend)
        let stream = try StreamName("orders-1")
        _ = try await store.append([EventData(type: "Placed", data: Data([1]))], to: stream, expectedVersion: .any)
        let paid = EventData(type: "Paid", data: Data([2]))
        var thrown: (any Error)?
        do {
            _ = try await store.append([paid], to: stream, expectedVersion: .any)
        } catch {
            thrown = error
        }
        let error = try #require(thrown)
        guard case EventStoreError.ioFailure = error else {
            Issue.record("the append whose fdatasync failed threw \(error), not ioFailure (outcome unknown)")
            return
        }
        // A store in the failed state refuses writes with storeFailed: nothing is written.
        await #expect(throws: EventStoreError.self) {
            _ = try await store.append([EventData(type: "Other", data: Data())], to: stream, expectedVersion: .any)
        }
        try await store.close()
        // Outcome unknown: re-send the same events (same ids) to find out. The event is there exactly once.
        let reopened = try KeyValueEventStore.open(directory: directory.path, options: smallOptions())
        let result = try await reopened.append([paid], to: stream, expectedVersion: .any)
        let events = try await reopened.read(stream, from: .start, direction: .forward, limit: 10)
        try await reopened.close()
        #expect(result.version == 2)
        #expect(events.map(\.type) == ["Placed", "Paid"], "after the re-send the stream holds \(events.map(\.type))")
        #expect(events.filter { $0.id == paid.id }.count == 1)
    }

    @Test("a group already being synced is not reported failed when a later joining commit fails the store")
    func inFlightGroupNotFailedByLaterApplyFailure() async throws {
        let directory = TemporaryDirectory("fail-inflight")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [0]), .put([2], [0]), .put([3], [0])]))
        try await store.close()
        try rewriteNewestMeta(in: directory) { $0.keyCount = 0 }  // checksum holds, counts 0 of 3 keys
        let gate = IOGate(pathSuffix: "/wal")
        let reopened = try await PageFileKeyValueStore.open(
            directory: directory.path, options: smallOptions(faults: IOFaultPlan([], syncGate: gate)))
        gate.hold()
        let g0 = Task { try await reopened.commit(KeyValueTransaction(writes: [.put([1], [9])])) }
        await gate.arrival()  // G0's fdatasync is held
        let (signals, signal) = AsyncStream<Void>.makeStream()
        let a = Task {
            defer { signal.finish() }
            return try await reopened.update { _ in
                signal.yield()
                return (KeyValueTransaction(writes: [.put([2], [9])]), ())
            }.revision
        }
        for await _ in signals { break }  // A opens the next group; B joins it
        await #expect(throws: EventStoreError.self) {
            _ = try await reopened.commit(KeyValueTransaction(writes: [.delete([3])]))
        }
        gate.release()
        let g0Result = await g0.result
        let aResult = await a.result
        let visible = try await reopened.get([1])?.value
        try? await reopened.close()
        let after = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let durable = try await after.get([1])?.value
        let aDurable = try await after.get([2])?.value
        try await after.close()
        if case .failure(let error) = g0Result {
            Issue.record("G0's commit threw \(error), yet it was already being synced (visible \(String(describing: visible)), durable \(String(describing: durable)))")
        }
        #expect(visible == [9] && durable == [9])
        // A was queued, never written: storeFailed, and not in the store.
        guard case .failure(EventStoreError.storeFailed) = aResult else {
            Issue.record("the commit queued in the failed group, never written, got \(aResult)")
            return
        }
        #expect(aDurable == [0])
    }

    @Test("a lone commit that wrote its own record is not reported failed when a joining commit fails the store")
    func prewrittenLoneCommitNotFailedByLaterApplyFailure() async throws {
        let directory = TemporaryDirectory("fail-prewritten")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [0]), .put([2], [0]), .put([3], [0])]))
        try await store.close()
        try rewriteNewestMeta(in: directory) { $0.keyCount = 0 }  // checksum holds, counts 0 of 3 keys
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        reopened.pipeline.holdQueue(true)  // the flusher leaves the queue alone, so the next commit joins A's group
        let a = Task { try await reopened.commit(KeyValueTransaction(writes: [.put([1], [9])])) }
        while reopened.pipeline.waiterCount < 1 { await Task.yield() }  // A wrote its record alone and waits
        // B joins A's open group and fails part way (the key count cannot go below 0), failing the store. B then
        // waits for A's record (which it observed) before it returns, so the queue is let go once the store failed.
        let b = Task { try await reopened.commit(KeyValueTransaction(writes: [.delete([3])])) }
        while reopened.pipeline.failed == nil { await Task.yield() }
        reopened.pipeline.holdQueue(false)
        guard case .failure(EventStoreError.corrupted) = await b.result else {
            Issue.record("the failing commit did not throw corrupted")
            return
        }
        let aResult = await a.result
        // B changed A's nodes part way: the failed store does not publish them (A shows after reopening).
        let deletedByB = try await reopened.get([3])?.value
        #expect(deletedByB == [0], "the failed commit's half-applied delete is visible: \(String(describing: deletedByB))")
        try? await reopened.close()
        let after = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let durable = try await after.get([1])?.value
        let three = try await after.get([3])?.value
        try await after.close()
        #expect(three == [0])
        if case .failure(let error) = aResult {
            Issue.record("A's commit threw \(error), yet its record was written and synced: durable \(String(describing: durable))")
        }
        #expect(durable == [9])
    }

    @Test("a commit queued behind a failing fdatasync gets storeFailed, not the failing group's I/O error")
    func queuedBehindFailedSyncGetsStoreFailed() async throws {
        let directory = TemporaryDirectory("eio-queued")
        defer { directory.remove() }
        let gate = IOGate(pathSuffix: "/wal")
        let faults = IOFaultPlan([IOFault(operation: .sync, onCall: 2, kind: .fail(EIO), pathSuffix: "/wal")], syncGate: gate)
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions(faults: faults))
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        gate.hold()
        let failing = Task { try await store.commit(KeyValueTransaction(writes: [.put([2], [2])])) }
        await gate.arrival()
        let queued = Task { try await store.commit(KeyValueTransaction(writes: [.put([3], [3])])) }
        // Both committers wait: the failing group's, and the queued one's (no wall clock).
        while store.pipeline.waiterCount < 2 { await Task.yield() }
        gate.release()
        let first = await failing.result
        let second = await queued.result
        try? await store.close()
        guard case .failure(EventStoreError.ioFailure) = first else { Issue.record("the failing group got \(first)"); return }
        guard case .failure(let error) = second else { Issue.record("the queued commit succeeded: \(second)"); return }
        guard case EventStoreError.storeFailed = error else {
            Issue.record("the queued commit, never written, got \(error)")
            return
        }
    }
}

extension DurabilityReviewTests {
    /// `.deferred` promises an acknowledged commit is fdatasynced within its delay. A store failed by damage an apply
    /// found (no I/O error) stopped its deferred syncs for good, so such commits reached the disk only if the OS
    /// wrote them. The WAL's next sync fails here with ENOTTY only to show that it is attempted.
    @Test("a store failed by damage (not I/O) still fdatasyncs its acknowledged deferred commits, at close")
    func deferredCommitsAreSyncedAfterANonIOFailure() async throws {
        let directory = TemporaryDirectory("deferred-after-failure")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [0]), .put([2], [0]), .put([3], [0])]))
        try await store.close()
        try rewriteNewestMeta(in: directory) { $0.keyCount = 0 }  // checksum holds, counts 0 of 3 keys

        let failures = Locked<[String]>([])
        // The open's recovery checkpoint syncs the WAL once (the reused file holds older records); the next WAL
        // sync is the one this test looks for.
        var options = smallOptions(
            faults: IOFaultPlan([IOFault(operation: .sync, onCall: 2, kind: .fail(ENOTTY), pathSuffix: "/wal")]))
        options.durability = .deferred(maximumDelay: .seconds(3_600))
        options.observer = { event in
            if case .failed(let reason) = event { failures.withLock { $0.append(reason) } }
        }
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await reopened.commit(KeyValueTransaction(writes: [.put([4], [4])]))  // acknowledged, not synced
        // A commit's apply fails the store only part way through an open group: hold the queue so that the next
        // commit opens a group and the failing one joins it. The count is 2 after the puts; the third delete would
        // take it below 0.
        reopened.pipeline.holdQueue(true)
        let joined = Task { try await reopened.commit(KeyValueTransaction(writes: [.put([5], [5])])) }
        while reopened.pipeline.waiterCount == 0 { await Task.yield() }
        await #expect(throws: EventStoreError.self) {
            _ = try await reopened.commit(KeyValueTransaction(writes: [.delete([1]), .delete([2]), .delete([3])]))
        }
        #expect(reopened.pipeline.failed != nil, "the store should have failed")
        reopened.pipeline.holdQueue(false)
        _ = await joined.result
        try? await reopened.close()
        let seen = failures.withLock { $0 }
        #expect(seen.contains { $0.contains("fdatasync") && $0.contains("errno 25") },
                "no fdatasync of the WAL after the failure: \(seen)")
    }
}
