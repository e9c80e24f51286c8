// Failpoints: named places where a crash-test child process kills itself, chosen by environment variable.
//
// Invariants:
// - Disabled unless EVENTSTORE_FAILPOINT is set (read once per process); then `hit(_:)` costs one string compare.
// - EVENTSTORE_FAILPOINT is `name` or `name:N`: the process SIGKILLs itself on the Nth hit of `name` (default 1),
//   exactly as a power cut or `kill -9` would stop it: no cleanup, no flush.

import EventStore
import Glibc

/// Named crash points for the crash tests.
enum Failpoint {
    /// Before the WAL bytes of a commit group are fsynced.
    static let beforeWALSync = "wal-before-sync"
    /// After the WAL fsync, before any committer of the group is acknowledged.
    static let afterWALSyncBeforeAck = "wal-after-sync-before-ack"
    /// In a checkpoint, after the dirty pages are written and before the new meta page.
    static let midCheckpoint = "checkpoint-mid"
    /// In a checkpoint, after the new WAL header is written and before the WAL is truncated (if it is too large)
    /// and fdatasynced.
    static let duringWALTruncation = "wal-truncate"
    /// During recovery on open, after the WAL was replayed and before the recovery checkpoint finishes.
    static let duringRecovery = "recovery"

    private static let configured: (name: String, count: Int)? = {
        guard let raw = getenv("EVENTSTORE_FAILPOINT").map({ String(cString: $0) }), !raw.isEmpty else { return nil }
        let parts = raw.split(separator: ":", maxSplits: 1)
        return (String(parts[0]), parts.count > 1 ? Int(parts[1]) ?? 1 : 1)
    }()

    private static let hits = Locked(0)

    /// Kills the process if `name` is the configured failpoint and this is its Nth hit.
    static func hit(_ name: String) {
        guard let configured, configured.name == name else { return }
        let count = hits.withLock { hits in
            hits += 1
            return hits
        }
        if count == configured.count { kill(getpid(), SIGKILL) }
    }
}
