// Directory.create makes a directory and promises its entry in the parent durable. When the parent is writable and
// searchable but not readable (a 0733 drop directory), this process made the entry, so the parent's fsync may not be
// skipped as it is for an entry someone else made: the create syncs it or fails (found by the fifth-round review of
// the holder's sync, twenty-fourth session).

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

@Suite("Directory.create under a parent the process may write but not read")
struct UnreadableHolderCreateTests {
    @Test("a directory this process creates has its entry synced, or the create fails")
    func createdEntryIsSyncedOrRefused() throws {
        let root = TemporaryDirectory("unreadable-holder-create")
        defer { root.remove() }
        let holder = root.file("drop")
        try FileManager.default.createDirectory(atPath: holder, withIntermediateDirectories: true)
        #expect(chmod(root.path, 0o755) == 0)
        #expect(chmod(holder, 0o733) == 0)  // others: write and search, no read
        defer { _ = chmod(holder, 0o755) }
        let store = holder + "/store"
        let recorder = IORecorder()
        let faults = IOFaultPlan([], recorder: recorder)
        // Run as another user on one thread only: setfsuid is per thread on Linux and, from 0 to non-zero, drops
        // CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from that thread's effective set.
        let outcome = Locked<String?>(nil)
        let finished = DispatchSemaphore(value: 0)
        let thread = Thread {
            let wasRoot = getuid() == 0
            if wasRoot { _ = setFileSystemGID(65534); _ = setFileSystemUID(65534) }
            do {
                try Directory.create(store, faults: faults)
                outcome.withLock { $0 = "created" }
            } catch {
                outcome.withLock { $0 = "threw \(error)" }
            }
            if wasRoot { _ = setFileSystemUID(0); _ = setFileSystemGID(0) }
            finished.signal()
        }
        thread.start()
        finished.wait()
        let result = outcome.withLock { $0 }
        let events = recorder.recorded
        let made = events.contains { if case .createDirectory = $0 { return true } else { return false } }
        #expect(made, "\(result ?? "")")
        if result == "created" {
            // The create succeeded, so the parent holding the new entry must have been fsynced.
            let synced = syncedDirectories(events).contains(holder)
            #expect(synced, "Directory.create returned, but the parent holding its entry was never synced: \(events)")
        } else {
            // Refused: the directory it made is taken away, so a retry cannot find it and go on unsynced.
            #expect(!FileManager.default.fileExists(atPath: store), "a refused create left \(store) behind")
        }
    }
}

@_silgen_name("setfsuid") private func setFileSystemUID(_ uid: UInt32) -> Int32
@_silgen_name("setfsgid") private func setFileSystemGID(_ gid: UInt32) -> Int32
