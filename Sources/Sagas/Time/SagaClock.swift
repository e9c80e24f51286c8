// The clock a saga runner reads time from and sleeps on: backoff pauses, step timeouts and the timestamps written
// into the saga log all go through it, so a test can drive them without real sleeping.
//
// Invariants:
// - `now()` never goes backwards for one clock.
// - `sleep(for:)` returns only once at least `duration` has passed on this clock, or throws CancellationError when
//   its task is cancelled; it never returns early otherwise.
// - Session leases in the store are not driven by this clock: they are the store's wall-clock TTLs.

import Foundation

/// Where a saga runner gets the time from, and how it waits.
public protocol SagaClock: Sendable {
    /// The current time, written into every saga log event.
    func now() -> Date
    /// Suspends for `duration` of this clock's time.
    /// - Throws: `CancellationError` if the task is cancelled while waiting.
    func sleep(for duration: Duration) async throws
}

/// The real clock: wall-clock time and `Task.sleep`.
public struct SystemSagaClock: SagaClock {
    /// Creates the real clock.
    public init() {}

    public func now() -> Date { Date() }

    public func sleep(for duration: Duration) async throws {
        // Task.sleep traps past Int64.max nanoseconds (292 years), and "no limit" is naturally written as
        // .seconds(Int64.max): longer pauses are slept in chunks of a century.
        let chunk = Duration.seconds(100 * 365 * 24 * 3_600)
        var remaining = duration
        while remaining > .zero {
            let step = min(remaining, chunk)
            try await Task.sleep(for: step)
            remaining -= step
        }
    }
}
