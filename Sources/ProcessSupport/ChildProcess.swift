// Starting child processes with posix_spawn, for the tests and the ledger demo's crash test.
//
// Why not Foundation's Process: on Linux, swift-corelibs-foundation's Process.run() (through Swift 6.3.1) copies
// the whole 256-byte d_name of each /proc/self/fd entry, reading past glibc's readdir buffer when an entry sits at
// its end; now and then that is a SIGSEGV in memcpy (swiftlang/swift-corelibs-foundation#5472). One such crash in a
// test run ends every test in it.
//
// Invariants:
// - A child gets exactly four descriptors: 0 is /dev/null, 1 and 2 are what the caller chose, and 3 is the read end
//   of this process's lifeline (ParentWatch.swift), named in its environment. Every other descriptor is closed in
//   the child before exec (closefrom), whether or not it was opened close-on-exec: a page file's lock or another
//   child's pipe must never outlive its owner in a sibling.
// - The pipes made here are close-on-exec from birth (pipe2), so no concurrent spawn copies them either.
// - The child's pid is reaped in exactly one place, the reaper thread, and only under `state`'s lock. Until then
//   the child is a zombie at worst and its pid cannot be reused, so a signal sent under that lock while
//   `termination` is nil always reaches this child, never a stranger.
// - Nothing here blocks a cooperative thread: the reaper waits on a thread of its own, and `exited()` suspends.

import EventStore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Why a child process could not be started.
public struct ChildProcessError: Error, CustomStringConvertible, Sendable {
    /// The executable that was to run.
    public let executable: String
    /// What failed: `posix_spawn`, `pipe2`, or a setup call.
    public let operation: String
    /// The errno value.
    public let code: Int32

    /// The operation, its errno and the executable, as one line.
    public var description: String {
        "\(operation) for \(executable) failed: \(String(cString: strerror(code))) (errno \(code))"
    }
}

/// A child process started with `posix_spawn`, its output, and how it ended.
public final class ChildProcess: Sendable {
    /// Where one of the child's output streams goes.
    public enum Output: Sendable {
        /// The parent's own stream.
        case inherit
        /// /dev/null.
        case discard
        /// A new pipe; the parent reads it through ``ChildProcess/standardOutput`` or ``ChildProcess/standardError``.
        case pipe
        /// A file, created or truncated, and written in append mode, so that stdout and stderr can share one.
        case file(String)
    }

    /// How a child ended.
    public enum Termination: Sendable, Equatable, CustomStringConvertible {
        /// It exited with this status.
        case exited(Int32)
        /// A signal with this number ended it.
        case signalled(Int32)

        /// "exited with status N" or "died of signal N".
        public var description: String {
            switch self {
            case .exited(let status): "exited with status \(status)"
            case .signalled(let signal): "died of signal \(signal)"
            }
        }
    }

    /// The child's process id.
    public let pid: pid_t
    /// The read end of the child's stdout, when it was ``Output/pipe``.
    public let standardOutput: FileHandle?
    /// The read end of the child's stderr, when it was ``Output/pipe``.
    public let standardError: FileHandle?

    private struct State {
        var termination: Termination?
        var nextWaiter: UInt64 = 0
        /// Called once each: with how the child ended, or with nil when its wait was cancelled.
        var waiters: [UInt64: @Sendable (Termination?) -> Void] = [:]
    }
    private let state = Locked(State())  // a pthread mutex, which ThreadSanitizer sees (Locked.swift)

