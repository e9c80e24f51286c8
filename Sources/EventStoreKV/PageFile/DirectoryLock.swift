// DirectoryLock: one writer per store directory, or any number of read-only openers, enforced with flock on the
// directory's `lock` file.
//
// Invariants:
// - While a writable store is open its process holds an exclusive flock on `<dir>/lock`, and the file holds its
//   pid. Another opener (another process, or the same process again; read-only or not) gets
//   `storeLocked(path:holderPID:)` naming the pid.
// - A read-only store holds a shared flock on `<dir>/lock`, opened read-only: read-only openers share the directory,
//   and a writer is refused while any of them has it (flock conflicts between open file descriptions, so this holds
//   within one process too). Read-only openers never write the file; if it is missing they create it, so that a
//   later writer is still excluded, and where the directory cannot be written at all (a read-only file system,
//   EROFS) they go without a lock: no writer can open a store there either.
// - The lock is advisory and released by the kernel when the descriptor closes, so a crashed holder never leaves
//   a stale lock behind; the pid in the file is only informational. A writer's clean release empties the file and
//   unlocks explicitly first, so a copy of the descriptor held briefly by a child process being spawned cannot keep
//   the store locked, and a pid left in the file names a live or a crashed writer, never a cleanly closed one.

import EventStore
import Glibc

/// The lock on a store directory: exclusive for a writable store, shared for a read-only one.
final class DirectoryLock: Sendable {
    private let descriptor: Locked<Int32?>
    private let exclusive: Bool
    let path: String

    private init(descriptor: Int32?, exclusive: Bool, path: String) {
        self.descriptor = Locked(descriptor)
        self.exclusive = exclusive
        self.path = path
    }

    /// Takes the lock on `directory`, shared for a read-only opener, or throws `storeLocked` naming the holder.
    static func acquire(directory: String, shared: Bool = false) throws -> DirectoryLock {
        let path = directory + "/lock"
        guard let descriptor = try openLockFile(path, shared: shared) else {
            return DirectoryLock(descriptor: nil, exclusive: false, path: directory)
        }
        guard flock(descriptor, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0 else {
            let code = errno
            // The file names the last writer. It holds the store now only if a shared lock is refused too;
            // otherwise read-only openers do, and the pid is a crashed writer's.
            var holder: Int32?
            if code == EWOULDBLOCK, shared || flock(descriptor, LOCK_SH | LOCK_NB) != 0 {
                holder = readPID(descriptor)
            }
            flock(descriptor, LOCK_UN)
            close(descriptor)
            if code == EWOULDBLOCK { throw EventStoreError.storeLocked(path: directory, holderPID: holder) }
            throw EventStoreError.ioFailure(operation: "flock", path: path, errno: code)
        }
        if !shared {
            let pid = Array("\(getpid())\n".utf8)
            _ = ftruncate(descriptor, 0)
            _ = pid.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 0) }
        }
        return DirectoryLock(descriptor: descriptor, exclusive: !shared, path: directory)
    }

    /// Opens the lock file: read-write (creating it) for a writer; read-only for a shared opener, which creates it
    /// only if it is missing. nil when a shared opener finds no lock file on a read-only file system.
    private static func openLockFile(_ path: String, shared: Bool) throws -> Int32? {
        if shared {
            let descriptor = open(path, O_RDONLY | O_CLOEXEC)
            if descriptor >= 0 { return descriptor }
            guard errno == ENOENT else { throw EventStoreError.ioFailure(operation: "open", path: path, errno: errno) }
        }
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if descriptor >= 0 { return descriptor }
        let code = errno
        if shared, code == EROFS { return nil }
        throw EventStoreError.ioFailure(operation: "open", path: path, errno: code)
    }

    private static func readPID(_ descriptor: Int32) -> Int32? {
        var buffer = [UInt8](repeating: 0, count: 32)
        let count = buffer.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, 0) }
        guard count > 0 else { return nil }
        let text = String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: " \n")
        return Int32(text)
    }

    /// Releases the lock (idempotent).
    func release() {
        descriptor.withLock { descriptor in
            // Unlock explicitly before closing: a child process being spawned by another thread holds a copy of
            // the descriptor until it execs (O_CLOEXEC closes it only then), and the flock lives as long as any copy
            // of the open file description does. Without LOCK_UN, reopening right after close could fail with
            // storeLocked naming our own pid.
            if let open = descriptor {
                if exclusive { _ = ftruncate(open, 0) }
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
