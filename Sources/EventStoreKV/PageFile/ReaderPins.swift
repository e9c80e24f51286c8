// ReaderPins: how a read-only store in another process keeps the writer from reusing the pages of its snapshot, as
// LMDB's reader table does, with byte-range locks on the directory's `lock` file instead of shared memory.
//
// Invariants:
// - A pinned snapshot of checkpoint epoch E holds a read lock on byte `pinBase + E` of `<dir>/lock`, on a descriptor
//   of its own (an open-file-description lock, F_OFD_SETLK: it is not dropped when the process closes another
//   descriptor of the file, as a classic POSIX lock would be). The lock goes when that descriptor is closed, when
//   the last reader of the snapshot is done, or by the kernel when the process dies, so a crashed reader never
//   holds pages back.
// - The pin is taken before the opener checks that meta E is still the newest. So a writer that has not yet seen
//   the pin has not yet written meta E+1 either, and E's pages are reused by no checkpoint before E+2: by then the
//   pin is visible to the writer.
// - Before each checkpoint the writer asks the kernel for the lowest pinned byte (F_OFD_GETLK) and counts it as a
//   reader of that epoch: pages freed at checkpoint e are reused only once no pin below e remains (FreeList).
// - Pages freed before the writer opened carry no epoch: they count as freed at the epoch it opened at, so a
//   restarted writer does not reuse the pages of a reader that pinned an older checkpoint.
// - A writer that honours pins says so while it holds the store, and since which checkpoint: a read lock on byte
//   `pinBase - 1 - W`, W being the epoch of the meta it opened on. For a reader pinned at E >= W, every checkpoint
//   that could have reused E's pages (E+2 and later) was this writer's, so they cannot have been reused, and a page
//   that fails its checks is damage, reported as such. Otherwise (no writer, a writer that opened after E, one of
//   an older build that does not look for pins) such a failure after a writer moved on counts as reuse
//   (`snapshotExpired`).
// - A pin is an optimisation of a check that stays: when no pin can be taken (no `lock` file the process may open,
//   a kernel or file system without OFD locks), the snapshot reads unpinned, guarded as before (ReadOnlySnapshot).
//   The writer's own lock is a flock, which Linux keeps apart from byte-range locks on local file systems.

import EventStore
import Glibc

/// Reader pins in a store directory's `lock` file: one byte per pinned checkpoint epoch.
enum ReaderPins {
    /// The byte of epoch 0. The writer's pid is written at the start of the file; the pins lie far beyond it (a
    /// lock may cover bytes the file does not have).
    static let base: off_t = 1 << 40

    // Linux's open-file-description lock commands (<fcntl.h> defines them only under _GNU_SOURCE, which Swift's
    // Glibc module does not set); the same numbers on every Linux architecture.
    static let getLock: Int32 = 36  // F_OFD_GETLK
    static let setLock: Int32 = 37  // F_OFD_SETLK

    /// The byte a writer that honours pins, and opened on the meta of `epoch`, holds a read lock on; nil for an
    /// epoch too large to say so.
    static func honouringWriter(since epoch: UInt64) -> off_t? {
        epoch < UInt64(base - 1) ? base - 1 - off_t(epoch) : nil
    }

    /// The epoch a writer that honours pins opened on, if one holds the store (see the invariants above).
    static func honouringWriterSince(descriptor: Int32) -> UInt64? {
        guard let start = lockedByte(descriptor, from: 0, length: base), start < base else { return nil }
        return UInt64(base - 1 - start)
    }

    /// The start of a lock another open file description holds on bytes `from ..< from + length` (`length` 0: to
    /// the end of any file), or nil if there is none (or the kernel cannot say). Any one such lock, not the lowest.
    private static func lockedByte(_ descriptor: Int32, from start: off_t, length: off_t) -> off_t? {
        var query = flock()
        query.l_type = Int16(F_WRLCK)
        query.l_whence = Int16(SEEK_SET)
        query.l_start = start
        query.l_len = length
        guard fcntl(descriptor, getLock, &query) == 0, query.l_type != Int16(F_UNLCK) else { return nil }
        return query.l_start
    }

