// The doorbell of live subscriptions, driven by the key-value contract's change notification.
//
// Invariants:
// - The watch covers the global head key, which every transaction that adds events (appends and deletions) writes
//   exactly once: one ring per such commit, and none for other writes (leases, checkpoints, metadata).
// - The watch starts after the revision current when the call is made, so every later commit rings even if the
//   caller reads before it starts waiting.
// - At most one ring is buffered (rings are merged), so a slow subscriber never grows memory. If the backend drops
//   the watch (overflow, history gone), it is re-opened and one ring is sent, so the reader re-reads and loses
//   nothing.
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
            while !Task.isCancelled {
                do {
                    for try await change in backend.changes(after: after, prefix: KeyLayout.globalHead) {
                        after = change.revision
                        continuation.yield(())
                    }
                    break  // the backend closed, or we were cancelled
                } catch KeyValueStoreError.watcherOverflow, KeyValueStoreError.historyUnavailable {
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

    /// Translates contract errors; other errors pass unchanged.
    static func translateAny(_ error: any Error) -> any Error {
        if let error = error as? KeyValueStoreError { return translate(error) }
        return error
    }
}
