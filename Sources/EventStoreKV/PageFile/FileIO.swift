// FileIO: thin typed wrappers over the Glibc file syscalls the engine uses, and the I/O-fault seam for tests.
//
// Invariants:
// - Every failed syscall becomes `EventStoreError.ioFailure(operation:path:errno:)` naming the call and the file.
// - `readFully`/`writeFully` loop over short transfers and EINTR; a read that hits end-of-file returns fewer bytes
//   (callers decide whether that is corruption), a write never silently writes less.
// - `sync()` is never retried after it fails: the caller puts the store into its failed state (see
//   GroupCommit.swift), because after a failed fsync the kernel may already have dropped the dirty pages.
// - The fault seam (`IOFaultPlan`, with the `IOGate` that holds syncs) is per store (set through
//   `PageFileOptions.faults`), so tests running in parallel never see each other's faults. Production stores have no
//   plan and pay one nil check per call.
// - A plan may carry an `IORecorder` (test-only, for the power-loss tests): it sees every file mutation of the store,
//   in one global order, under one lock that is held across the syscall itself, so the recorded order is the order
//   the kernel saw (a sync is recorded after every write recorded before it has returned, and before any recorded
//   after it has started). The mutations are exactly these: `SystemFile.write`, `truncate`, `sync` and an
//   `open(create:)` that made a new file, and `Directory.create` (mkdir), `sync`, `rename` and `remove` (unlink); no
//   file of the engine is mutated any other way, except the lock file's informational pid (DirectoryLock.swift).
//   Files opened without the plan are not recorded: a new store's creation (Recovery.createDataFile) and backups
//   (Backup.swift), so recordings start from an existing store. Only calls that succeeded are recorded. The
//   recorder never changes what the engine does, only when (calls are serialised while it is on); without a plan,
//   nothing of it is reached.

import EventStore
import Foundation
import Glibc
import Synchronization

/// A fault a test asks the file layer to produce on the Nth matching call.
struct IOFault: Sendable {
    /// Which calls count towards `onCall`.
    enum Operation: Sendable { case write, sync, any }
    /// What the faulty call does.
    enum Kind: Sendable {
        /// The call fails with this errno (EIO, ENOSPC, ...).
        case fail(Int32)
        /// A write transfers only half of its bytes, then fails with ENOSPC (a full disk).
        case shortWrite
    }

    var operation: Operation
    var onCall: Int
    var kind: Kind
    /// Only files whose path ends with this suffix count (nil: every file of the store).
    var pathSuffix: String?
}

/// The faults planned for one store; counts matching calls and fires each fault once.
final class IOFaultPlan: Sendable {
    private struct State {
        var faults: [IOFault]
        var counts: [Int]
    }

    private let state: Locked<State>
    /// Holds syncs while a test asks it to (see IOGate).
    let syncGate: IOGate?
    /// Called with the file's path and the bytes asked for before every read, so a test can let another store act
    /// at that moment, or count what is read.
    let beforeRead: (@Sendable (_ path: String, _ count: Int) -> Void)?
    /// Records every file mutation, in order (power-loss tests; see IORecorder).
    let recorder: IORecorder?

    init(
        _ faults: [IOFault], syncGate: IOGate? = nil,
        beforeRead: (@Sendable (_ path: String, _ count: Int) -> Void)? = nil, recorder: IORecorder? = nil
    ) {
        state = Locked(State(faults: faults, counts: Array(repeating: 0, count: faults.count)))
        self.syncGate = syncGate
        self.beforeRead = beforeRead
        self.recorder = recorder
    }

    /// The fault to produce for this call, if any.
    func fault(for operation: IOFault.Operation, path: String) -> IOFault.Kind? {
        state.withLock { state in
            for index in state.faults.indices {
                let fault = state.faults[index]
                guard fault.operation == .any || fault.operation == operation else { continue }
                if let suffix = fault.pathSuffix, !path.hasSuffix(suffix) { continue }
                state.counts[index] += 1
                if state.counts[index] == fault.onCall { return fault.kind }
            }
            return nil
        }
    }
}