    /// Starts `executable` (a path, not looked up in PATH) with `arguments`, in `environment` (the parent's when
    /// nil). Its stdin is /dev/null.
    public init(
        _ executable: String, _ arguments: [String], environment: [String: String]? = nil,
        standardOutput: Output = .inherit, standardError: Output = .inherit
    ) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var readEnds: [Int32?] = [nil, nil]  // the parent's ends of the output pipes
        var childSides: [Int32] = []  // only the child keeps these (pipes' write ends, files): closed after spawning
        defer { for fd in childSides { close(fd) } }
        func fail(_ operation: String, _ code: Int32) -> ChildProcessError {
            for fd in readEnds.compactMap({ $0 }) { close(fd) }
            return ChildProcessError(executable: executable, operation: operation, code: code)
        }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        for (index, output) in [standardOutput, standardError].enumerated() {
            let target = Int32(index + 1)
            switch output {
            case .inherit:
                break
            case .discard:
                posix_spawn_file_actions_addopen(&actions, target, "/dev/null", O_WRONLY, 0)
            case .file(let path):
                // Opened here, not by the spawn, so that a file that cannot be opened is an error naming it.
                let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o644)
                guard fd >= 0 else {
                    throw fail("open \(path) for the child's \(target == 1 ? "stdout" : "stderr")", errno)
                }
                childSides.append(fd)
                posix_spawn_file_actions_adddup2(&actions, fd, target)  // dup2 clears close-on-exec
            case .pipe:
                var pair: [Int32] = [-1, -1]
                guard Spawn.pipe2(&pair, O_CLOEXEC) == 0 else { throw fail("pipe2", errno) }
                readEnds[index] = pair[0]
                childSides.append(pair[1])
                posix_spawn_file_actions_adddup2(&actions, pair[1], target)
            }
        }
        var environment = environment ?? ProcessInfo.processInfo.environment
        environment[ParentWatch.lifelineVariable] = nil  // our own parent's, if any: never the child's
        if let lifeline = Lifeline.shared {
            posix_spawn_file_actions_adddup2(&actions, lifeline.readEnd, 3)
            environment[ParentWatch.lifelineVariable] = "3:\(lifeline.inode)"
        }
        guard Spawn.addCloseFrom(&actions, Lifeline.shared == nil ? 3 : 4) else {
            throw fail("posix_spawn_file_actions_addclosefrom_np", ENOSYS)
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var signals = sigset_t()
        sigemptyset(&signals)
        posix_spawnattr_setsigmask(&attributes, &signals)
        sigfillset(&signals)
        posix_spawnattr_setsigdefault(&attributes, &signals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([executable] + arguments).map { strdup($0) }
        let pairs = environment.map { strdup("\($0.key)=\($0.value)") }
        defer { for pointer in argv + pairs { free(pointer) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv + [nil], pairs + [nil])
        guard result == 0 else { throw fail("posix_spawn", result) }
        self.pid = pid
        self.standardOutput = readEnds[0].map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
        self.standardError = readEnds[1].map { FileHandle(fileDescriptor: $0, closeOnDealloc: true) }
        let reaper = Thread { [self] in reap() }
        reaper.name = "reaper \(pid)"
        reaper.start()
    }

    /// Waits (on the reaper thread) for the child to end, then records how, and wakes every waiter.
    private func reap() {
        var info = siginfo_t()
        // WNOWAIT leaves the child a zombie, so its pid stays ours until the waitpid below, under the lock.
        while waitid(P_PID, id_t(pid), &info, WEXITED | WNOWAIT) != 0 && errno == EINTR {}
        let (termination, waiters) = state.withLock { state in
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            let signal = status & 0x7f
            let termination: Termination = signal == 0 ? .exited((status >> 8) & 0xff) : .signalled(signal)
            state.termination = termination
            defer { state.waiters = [:] }
            return (termination, Array(state.waiters.values))
        }
        for waiter in waiters { waiter(termination) }
    }

    /// How the child ended, or nil while it runs.
    public var termination: Termination? { state.withLock { $0.termination } }

    /// True until the child has ended and been reaped.
    public var isRunning: Bool { termination == nil }

    /// Sends `signal` to the child if it has not been reaped yet; a child already ended is left alone.
    public func send(_ signal: Int32) {
        state.withLock { state in
            if state.termination == nil { _ = Glibc.kill(pid, signal) }
        }
    }

    /// SIGKILLs the child if it still runs, and waits for it to end. It waits even in a cancelled task: the
    /// child is already dying.
    @discardableResult
    public func kill() async -> Termination {
        send(SIGKILL)
        return await withCheckedContinuation { continuation in
            register { continuation.resume(returning: $0 ?? .signalled(SIGKILL)) }
        }
    }

    /// Waits for the child to end, without blocking a thread. Throws `CancellationError` if the waiting task is
    /// cancelled first; the child then keeps running.
    public func exited() async throws -> Termination {
        let id = Locked<UInt64?>(nil)
        let termination: Termination? = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let registered = register { continuation.resume(returning: $0) }
                id.withLock { $0 = registered }
                // Cancelled before the id was set: the handler below found nothing to cancel.
                if Task.isCancelled, let registered { cancelWait(registered) }
            }
        } onCancel: {
            if let registered = id.withLock({ $0 }) { cancelWait(registered) }
        }
        guard let termination else { throw CancellationError() }
        return termination
    }

    /// Waits for the child to end, blocking the calling thread (never call this on the cooperative pool).
    @discardableResult
    public func waitUntilExit() -> Termination {
        let done = DispatchSemaphore(value: 0)
        let result = Locked<Termination?>(nil)
        register { termination in
            result.withLock { $0 = termination }
            done.signal()
        }
        done.wait()
        return result.withLock { $0 } ?? .signalled(0)  // never nil: this waiter is never cancelled
    }

    /// Calls `waiter` once the child has ended (at once if it has, returning nil), or with nil if ``cancelWait(_:)``
    /// is called with the id returned.
    @discardableResult
    private func register(_ waiter: @escaping @Sendable (Termination?) -> Void) -> UInt64? {
        let (id, ended) = state.withLock { state -> (UInt64?, Termination?) in
            if let termination = state.termination { return (nil, termination) }
            let id = state.nextWaiter
            state.nextWaiter += 1
            state.waiters[id] = waiter
            return (id, nil)
        }
        if let ended { waiter(ended) }
        return id
    }

    /// Calls the waiter `id` with nil, unless the child's end has already called it.
    private func cancelWait(_ id: UInt64) {
        let waiter = state.withLock { $0.waiters.removeValue(forKey: id) }
        waiter?(nil)
    }
}

