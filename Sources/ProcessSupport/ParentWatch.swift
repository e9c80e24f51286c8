// Ending a child process when the process that started it is gone.
//
// A test run that crashes must not leave its children running: they would hold the run's output pipe open, and CI
// would wait on it until its time limit instead of failing at once. Linux's PR_SET_PDEATHSIG does this in the
// kernel, but prctl is variadic and Swift cannot call it (and it misses a parent that died before it was called).
//
// Two watches, either of which ends the child:
// - The lifeline. A process that starts children through ChildProcess holds the only write end of a pipe and
//   gives every child its read end as descriptor 3, naming it (descriptor and pipe inode) in the child's
//   environment. A read of it returns end-of-file once that process has died, whenever that was: before this child
//   reached its main, too. It passes to whatever the child starts in turn (a shell's children), so they watch the
//   same process.
// - The parent's pid. Once its parent has died a process is re-parented (to init or a subreaper), so getppid()
//   differs from the pid read at the start; this covers children started by other means, within one polling
//   interval, when the parent was alive at the start.
//
// Invariant: the lifeline is used only when descriptor 3 is the pipe the environment names (its inode matches), so
// a variable inherited by a process whose descriptor 3 is something else never ends it.

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Watches the process that started this one.
public enum ParentWatch {
    /// The status a child exits with when its parent has gone.
    public static let orphanedStatus: Int32 = 70

    /// The environment variable naming the lifeline: "descriptor:inode".
    static let lifelineVariable = "PROCESS_SUPPORT_LIFELINE"

    /// Starts threads that end this process, without cleanup (`_exit`), once the process that started it has gone.
    /// Call it first thing in a child executable's main.
    public static func exitWhenParentExits() {
        let parent = getppid()
        if let descriptor = lifeline() {
            let reader = Thread {
                var byte: UInt8 = 0
                while true {
                    let count = read(descriptor, &byte, 1)
                    if count == 0 || (count < 0 && errno != EINTR) { _exit(orphanedStatus) }
                }
            }
            reader.name = "lifeline watch"
            reader.start()
        }
        let watcher = Thread {
            while getppid() == parent { usleep(100_000) }
            _exit(orphanedStatus)
        }
        watcher.name = "parent watch"
        watcher.start()
    }

    /// The lifeline's descriptor, if the environment names one and that descriptor is the pipe it names.
    private static func lifeline() -> Int32? {
        guard let value = ProcessInfo.processInfo.environment[lifelineVariable] else { return nil }
        let fields = value.split(separator: ":")
        guard fields.count == 2, let descriptor = Int32(fields[0]), let inode = UInt64(fields[1]) else { return nil }
        var status = stat()
        guard fstat(descriptor, &status) == 0, status.st_mode & S_IFMT == S_IFIFO, UInt64(status.st_ino) == inode
        else { return nil }
        return descriptor
    }
}
