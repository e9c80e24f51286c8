// Offload: blocking work (fdatasync, page writes) on a thread of its own, off the Swift cooperative pool.

import EventStore
import Foundation

/// Runs blocking work (fdatasync, page writes) on its own thread, off the Swift cooperative pool.
enum Offload {
    /// Runs `body` on a new thread and returns its result.
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.start()
        }
    }

    /// Runs `body` on a new thread like ``run(_:)``, with a ``Cancellation`` it polls: the thread runs outside any
    /// task, where `Task.isCancelled` is always false, so the calling task's cancellation is passed on through it.
    static func run<T: Sendable>(cancellable body: @escaping @Sendable (Cancellation) throws -> T) async throws -> T {
        let cancellation = Cancellation()
        return try await withTaskCancellationHandler {
            try await run { try body(cancellation) }
        } onCancel: {
            cancellation.cancel()
        }
    }

    /// Whether the task that offloaded the work has been cancelled; cheap enough to poll every few hundred pages.
    final class Cancellation: Sendable {
        private let cancelled = Locked(false)

        init() {}

        var isCancelled: Bool { cancelled.withLock { $0 } }

        func cancel() { cancelled.withLock { $0 = true } }

        /// Throws `CancellationError` if the task has been cancelled.
        func check() throws {
            if isCancelled { throw CancellationError() }
        }
    }
}
