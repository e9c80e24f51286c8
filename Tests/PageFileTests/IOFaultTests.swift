// I/O faults through the file seam (IOFaultPlan): EIO on fdatasync, a short write on a full disk, a failed page
// write in a checkpoint. The failing commit is not acknowledged, the store refuses further writes without retrying
// fsync, reads keep serving the durable state, and reopening recovers.

import EventStore
@testable import EventStoreKV
import Foundation
import Glibc
import Testing

@Suite("I/O faults")
struct IOFaultTests {
    private func isIOFailure(_ error: any Error, _ code: Int32) -> Bool {
        guard case EventStoreError.ioFailure(_, _, let errno) = error else { return false }
        return errno == code
    }

    private func isStoreFailed(_ error: any Error) -> Bool {
        guard case EventStoreError.storeFailed = error else { return false }
        return true
    }

    @Test("EIO from the WAL fdatasync fails the commit and the store, and reopening recovers", arguments: [EIO, ENOSPC])
    func syncFailure(code: Int32) async throws {
        let directory = TemporaryDirectory("eio")
        defer { directory.remove() }
        // Creating the store does not go through the seam; commit 1's fdatasync is call 1, commit 2's fails.
        let faults = IOFaultPlan([IOFault(operation: .sync, onCall: 2, kind: .fail(code), pathSuffix: "/wal")])
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions(faults: faults))
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        await #expect { _ = try await store.commit(KeyValueTransaction(writes: [.put([2], [2])])) } throws: {
            isIOFailure($0, code)
        }
        await #expect { _ = try await store.commit(KeyValueTransaction(writes: [.put([3], [3])])) } throws: {
            isStoreFailed($0)
        }
        await #expect { try await store.checkpoint() } throws: { isStoreFailed($0) }
        #expect(try await store.get([1])?.value == [1], "reads keep serving the durable state")
        #expect(try await store.get([2]) == nil, "a commit whose fsync failed is never visible")
        try await store.close()

        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(try await reopened.get([1])?.value == [1])
        #expect(try await reopened.get([3]) == nil)
        // The failed commit's bytes may or may not have reached the disk; either way it is whole or absent.
        let two = try await reopened.get([2])
        #expect(two == nil || two?.value == [2])
        _ = try await reopened.commit(KeyValueTransaction(writes: [.put([4], [4])]))
        #expect(try await reopened.verify().isClean)
        try await reopened.close()
    }

    @Test("deferred durability acknowledges first and fdatasyncs by itself soon after; a failed sync fails the store")
    func deferredSyncHappensAndItsFailureCounts() async throws {
        let directory = TemporaryDirectory("deferred")
        defer { directory.remove() }
        // The first WAL fdatasync (the deferred one after commit 1) fails.
        let faults = IOFaultPlan([IOFault(operation: .sync, onCall: 1, kind: .fail(EIO), pathSuffix: "/wal")])
        var options = smallOptions(faults: faults)
        options.durability = .deferred(maximumDelay: .milliseconds(20))
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))
        #expect(try await store.get([1])?.value == [1], "acknowledged before the fdatasync")
        // Nothing else calls fdatasync on the WAL: only the flusher's own deferred sync can fail the store.
        var failed = false
        for _ in 0..<500 where !failed {
            try await Task.sleep(for: .milliseconds(10))
            do {
                _ = try await store.commit(KeyValueTransaction(writes: [.put([2], [2])]))
            } catch {
                failed = isStoreFailed(error) || isIOFailure(error, EIO)
            }
        }
        #expect(failed, "the deferred fdatasync never ran")
        try await store.close()
    }

    @Test("a short WAL write on a full disk fails the append; earlier data stays intact")
    func shortWrite() async throws {
        let directory = TemporaryDirectory("enospc")
        defer { directory.remove() }
        // WAL writes: one per commit group, plus one that zero-fills the next MiB after commit 1 (write 2).
        // Commit 3's record is write 4.
        let faults = IOFaultPlan([IOFault(operation: .write, onCall: 4, kind: .shortWrite, pathSuffix: "/wal")])
        let store = KeyValueEventStore(
            backend: try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions(faults: faults)))
        let stream = try StreamName("disk-full")
        for version in 0..<2 {
            _ = try await store.append(
                [EventData(type: "Filled", data: Data(repeating: UInt8(version), count: 500))], to: stream,
                expectedVersion: .exact(UInt64(version)))
        }
        await #expect {
            _ = try await store.append(
                [EventData(type: "Filled", data: Data(repeating: 9, count: 500))], to: stream, expectedVersion: .exact(2))
        } throws: { isIOFailure($0, ENOSPC) }
        await #expect {
            _ = try await store.append(
                [EventData(type: "Filled", data: Data(repeating: 9, count: 500))], to: stream, expectedVersion: .exact(2))
        } throws: { isStoreFailed($0) }
        try await store.close()

        let reopened = try KeyValueEventStore.open(directory: directory.path, options: smallOptions())
        let events = try await reopened.read(stream, from: .start, direction: .forward, limit: 10)
        #expect(events.map(\.version) == [1, 2])
        #expect(events.map { $0.data.first } == [0, 1])
        try await reopened.close()
    }

    @Test("a failed page write in a checkpoint fails the store; the WAL still holds every acknowledged commit")
    func checkpointWriteFailure() async throws {
        let directory = TemporaryDirectory("checkpoint-eio")
        defer { directory.remove() }
        // Data-file writes (creating the store does not go through the seam): the checkpoint's first page write fails.
        let faults = IOFaultPlan([IOFault(operation: .write, onCall: 1, kind: .fail(EIO), pathSuffix: "/data")])
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions(faults: faults))
        for index in 0..<20 {
            _ = try await store.commit(KeyValueTransaction(writes: [.put([UInt8(index)], [UInt8(index)])]))
        }
        await #expect { try await store.checkpoint() } throws: { isIOFailure($0, EIO) }
        await #expect { _ = try await store.commit(KeyValueTransaction(writes: [.put([99], [1])])) } throws: {
            isStoreFailed($0)
        }
        try await store.close()

        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(reopened.recovery.replayedTransactions == 20)
        #expect(try await allEntries(reopened).map(\.key) == (0..<20).map { [UInt8($0)] })
        #expect(try await reopened.verify().isClean)
        try await reopened.close()
    }

    @Test(
        "a failed page write in a checkpoint that two threads write fails the store; reopening recovers every commit",
        arguments: [1, 140])
    func parallelCheckpointWriteFailure(failingWrite: Int) async throws {
        let directory = TemporaryDirectory("checkpoint-eio-parallel")
        defer { directory.remove() }
        let faults = IOFaultPlan([IOFault(operation: .write, onCall: failingWrite, kind: .fail(EIO), pathSuffix: "/data")])
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions(faults: faults))
        // 60 commits of 10 keys with 800-byte values: 4 entries to a 4 KiB leaf, so about 150 leaves, over the
        // nodes from which the checkpoint's page writes are split between two threads (checked below).
        for commit in 0..<60 {
            let writes = (0..<10).map { index -> KeyWrite in
                .put(withUnsafeBytes(of: UInt32(commit * 10 + index).bigEndian, Array.init), [UInt8](repeating: UInt8(index), count: 800))
            }
            _ = try await store.commit(KeyValueTransaction(writes: writes))
        }
        await #expect { try await store.checkpoint() } throws: { isIOFailure($0, EIO) }
        await #expect { _ = try await store.commit(KeyValueTransaction(writes: [.put([99], [1])])) } throws: {
            isStoreFailed($0)
        }
        try await store.close()

        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(reopened.recovery.replayedTransactions == 60)
        #expect(try await allEntries(reopened).count == 600)
        try await reopened.checkpoint()
        let report = try await reopened.verify()
        #expect(report.isClean, "\(report.problems)")
        #expect(report.treePages >= PageFileKeyValueStore.parallelCheckpointMinimum, "\(report.treePages) pages")
        try await reopened.close()
    }
}
