// A WAL larger than the checkpoint threshold suggests is not refused at open: a store run with the default options
// writes one, since the threshold is checked only after a commit is durable, so commits queued behind one WAL sync
// are written as one group before any checkpoint can run. Five concurrent commits of 224 MiB each (under
// maximumTransactionBytes) make a 1.1 GiB WAL generation; a process that dies then must leave a store its own
// options open. (Found by a review, twenty-second session, of a size limit that has since been dropped.)

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("A WAL the default options can write is not refused at open")
struct LargeWALTests {
    /// 7 values of 32 MiB (maximumValueLength): 224 MiB, under maximumTransactionBytes (256 MiB).
    private static func big(_ marker: UInt8, value: [UInt8]) -> KeyValueTransaction {
        KeyValueTransaction(writes: (0..<7).map { index in .put([marker, UInt8(index)], value) })
    }

    /// Writes about 1.2 GB and takes seconds, so it runs only with EVENTSTORE_HUGE_TESTS=1.
    @Test(
        "a crash while commits queued behind one sync are written leaves a store that opens with its own options",
        .enabled(if: ProcessInfo.processInfo.environment["EVENTSTORE_HUGE_TESTS"] == "1", "set EVENTSTORE_HUGE_TESTS=1"))
    func defaultOptionsReopenAfterLargeGroup() async throws {
        let directory = TemporaryDirectory("large-wal")
        defer { directory.remove() }
        let gate = IOGate(pathSuffix: "/wal")
        var options = PageFileOptions()  // the defaults: 32 MiB checkpoint threshold
        // The test's own cleanup fails the checkpoint at its first page write instead of writing 1.1 GiB of pages.
        options.faults = IOFaultPlan(
            [IOFault(operation: .write, onCall: 1, kind: .fail(EIO), pathSuffix: "/data")], syncGate: gate)
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        let value = [UInt8](repeating: 0x5A, count: PageFileKeyValueStore.maximumValueLength)

        gate.hold()
        let first = Task { try await store.commit(Self.big(0, value: value)) }
        await gate.arrival()  // commit 0 is written; its sync is held
        var queued: [Task<UInt64?, any Error>] = []
        for marker in UInt8(1)...4 { queued.append(await startUpdate(store, Self.big(marker, value: value))) }
        let barrier = await startUpdate(store, KeyValueTransaction())  // runs once commit 4 is queued
        gate.hold()
        gate.release()
        // Commit 0 is published once its sync returned (its committer then waits in the checkpoint its finish()
        // starts, which waits for the group below: so it is not awaited here).
        while try await store.get([0, 6]) == nil { try await Task.sleep(for: .milliseconds(10)) }
        await gate.arrival()  // commits 1-4 are written as one group; its sync is held
        let walSize = try #require(try FileManager.default.attributesOfItem(atPath: directory.path + "/wal")[.size] as? Int)

        // What a process killed now leaves on disk (its writes are in the page cache).
        let crashed = try copyDirectory(directory.path)
        defer { crashed.remove() }

        gate.release()
        _ = try? await first.value
        for task in queued { _ = try? await task.value }
        _ = try? await barrier.value
        try? await store.close()

        #expect(walSize > 1 << 30, "the WAL is \(walSize) bytes")
        var reopenOptions = PageFileOptions()
        reopenOptions.readOnly = true  // the admin tool's open; a writable open with the defaults is refused alike
        do {
            let reopened = try await PageFileKeyValueStore.open(directory: crashed.path, options: reopenOptions)
            let acknowledged = try await reopened.get([0, 6]) != nil
            try await reopened.close()
            #expect(acknowledged, "commit 0 was acknowledged")
        } catch {
            Issue.record("a store written with the default options is refused at open with them: \(error)")
        }
    }
}