    /// Locks `length` bytes at `start` of the file open as `descriptor` (F_RDLCK, or F_UNLCK to unlock); false if the
    /// kernel refuses.
    static func lock(_ descriptor: Int32, at start: off_t, length: off_t = 1, type: Int32 = F_RDLCK) -> Bool {
        var lock = flock()
        lock.l_type = Int16(type)
        lock.l_whence = Int16(SEEK_SET)
        lock.l_start = start
        lock.l_len = length
        return fcntl(descriptor, setLock, &lock) == 0
    }

    /// The lowest epoch a reader in any process has pinned through `descriptor` (an open descriptor of the `lock`
    /// file), or nil when none has (or the kernel cannot say).
    static func oldestPinnedEpoch(descriptor: Int32) -> UInt64? {
        // F_OFD_GETLK reports one conflicting lock, not the lowest: ask again below each one found.
        var length: off_t = 0  // 0: to the end of any file
        var oldest: UInt64?
        while let start = lockedByte(descriptor, from: base, length: length), start >= base {
            oldest = UInt64(start - base)
            guard start > base else { break }
            length = start - base
        }
        return oldest
    }
}

/// A read lock on a snapshot's epoch byte in the `lock` file (see the invariants above); released by `release()`
/// (its store's close) or when the last reference goes.
final class ReaderPin: Sendable {
    /// The checkpoint epoch it pins.
    let epoch: UInt64
    private let descriptor: Locked<Int32?>

    private init(epoch: UInt64, descriptor: Int32) {
        self.epoch = epoch
        self.descriptor = Locked(descriptor)
    }

    /// Pins `epoch` in `directory`, or returns nil when it cannot (no `lock` file this process may open, one that
    /// is not a regular file, no OFD locks): the snapshot then reads unpinned. The open never waits (O_NONBLOCK: a
    /// FIFO named `lock` would otherwise block it until a writer opened the FIFO).
    static func take(directory: String, epoch: UInt64) -> ReaderPin? {
        guard epoch < UInt64(off_t.max - ReaderPins.base) else { return nil }
        let descriptor = open(directory + "/lock", O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard descriptor >= 0 else { return nil }
        var info = stat()
        guard fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFREG,
            ReaderPins.lock(descriptor, at: ReaderPins.base + off_t(epoch))
        else {
            close(descriptor)
            return nil
        }
        return ReaderPin(epoch: epoch, descriptor: descriptor)
    }

    /// The lowest epoch pinned by any reader but this one.
    var oldestOtherPinnedEpoch: UInt64? {
        descriptor.withLock { descriptor in descriptor.flatMap { ReaderPins.oldestPinnedEpoch(descriptor: $0) } }
    }

    /// Whether the writer holding the store now honours pins and has held it since before this pin's checkpoint, so
    /// that no checkpoint could have reused the pinned pages (see the invariants above).
    var isHonoured: Bool {
        descriptor.withLock { descriptor in
            guard let descriptor, let since = ReaderPins.honouringWriterSince(descriptor: descriptor) else { return false }
            return since <= epoch
        }
    }

    /// Lets the writer reuse the snapshot's pages (idempotent). Only once nothing reads the snapshot any more.
    func release() {
        descriptor.withLock { descriptor in
            // Unlock before closing: a child process being spawned holds a copy of the descriptor until it execs,
            // and the lock lives as long as any copy of the open file description does (as in DirectoryLock).
            if let open = descriptor {
                _ = ReaderPins.lock(open, at: ReaderPins.base + off_t(epoch), type: F_UNLCK)
                close(open)
            }
            descriptor = nil
        }
    }

    deinit { release() }
}
