// Locked: a value guarded by a pthread mutex, the lock every module of the package uses for shared state.
//
// Invariants:
// - `value` is read and written only inside `withLock`, with `mutex` held; the body must not call `withLock` on the
//   same instance again (the mutex is not recursive).
// - It is the same lock as `Synchronization.Mutex` (uncontended: one atomic operation to take and one to release),
//   but ThreadSanitizer sees it: on Linux, Mutex waits on a futex directly and TSan cannot see that, so every access
//   to a Mutex-guarded value from two threads is reported as a race (a two-thread test of Mutex alone shows it with
//   Swift 6.3.1), in our test runs and in those of any application embedding the store. A pthread mutex is
//   intercepted, so `swift test --sanitize=thread` reports only real races.

import Foundation

/// A value guarded by a mutex, for state shared between threads and tasks.
package final class Locked<Value>: @unchecked Sendable {
    // @unchecked: `value` is only touched inside `withLock`, while `mutex` is held; `Value: Sendable` is required
    // by the initializer, so nothing non-Sendable crosses threads through it.
    private var value: Value
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    /// Guards `value`.
    package init(_ value: Value) where Value: Sendable {
        self.value = value
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// Runs `body` with the value, holding the lock.
    package func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