/// One file mutation, as the recorder saw it.
enum IOEvent: Sendable {
    /// `bytes` written at `offset` of the file at `path`.
    case write(path: String, offset: UInt64, bytes: [UInt8])
    /// The file at `path` cut or extended to `size` bytes.
    case truncate(path: String, size: UInt64)
    /// fdatasync of the file at `path`: every earlier write and truncate of it is durable.
    case sync(path: String)
    /// open(O_CREAT) made a new, empty file at `path` (its directory entry is durable only after a directory sync).
    case create(path: String)
    /// mkdir made the directory `path`.
    case createDirectory(path: String)
    /// fsync of the directory `path`: every earlier create, rename and remove in it is durable.
    case syncDirectory(path: String)
    /// rename(2) of `source` over `destination`.
    case rename(source: String, destination: String)
    /// unlink(2) removed the file at `path`.
    case remove(path: String)
    /// A write, truncate or sync went to a descriptor whose path no longer names its file (renamed over or removed):
    /// the path alone does not say which file changed. The engine never does this; a test treats it as an error.
    case detached(path: String, operation: String)
}

/// Test-only: records every file mutation of one store in one global order (see the invariants above). The lock is
/// held while the syscall runs, so the order recorded is the order the kernel saw.
final class IORecorder: Sendable {
    private let events = Locked<[IOEvent]>([])

    init() {}

    /// Runs `body` (the syscall) under the lock; if it succeeds, appends what `event` makes of its result.
    func perform<Result>(_ body: () throws -> Result, event: (Result) -> IOEvent?) rethrows -> Result {
        try events.withLock { events in
            let result = try body()
            if let recorded = event(result) { events.append(recorded) }
            return result
        }
    }

    /// Events recorded so far: every event with an index below it has happened.
    var count: Int { events.withLock { $0.count } }

    /// Every event recorded so far, in order.
    var recorded: [IOEvent] { events.withLock { $0 } }
}

/// Holds fdatasync calls on the files whose path ends with `pathSuffix` while a test asks it to, so the test can queue
/// commits behind a sync in progress and look at the store meanwhile. `hold()` makes the next such call block until
/// `release()`; `arrival()` returns once a call is blocked.
final class IOGate: @unchecked Sendable {
    // @unchecked: every var below is guarded by `condition`.
    private let condition = NSCondition()
    private var holds = 0
    private var blocked = 0
    private var permits = 0
    private var arrivals: [CheckedContinuation<Void, Never>] = []
    let pathSuffix: String

    init(pathSuffix: String) { self.pathSuffix = pathSuffix }

    /// Makes the next matching sync block until `release()`.
    func hold() {
        condition.lock()
        holds += 1
        condition.unlock()
    }

    /// Lets one blocked (or the next held) sync go on.
    func release() {
        condition.lock()
        permits += 1
        condition.broadcast()
        condition.unlock()
    }

    /// Returns once a sync is blocked.
    func arrival() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            if blocked > 0 { continuation.resume() } else { arrivals.append(continuation) }
            condition.unlock()
        }
    }

    /// Called by the file layer before a sync of `path`; blocks while that sync is held.
    func pass(_ path: String) {
        guard path.hasSuffix(pathSuffix) else { return }
        condition.lock()
        defer { condition.unlock() }
        guard holds > 0 else { return }
        holds -= 1
        blocked += 1
        for arrival in arrivals { arrival.resume() }
        arrivals.removeAll()
        while permits == 0 { condition.wait() }
        permits -= 1
        blocked -= 1
    }
}

/// An open file descriptor with its path, for positioned reads and writes.
final class SystemFile: Sendable {
    let descriptor: Int32
    let path: String
    let faults: IOFaultPlan?

    private init(descriptor: Int32, path: String, faults: IOFaultPlan?) {
        self.descriptor = descriptor
        self.path = path
        self.faults = faults
    }

