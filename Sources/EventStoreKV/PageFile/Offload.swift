// Offload: blocking work (fdatasync, page writes) on a thread of its own, off the Swift cooperative pool.

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
}