/// The pipe whose read end every child gets as descriptor 3 (ParentWatch.swift). This process holds the only write
/// end, close-on-exec, for as long as it lives and never writes to it: a child reads end-of-file from it once this
/// process has died, however early or late that is. Nil if the pipe could not be made (children then fall back to
/// watching their parent's pid).
private enum Lifeline {
    static let shared: (readEnd: Int32, inode: UInt64)? = {
        var pair: [Int32] = [-1, -1]
        guard Spawn.pipe2(&pair, O_CLOEXEC) == 0 else { return nil }
        // Above 3, so that the dup2 onto 3 in a child is a real dup2 (which clears close-on-exec).
        let readEnd = fcntl(pair[0], F_DUPFD_CLOEXEC, 10)
        close(pair[0])
        var status = stat()
        guard readEnd >= 0, fstat(readEnd, &status) == 0 else {
            if readEnd >= 0 { close(readEnd) }
            close(pair[1])
            return nil
        }
        return (readEnd, UInt64(status.st_ino))
    }()
}

/// The two glibc calls Swift's Glibc module does not declare (they need _GNU_SOURCE), looked up once.
private enum Spawn {
    private typealias Pipe2 = @convention(c) (UnsafeMutablePointer<Int32>, Int32) -> Int32
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    private static let functions: (pipe2: Pipe2?, addCloseFrom: AddCloseFrom?) = {
        let library = dlopen(nil, RTLD_NOW)
        return (
            dlsym(library, "pipe2").map { unsafeBitCast($0, to: Pipe2.self) },
            dlsym(library, "posix_spawn_file_actions_addclosefrom_np").map { unsafeBitCast($0, to: AddCloseFrom.self) }
        )
    }()

    /// pipe2(2); ENOSYS where glibc has none.
    static func pipe2(_ ends: UnsafeMutablePointer<Int32>, _ flags: Int32) -> Int32 {
        guard let function = functions.pipe2 else {
            errno = ENOSYS
            return -1
        }
        return function(ends, flags)
    }

    /// posix_spawn_file_actions_addclosefrom_np (glibc 2.34 and later); false where glibc has none.
    static func addCloseFrom(_ actions: UnsafeMutablePointer<posix_spawn_file_actions_t>, _ first: Int32) -> Bool {
        functions.addCloseFrom.map { $0(actions, first) == 0 } ?? false
    }
}