    /// Opens (and with `create`, creates with mode 0600) the file at `path` for reading and writing, or only for
    /// reading with `readOnly` (then every write fails with EBADF: a second guard behind the store's own refusal).
    /// - Throws: `incompatibleStore` naming `path` if it is not a regular file (a directory, a FIFO, a device): the
    ///   open never waits for a FIFO's other end (O_NONBLOCK, which changes nothing for a regular file).
    /// With `exclusive` (and `create`), the file must not exist: a name left at `path`, a symlink included, fails
    /// the open (EEXIST) instead of being followed.
    static func open(
        _ path: String, create: Bool, exclusive: Bool = false, readOnly: Bool = false, faults: IOFaultPlan?
    ) throws -> SystemFile {
        let flags = (readOnly ? O_RDONLY : O_RDWR | (create ? O_CREAT : 0)) | O_CLOEXEC | O_NONBLOCK
            | (exclusive ? O_EXCL | O_NOFOLLOW : 0)
        let file: SystemFile
        if let recorder = faults?.recorder, create, !readOnly {
            let (descriptor, code, _) = recorder.perform({ () -> (Int32, Int32, Bool) in
                let existed = exists(path)
                let descriptor = Glibc.open(path, flags, 0o600)
                return (descriptor, descriptor >= 0 ? 0 : errno, existed)
            }, event: { $0.0 >= 0 && !$0.2 ? .create(path: path) : nil })
            guard descriptor >= 0 else { throw EventStoreError.ioFailure(operation: "open", path: path, errno: code) }
            file = SystemFile(descriptor: descriptor, path: path, faults: faults)
        } else {
            let descriptor = Glibc.open(path, flags, 0o600)
            guard descriptor >= 0 else { throw EventStoreError.ioFailure(operation: "open", path: path, errno: errno) }
            file = SystemFile(descriptor: descriptor, path: path, faults: faults)
        }
        try file.checkRegular()
        return file
    }

    /// Creates a new, empty file at `path` (mode 0600) for reading and writing, replacing what is there: the name is
    /// unlinked first and the file created exclusively, so a symlink left at `path` (into another store, say) is
    /// removed, never followed (the unlink is recorded as a remove when `faults` records). For files that are
    /// written whole before anything relies on them (a new store's data file and WAL, a backup's, compaction's new
    /// file); the caller syncs the directory.
    static func create(_ path: String, faults: IOFaultPlan? = nil) throws -> SystemFile {
        let unlinkUnrecorded = { unlink(path) == 0 ? 0 : errno }
        let code =
            if let recorder = faults?.recorder {
                recorder.perform(unlinkUnrecorded, event: { $0 == 0 ? .remove(path: path) : nil })
            } else {
                unlinkUnrecorded()
            }
        guard code == 0 || code == ENOENT else {
            throw EventStoreError.ioFailure(operation: "unlink", path: path, errno: code)
        }
        return try open(path, create: true, exclusive: true, faults: faults)
    }

