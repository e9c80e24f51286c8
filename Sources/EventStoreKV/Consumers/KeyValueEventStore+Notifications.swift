// The doorbell of live subscriptions, driven by the key-value contract's change notification.
//
// Invariants:
// - The watch covers the global head key, which every transaction that adds events (appends and deletions) writes
//   exactly once: one ring per such commit, and none for other writes (leases, checkpoints, metadata).
// - The watch starts after the revision current when the call is made, so every later commit rings even if the
//   caller reads before it starts waiting.
// - At most one ring is buffered (rings are merged), so a slow subscriber never grows memory. If the backend drops
//   the watch (overflow, history gone), it is re-opened and one ring is sent, so the reader re-reads and loses
//   nothing. A watch that is dropped again before delivering a change is re-opened after a pause growing from
//   10 ms to 1 s, so the doorbell never spins.
// - Closing the store finishes the doorbell normally, so live subscriptions end without an error.

import EventStore
import Foundation

extension KeyValueEventStore {
    /// Rings once per commit that adds events, from the backend's change feed on the global-head key.
    public func logNotifications() async throws -> AsyncThrowingStream<Void, any Error> {
        let start = try await backendCall { try await self.backend.currentRevision() }
        let (rings, continuation) = AsyncThrowingStream<Void, any Error>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let backend = self.backend
        let watcher = Task {
            var after = start
            var pause = Duration.zero
            while !Task.isCancelled {
                do {
                    for try await change in backend.changes(after: after, prefix: KeyLayout.globalHead) {
                        after = change.revision
                        pause = .zero
                        continuation.yield(())
                    }
                    break  // the backend closed, or we were cancelled
                } catch KeyValueStoreError.watcherOverflow, KeyValueStoreError.historyUnavailable {
                    guard await Self.backOff(&pause) else { break }
                    do {
                        after = try await backend.currentRevision()
                    } catch {
                        continuation.finish(throwing: Self.translateAny(error))
                        return
                    }
                    continuation.yield(())
                } catch KeyValueStoreError.closed {
                    break  // closing the store ends its subscriptions, like cancellation
                } catch {
                    continuation.finish(throwing: Self.translateAny(error))
                    return
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in watcher.cancel() }
        return rings
    }

    /// Waits `pause` (nothing the first time), then lengthens it for the next time, from 10 ms up to 1 s: a watch
    /// that fails again before delivering anything never makes the doorbell spin. Returns false when cancelled.
    private static func backOff(_ pause: inout Duration) async -> Bool {
        if pause > .zero {
            do { try await Task.sleep(for: pause) } catch { return false }
        }
        pause = pause == .zero ? .milliseconds(10) : min(pause * 2, .seconds(1))
        return true
    }

    /// Translates contract errors; other errors pass unchanged.
    static func translateAny(_ error: any Error) -> any Error {
        if let error = error as? KeyValueStoreError { return translate(error) }
        return error
    }
}
