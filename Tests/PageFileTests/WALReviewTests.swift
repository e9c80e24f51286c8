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

    /// 2 MiB of frames whose LSN, synced LSN and revision fit and whose lengths run to the middle of the file:
    /// checksumming each over its length cost n²/96 bytes (23-26 s to open). The search now gives up past a bounded multiple of the
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
        while bytes.count + 32 <= size {
            let remaining = size - bytes.count - 24
            var frame = PageBytesWriter(capacity: 32)
            frame.u32(UInt32(min(size / 2, remaining)))  // a length that fits: the CRC would run over all of it
            frame.u32(0xDEAD_BEEF)  // a CRC that never holds
            frame.u64(firstLSN + 1)
            frame.u64(firstLSN)  // "synced" reaches the damaged record
            frame.u64(firstLSN + 1)  // the revision a new store's records carry (revision = LSN)
            bytes += frame.bytes
        }
        bytes += [UInt8](repeating: 0xFF, count: size - bytes.count)
        let scan = WriteAheadLog.scan(bytes, salt: salt, firstLSN: firstLSN, revisionLead: 0)
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

extension WALReviewTests {
    /// After a checkpoint the WAL is reused without truncating it: behind the new header lie the older generations'
    /// records, and their payloads are the user's bytes. Numbers in them (positions, versions, amounts) can read as
    /// frames whose length fits and whose LSN and synced LSN fit the search: an AccountLedger demo's store, closed
    /// cleanly, then failed to open, the proof search having given up on hundreds of them. Candidates must now also
    /// carry the generation's revision for their LSN, which no such numbers do here.
    @Test("a cleanly closed store whose reused WAL holds older records full of frame-like numbers reopens")
    func olderRecordsFullOfIntegersAreNotFrames() async throws {
        let directory = TemporaryDirectory("wal-integers")
        defer { directory.remove() }
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        for round in 0..<3 {
            for commit in 0..<600 {
                // A payload of numbers such as an event might hold: 200,000, 5,000, 4,000 and 7, as u32 and u64.
                var value = PageBytesWriter(capacity: 512)
                for _ in 0..<16 {
                    value.u32(200_000)
                    value.u32(0)
                    value.u64(5_000)
                    value.u64(4_000)
                    value.u64(7)
                }
                var key = PageBytesWriter(capacity: 16)
                key.u64(UInt64(round * 1_000 + commit))
                _ = try await store.commit(KeyValueTransaction(writes: [.put(key.bytes, value.bytes)]))
            }
            if round < 2 { try await store.checkpoint() }
        }
        try await store.close()
        let wal = [UInt8](try Data(contentsOf: URL(fileURLWithPath: directory.file("wal"))))
        let meta = try #require(try newestMeta(of: directory))
        let scan = WriteAheadLog.scan(
            wal, salt: meta.walSalt, firstLSN: meta.checkpointLSN + 1,
            revisionLead: meta.revision &- meta.checkpointLSN)
        #expect(scan.transactions.isEmpty && scan.discarded > 0, "the older records should lie behind the header")
        #expect(scan.proofOfDamage == nil)
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(try await reopened.currentRevision() == 1_800)
        try await reopened.close()
    }
}