    /// Throws `incompatibleStore` naming the path unless the open file is a regular file.
    private func checkRegular() throws {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw EventStoreError.ioFailure(operation: "fstat", path: path, errno: errno)
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            throw EventStoreError.incompatibleStore(path: path, reason: "not a regular file")
        }
    }

    /// Takes an exclusive flock on this file for a writer (see DirectoryLock.swift), so that two store directories
    /// whose `data` or `wal` name one file (a symlink, or a copy that kept one) never both write it: the directory
    /// lock alone guards the directory, not the file its names reach. Released by ``unlockForWriting()`` or when
    /// the descriptor closes.
    /// - Throws: `storeLocked` naming the file if another writer holds it.
    func lockForWriting() throws {
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            if code == EWOULDBLOCK { throw EventStoreError.storeLocked(path: path, holderPID: nil) }
            throw EventStoreError.ioFailure(operation: "flock", path: path, errno: code)
        }
    }

    /// This open file under the name `newPath` it is (or is about to be) renamed to: a duplicate descriptor of the
    /// same open file description, so a ``lockForWriting()`` lock stays held through both.
    func renamed(to newPath: String) throws -> SystemFile {
        let duplicate = fcntl(descriptor, F_DUPFD_CLOEXEC, 0)
        guard duplicate >= 0 else { throw EventStoreError.ioFailure(operation: "dup", path: newPath, errno: errno) }
        return SystemFile(descriptor: duplicate, path: newPath, faults: faults)
    }

    /// Releases ``lockForWriting()``'s lock now, before the descriptor closes: a child process being spawned holds a
    /// copy of the descriptor until it execs, and readers may hold this file after its store closes.
    func unlockForWriting() { flock(descriptor, LOCK_UN) }

    /// Whether a file exists at `path`.
    static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    /// Reads up to `count` bytes at `offset`; fewer only at end of file.
    func read(count: Int, at offset: UInt64) throws -> [UInt8] {
        faults?.beforeRead?(path, count)
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let result = buffer.withUnsafeMutableBytes { raw in
                pread(descriptor, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw EventStoreError.ioFailure(operation: "pread", path: path, errno: errno)
            }
            if result == 0 { break }
            done += result
        }
        if done < count { buffer.removeLast(count - done) }
        return buffer
    }

    /// Writes all of `bytes` at `offset`.
    func write(_ bytes: [UInt8], at offset: UInt64) throws {
        guard let faults else { return try write(bytes, at: offset, limit: bytes.count) }
        var limit = bytes.count
        var injected: Int32?
        switch faults.fault(for: .write, path: path) {
        case .fail(let code): throw EventStoreError.ioFailure(operation: "pwrite", path: path, errno: code)
        case .shortWrite:
            limit = bytes.count / 2
            injected = ENOSPC
        case nil: break
        }
        if let recorder = faults.recorder {
            try recorder.perform({ try write(bytes, at: offset, limit: limit) }, event: { _ in
                (try? isReplaced()) == false
                    ? .write(path: path, offset: offset, bytes: Array(bytes[..<limit]))
                    : .detached(path: path, operation: "pwrite")
            })
        } else {
            try write(bytes, at: offset, limit: limit)
        }
        if let injected { throw EventStoreError.ioFailure(operation: "pwrite", path: path, errno: injected) }
    }

    /// Writes the first `limit` bytes of `bytes` at `offset`.
    private func write(_ bytes: [UInt8], at offset: UInt64, limit: Int) throws {
        var done = 0
        while done < limit {
            let result = bytes.withUnsafeBytes { raw in
                pwrite(descriptor, raw.baseAddress! + done, limit - done, off_t(offset) + off_t(done))
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw EventStoreError.ioFailure(operation: "pwrite", path: path, errno: errno)
            }
            done += result
        }
    }

    /// Asks the kernel to start writing `length` bytes at `offset` to the device now, without waiting for them: on
    /// Linux, posix_fadvise(POSIX_FADV_DONTNEED) starts write-out of the range's dirty pages (mm/fadvise.c) and
    /// drops only whole pages that are already clean, never the partial page a following write continues. A hint:
    /// nothing depends on it, since `sync()` makes the bytes durable either way (and reports a write-out error).
    func startWriteOut(at offset: UInt64, length: Int) {
        // The result is deliberately unused: a failed hint changes nothing but timing.
        _ = posix_fadvise(descriptor, off_t(offset), off_t(length), POSIX_FADV_DONTNEED)
    }

    /// Flushes the file's data to stable storage (fdatasync). Never retry after a failure.
    func sync() throws {
        if let faults {
            faults.syncGate?.pass(path)
            if case .fail(let code) = faults.fault(for: .sync, path: path) {
                throw EventStoreError.ioFailure(operation: "fdatasync", path: path, errno: code)
            }
            if let recorder = faults.recorder {
                let result = recorder.perform({ fdatasync(descriptor) == 0 ? 0 : errno }, event: {
                    guard $0 == 0 else { return nil }
                    return (try? isReplaced()) == false
                        ? .sync(path: path) : .detached(path: path, operation: "fdatasync")
                })
                guard result == 0 else {
                    throw EventStoreError.ioFailure(operation: "fdatasync", path: path, errno: result)
                }
                return
            }
        }
        guard fdatasync(descriptor) == 0 else {
            throw EventStoreError.ioFailure(operation: "fdatasync", path: path, errno: errno)
        }
    }

    /// Cuts or extends the file to `size` bytes.
    func truncate(to size: UInt64) throws {
        if let recorder = faults?.recorder {
            let result = recorder.perform({ ftruncate(descriptor, off_t(size)) == 0 ? 0 : errno }, event: {
                guard $0 == 0 else { return nil }
                return (try? isReplaced()) == false
                    ? .truncate(path: path, size: size) : .detached(path: path, operation: "ftruncate")
            })
            guard result == 0 else {
                throw EventStoreError.ioFailure(operation: "ftruncate", path: path, errno: result)
            }
            return
        }
        guard ftruncate(descriptor, off_t(size)) == 0 else {
            throw EventStoreError.ioFailure(operation: "ftruncate", path: path, errno: errno)
        }
    }

    /// The file's current size in bytes.
    func size() throws -> UInt64 {
        var info = stat()
        guard fstat(descriptor, &info) == 0 else {
            throw EventStoreError.ioFailure(operation: "fstat", path: path, errno: errno)
        }
        return UInt64(info.st_size)
    }

    /// Linux's SEEK_DATA and SEEK_HOLE (lseek whence values since 3.1), which Glibc exports only under _GNU_SOURCE.
    private static let (seekData, seekHole): (Int32, Int32) = (3, 4)

    /// The end of the file's last data extent: its size less any hole at its end (a sparse tail, which reads as
    /// zeros). A file system that does not tell holes apart reports the whole size.
    func dataEnd() throws -> UInt64 {
        let size = off_t(try self.size())
        var position: off_t = 0
        var end: off_t = 0
        while position < size {
            let data = lseek(descriptor, position, Self.seekData)
            if data < 0 {
                if errno == ENXIO { break }  // no data at or after `position`
                throw EventStoreError.ioFailure(operation: "lseek(SEEK_DATA)", path: path, errno: errno)
            }
            let hole = lseek(descriptor, data, Self.seekHole)
            guard hole >= 0 else {
                throw EventStoreError.ioFailure(operation: "lseek(SEEK_HOLE)", path: path, errno: errno)
            }
            (end, position) = (min(hole, size), hole)
        }
        return UInt64(end)
    }

    /// Whether `path` no longer names this open file: it was renamed over (compaction) or removed.
    func isReplaced() throws -> Bool {
        var open = stat()
        guard fstat(descriptor, &open) == 0 else {
            throw EventStoreError.ioFailure(operation: "fstat", path: path, errno: errno)
        }
        var named = stat()
        guard stat(path, &named) == 0 else {
            if errno == ENOENT { return true }
            throw EventStoreError.ioFailure(operation: "stat", path: path, errno: errno)
        }
        return open.st_ino != named.st_ino || open.st_dev != named.st_dev
    }

    deinit { Glibc.close(descriptor) }
}

