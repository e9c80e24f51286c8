// Ending a child process when the process that started it is gone.
//
// A test run that crashes must not leave its children running: they would hold the run's output pipe open, and CI
// would wait on it until its time limit instead of failing at once. Linux's PR_SET_PDEATHSIG does this in the
// kernel, but prctl is variadic and Swift cannot call it; so a thread of the child's own looks at its parent's pid.
//
// Invariant: once the parent has died the child is re-parented (to init or a subreaper), so getppid() differs from
// the parent's pid read at the start; the child then exits within one polling interval.

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Watches the process that started this one.
public enum ParentWatch {
    /// The status a child exits with when its parent has gone.
    public static let orphanedStatus: Int32 = 70

    /// Starts a thread that ends this process, without cleanup (`_exit`), once its parent has gone. Call it first
    /// thing in a child executable's main.
    public static func exitWhenParentExits() {
        let parent = getppid()
        let watcher = Thread {
            while getppid() == parent { usleep(100_000) }
            _exit(orphanedStatus)
        }
        watcher.name = "parent watch"
        watcher.start()
    }
}
