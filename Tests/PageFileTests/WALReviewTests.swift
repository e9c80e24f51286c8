// Second-review findings on the WAL's synced LSN and the failed state: a checkpoint whose WAL fdatasync failed gave
// the WAL back before failing the store, so in `.deferred` durability the flusher could fdatasync it again (never
// retry a sync after an error); and the search for proof that a damaged record was durable checksummed every
// frame-shaped candidate over its whole claimed length, which bytes shaped like many frames made quadratic.

import EventStore
@testable import EventStoreKV
import Foundation
import Glibc
import Synchronization
import Testing

@Suite("WAL review")
struct WALReviewTests {
    @Test("a checkpoint's failed WAL fdatasync is never followed by another fdatasync of the WAL (.deferred)")
    func noWALSyncRetryAfterCheckpointSyncFailure() async throws {
        let directory = TemporaryDirectory("wal-sync-retry")
        defer { directory.remove() }
        let created = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        try await created.close()

        // WAL sync #1 (the checkpoint's) fails with EIO; any further WAL sync fails with ENOTTY, so it shows.
        let faults = IOFaultPlan([
            IOFault(operation: .sync, onCall: 1, kind: .fail(EIO), pathSuffix: "/wal"),
            // (The plan stops at the first fault that fires, so the second one starts counting at the second sync.)
            IOFault(operation: .sync, onCall: 1, kind: .fail(ENOTTY), pathSuffix: "/wal"),
        ])
        let failures = Mutex<[String]>([])
        var options = smallOptions(faults: faults)
        options.durability = .deferred(maximumDelay: .milliseconds(100))
        options.observer = { event in
            guard case .failed(let reason) = event else { return }
            let first = failures.withLock { list in
                list.append(reason)
                return list.count == 1
            }
            // An observer that takes a moment (logging, alerting) on the checkpoint's thread: the window in which a
            // flusher woken by the WAL's release used to find the store not yet failed.
            if first { usleep(500_000) }
        }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: options)
        _ = try await store.commit(KeyValueTransaction(writes: [.put([1], [1])]))  // an unsynced deferred commit
        await #expect(throws: EventStoreError.self) { try await store.checkpoint() }
        try? await store.close()
        let seen = failures.withLock { $0 }
        #expect(seen.count == 1, "the WAL was fdatasynced again after its fdatasync failed: \(seen)")
    }

    /// 2 MiB of frames whose LSN and synced fields fit and whose lengths run to the middle of the file: checksumming
    /// each over its length cost n²/96 bytes (23-26 s to open). The search now gives up past a bounded multiple of the
    /// bytes, and the open fails with `corrupted` rather than cut what may be acknowledged commits.
    @Test("a damaged WAL tail full of frame-shaped bytes: the proof search gives up within its budget, and the open fails")
    func proofSearchIsBounded() async throws {
        let directory = TemporaryDirectory("wal-proof-cost")
        defer { directory.remove() }
        let created = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        try await created.close()
        let walPath = directory.file("wal")
        let header = Array(try Data(contentsOf: URL(fileURLWithPath: walPath)).prefix(WriteAheadLog.headerSize))
        let salt = header.loadLE(UInt64.self, at: 16)
        let firstLSN = header.loadLE(UInt64.self, at: 24)
        let size = 2 << 20
        var bytes = header + [0xFF]  // the record expected at offset 40 is damaged
        while bytes.count + 24 <= size {
            let remaining = size - bytes.count - 24
            var frame = PageBytesWriter(capacity: 24)
            frame.u32(UInt32(min(size / 2, remaining)))  // a length that fits: the CRC would run over all of it
            frame.u32(0xDEAD_BEEF)  // a CRC that never holds
            frame.u64(firstLSN + 1)
            frame.u64(firstLSN)  // "synced" reaches the damaged record
            bytes += frame.bytes
        }
        bytes += [UInt8](repeating: 0xFF, count: size - bytes.count)
        let scan = WriteAheadLog.scan(bytes, salt: salt, firstLSN: firstLSN)
        #expect(scan.proofOfDamage == .undecided(offset: WriteAheadLog.headerSize))
        try Data(bytes).write(to: URL(fileURLWithPath: walPath))
        await #expect {
            try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        } throws: { error in
            guard case EventStoreError.corrupted(let location, let detail) = error else { return false }
            return location.hasSuffix("wal offset 40 (record LSN \(firstLSN))") && detail.contains("too many")
        }
    }
}