/// Directory operations: create with mode 0700, fsync a directory after creating or renaming files in it.
enum Directory {
    /// Creates `path` (mode 0700) if it does not exist, and makes its entry in the parent durable (so the create
    /// fails if the parent may not be opened to sync it); an existing directory is fine. Returns whether this call
    /// made the directory (false: it existed, perhaps made by another process a moment before).
    @discardableResult
    static func create(_ path: String, faults: IOFaultPlan? = nil) throws -> Bool {
        let code: Int32
        if let recorder = faults?.recorder {
            code = recorder.perform({ mkdir(path, 0o700) == 0 ? 0 : errno }, event: {
                $0 == 0 ? .createDirectory(path: path) : nil
            })
        } else {
            code = mkdir(path, 0o700) == 0 ? 0 : errno
        }
        if code == 0 {
            // The new directory's entry in its parent must be durable too, or a power cut can take the whole store.
            // (A failure takes the new, empty directory away again, so a retry does not find it and go on unsynced.)
            do {
                try syncParent(of: path, faults: faults, skippingUnreadable: false)
            } catch {
                rmdir(path)
                throw error
            }
        } else if code != EEXIST {
            throw EventStoreError.ioFailure(operation: "mkdir", path: path, errno: code)
        }
        var info = stat()
        guard stat(path, &info) == 0 else { throw EventStoreError.ioFailure(operation: "stat", path: path, errno: errno) }
        guard info.st_mode & S_IFMT == S_IFDIR else {
            throw EventStoreError.incompatibleStore(path: path, reason: "the path exists and is not a directory")
        }
        return code == 0
    }

