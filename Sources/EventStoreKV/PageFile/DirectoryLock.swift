// DirectoryLock: one writer per store directory, enforced with flock on the directory's `lock` file. Read-only
// stores take no flock: they read a snapshot beside the writer (ReadOnlySnapshot.swift), pinned by byte-range read
// locks on the same file that the writer looks up before each checkpoint (ReaderPins.swift).
//
// Invariants:
// - While a writable store is open its process holds an exclusive flock on `<dir>/lock`, and the file holds its
//   pid. Another writable opener (another process, or the same process again) gets `storeLocked(path:holderPID:)`
//   naming the pid.
// - The writer also holds an exclusive flock on the data file and the WAL it opened (SystemFile.lockForWriting), so
//   two directories whose `data` or `wal` reach one file (a symlink) never both write it: the second opener gets
//   `storeLocked` naming that file. Compaction locks its new file before renaming it over `data`.
// - The lock file, the data file and the WAL must be regular files: anything else (a FIFO, a directory) is
//   `incompatibleStore` naming it, and no open waits on a FIFO (O_NONBLOCK).
// - The lock is advisory and released by the kernel when the descriptor closes, so a crashed holder never leaves
//   a stale lock behind; the pid in the file is only informational. A writer's clean release empties the file and
//   unlocks explicitly first, so a copy of the descriptor held briefly by a child process being spawned cannot keep
//   the store locked, and a pid left in the file names a live or a crashed writer, never a cleanly closed one.
// - The lock held is on the file that is `<dir>/lock` once it is held: a lock file can be unlinked between an opener's
//   open(2) and its flock (a failed backup removes the one it made), so a flock on a file no longer at that path is
//   dropped and taken again on the current one. Otherwise two writers could each hold "the" lock.

import EventStore
import Glibc

/// A writer's exclusive lock on a store directory.
final class DirectoryLock: Sendable {
    private let descriptor: Locked<Int32?>
    /// The data file and WAL this writer holds flocks on (``lockFile(_:)``): released with the directory lock, so a
    /// writer dropped without close() (whose WAL flusher may keep the descriptors open) leaves nothing locked.
    private let files = Locked<[SystemFile]>([])
    let path: String

    private init(descriptor: Int32, path: String) {
        self.descriptor = Locked(descriptor)
        self.path = path
    }

    /// Takes the lock on `directory`, or throws `storeLocked` naming the holder. `beforeLocking` runs between the
    /// lock file's open and its flock (for tests).
    static func acquire(directory: String, beforeLocking: () -> Void = {}) throws -> DirectoryLock {
        let path = directory + "/lock"
        var attempts = 0
        while true {
            let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0o600)
            guard descriptor >= 0 else { throw EventStoreError.ioFailure(operation: "open", path: path, errno: errno) }
            var info = stat()
            guard fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFREG else {
                close(descriptor)
                throw EventStoreError.incompatibleStore(path: path, reason: "not a regular file")
            }
            if attempts == 0 { beforeLocking() }
            guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
                let code = errno
                let holder = code == EWOULDBLOCK ? readPID(descriptor) : nil
                close(descriptor)
                if code == EWOULDBLOCK { throw EventStoreError.storeLocked(path: directory, holderPID: holder) }
                throw EventStoreError.ioFailure(operation: "flock", path: path, errno: code)
            }
            if isCurrent(descriptor, path: path) { return claim(descriptor, directory: directory) }
            // The file was unlinked (or replaced) after the open: nobody else will ever lock this one.
            flock(descriptor, LOCK_UN)
            close(descriptor)
            attempts += 1
            guard attempts < 100 else {
                throw EventStoreError.ioFailure(
                    operation: "flock (the lock file keeps being replaced)", path: path, errno: EAGAIN)
            }
        }
    }

    /// Whether the open file `descriptor` is the one at `path` now.
    private static func isCurrent(_ descriptor: Int32, path: String) -> Bool {
        var held = stat()
        var named = stat()
        guard fstat(descriptor, &held) == 0, stat(path, &named) == 0 else { return false }
        return held.st_dev == named.st_dev && held.st_ino == named.st_ino
    }

    /// Writes this process's pid into the held lock file.
    private static func claim(_ descriptor: Int32, directory: String) -> DirectoryLock {
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = pid.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
        return DirectoryLock(descriptor: descriptor, path: directory)
    }

    private static func readPID(_ descriptor: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: " \n")
        return Int32(text)
    }

    /// Tells pinned readers that this writer honours their pins and opened on the meta of `epoch` (ReaderPins.swift).
    /// A kernel without OFD locks refuses it, and then it refuses readers' pins too.
    func announcePinsHonoured(since epoch: UInt64) {
        descriptor.withLock { descriptor in
            guard let descriptor, let byte = ReaderPins.honouringWriter(since: epoch) else { return }
            _ = ReaderPins.lock(descriptor, at: byte)
        }
    }

    /// The lowest checkpoint epoch a read-only store in any process has pinned in this directory (ReaderPins.swift),
    /// or nil when none has.
    func oldestPinnedEpoch() -> UInt64? {
        descriptor.withLock { descriptor in descriptor.flatMap { ReaderPins.oldestPinnedEpoch(descriptor: $0) } }
    }

    /// Takes `file`'s writer flock (``SystemFile/lockForWriting()``) until ``release()`` or ``unlockFile(_:)``.
    /// - Throws: `storeLocked` naming the file if another writer holds it.
    func lockFile(_ file: SystemFile) throws {
        try file.lockForWriting()
        files.withLock { $0.append(file) }
    }

    /// Holds the lock `from` holds through `to`, a duplicate descriptor of the same open file (`SystemFile.renamed`),
    /// without releasing it.
    func transferFile(_ from: SystemFile, to: SystemFile) {
        files.withLock { files in
            files.removeAll { $0 === from }
            files.append(to)
        }
    }

    /// Releases `file`'s writer flock early (the file compaction replaced).
    func unlockFile(_ file: SystemFile) {
        file.unlockForWriting()
        files.withLock { $0.removeAll { $0 === file } }
    }

    /// Releases the lock, and the writer flocks of the files it holds (idempotent).
    func release() {
        for file in files.withLock({ files in defer { files = [] }; return files }) { file.unlockForWriting() }
        descriptor.withLock { descriptor in
            // Unlock explicitly before closing: a child process being spawned by another thread holds a copy of
            // the descriptor until it execs (O_CLOEXEC closes it only then), and the flock lives as long as any copy
            // of the open file description does. Without LOCK_UN, reopening right after close could fail with
            // storeLocked naming our own pid.
            if let open = descriptor {
                _ = ftruncate(open, 0)
                _ = ReaderPins.lock(open, at: 0, length: ReaderPins.base, type: F_UNLCK)
                flock(open, LOCK_UN)
                close(open)
            }
            descriptor = nil
        }
    }

    deinit { release() }
}

extension String {
    /// The string without leading and trailing characters from `set`.
    fileprivate func trimmingCharacters(in set: String) -> String {
        var characters = Substring(self)
        while let first = characters.first, set.contains(first) { characters.removeFirst() }
        while let last = characters.last, set.contains(last) { characters.removeLast() }
        return String(characters)
    }
}
