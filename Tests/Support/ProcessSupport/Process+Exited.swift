// Waiting for a child process from async tests without blocking the Swift cooperative pool.
//
// Invariant: `waitUntilExit` runs on a thread of its own, never on a cooperative thread. The pool has as many
// threads as cores (two here); a test blocking one of them stalls every other test in the process, long enough to
// expire the wall-clock leases other tests rely on.

import Foundation

extension Process {
    /// Returns once the process has ended, without blocking a cooperative thread.
    public func exited() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread {
                self.waitUntilExit()
                continuation.resume()
            }.start()
        }
    }
}