    /// Makes the entry of the directory `path` in the directory holding it durable. That directory is opened as
    /// `path/..`, which the kernel resolves (a path ending in `.` or `..`, or one through a symbolic link, reaches
    /// the directory that really holds the entry, with no PATH_MAX limit on the resolved name). A `path` that is a
    /// mount point is skipped (its entry is the mount, not a name in the file system beneath), and with
    /// `skippingUnreadable`, as SQLite skips a directory it cannot open, so is a holder this process may pass through
    /// but not read (a 0711 directory of another owner): only for an entry someone else made, never for a directory
    /// this process has just created there, whose entry must be made durable or the create fail.
    static func syncParent(of path: String, faults: IOFaultPlan? = nil, skippingUnreadable: Bool = true) throws {
        let holder = path + "/.."
        var own = stat()
        var held = stat()
        guard stat(path, &own) == 0 else {
            throw EventStoreError.ioFailure(operation: "stat", path: path, errno: errno)
        }
        guard stat(holder, &held) == 0 else {
            throw EventStoreError.ioFailure(operation: "stat", path: holder, errno: errno)
        }
        guard own.st_dev == held.st_dev else { return }
        // The resolved name, where there is one, names the directory in errors and in the recorder's events.
        var name = holder
        if let resolved = realpath(holder, nil) {
            name = String(cString: resolved)
            free(resolved)
        }
        try sync(holder, named: name, faults: faults, skippingUnreadable: skippingUnreadable)
    }

    /// Makes the directory's entries (created or renamed files) durable. `name` names it in errors and events;
    /// `skippingUnreadable` returns without a sync when the directory may not be opened for reading.
    static func sync(
        _ path: String, named name: String? = nil, faults: IOFaultPlan? = nil, skippingUnreadable: Bool = false
    ) throws {
        let name = name ?? path
        let descriptor = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if descriptor < 0, skippingUnreadable, errno == EACCES || errno == EPERM { return }
        guard descriptor >= 0 else { throw EventStoreError.ioFailure(operation: "open", path: name, errno: errno) }
        defer { Glibc.close(descriptor) }
        if let recorder = faults?.recorder {
            let result = recorder.perform({ fsync(descriptor) == 0 ? 0 : errno }, event: {
                $0 == 0 ? .syncDirectory(path: name) : nil
            })
            guard result == 0 else { throw EventStoreError.ioFailure(operation: "fsync", path: name, errno: result) }
            return
        }
        guard fsync(descriptor) == 0 else { throw EventStoreError.ioFailure(operation: "fsync", path: name, errno: errno) }
    }

    /// Atomically renames `source` to `destination`.
    static func rename(_ source: String, to destination: String, faults: IOFaultPlan? = nil) throws {
        if let recorder = faults?.recorder {
            let result = recorder.perform({ Glibc.rename(source, destination) == 0 ? 0 : errno }, event: {
                $0 == 0 ? .rename(source: source, destination: destination) : nil
            })
            guard result == 0 else { throw EventStoreError.ioFailure(operation: "rename", path: source, errno: result) }
            return
        }
        guard Glibc.rename(source, destination) == 0 else {
            throw EventStoreError.ioFailure(operation: "rename", path: source, errno: errno)
        }
    }

    /// Removes the file at `path` if there is one (unlink(2)); a missing file, or a failure, is ignored, as the
    /// callers (leftovers of a compaction) only tidy up.
    static func remove(_ path: String, faults: IOFaultPlan? = nil) {
        if let recorder = faults?.recorder {
            _ = recorder.perform({ unlink(path) == 0 }, event: { $0 ? .remove(path: path) : nil })
            return
        }
        _ = unlink(path)
    }
}
