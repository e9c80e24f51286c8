// The lease an exclusive projection holds on its consumer: a session on the system stream `$consumer-<name>`,
// renewed in the background until released.
//
// Invariants:
// - Only one session at a time holds the stream, in every process that shares the store; the others wait for it by
//   polling, at most once a second and at least every tenth of the lease.
// - The lease counts as lost once a renewal is refused (`sessionExpired`) or once its local expiry passed without a
//   successful renewal; a failed renewal for any other reason is retried every twelfth of the lease until then.
// - Losing it is final for this holder: `check()` throws from then on, and the session's fenced checkpoint saves
//   are refused by the store itself.

import Foundation

/// A projection's hold on its consumer's lease.
final class ConsumerLease: Sendable {
    /// The session that holds the lease; checkpoints are saved through it.
    let session: any StreamSession
    private let lost: Locked<Bool>
    private let keeper: Task<Void, Never>

    private init(session: any StreamSession, renewEvery interval: Duration) {
        let lost = Locked(false)
        self.session = session
        self.lost = lost
        self.keeper = Self.keepRenewed(session, every: interval, lost: lost)
    }

    /// Waits, as long as it takes (or until the task is cancelled), for the lease on `consumer`, then holds it.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` for a lease out of range or a consumer name too long to name
    ///   a stream.
    static func acquire(for consumer: String, in store: any EventStoring, lasting lease: Duration) async throws
        -> ConsumerLease
    {
        let stream = try leaseStream(of: consumer)
        let pause = min(max(lease / 10, .milliseconds(10)), .seconds(1))
        while true {
            do {
                let session = try await store.openSession(on: stream, sessionTimeout: lease, openTimeout: .zero)
                return ConsumerLease(session: session, renewEvery: lease / 3)
            } catch EventStoreError.streamLocked {
                try await Task.sleep(for: pause)
            }
        }
    }

    /// The system stream whose session is the consumer's lease.
    static func leaseStream(of consumer: String) throws -> StreamName {
        let name = "$consumer-" + consumer
        guard consumer.utf8.count + 10 <= StreamName.maximumLength else {
            throw EventStoreError.invalidArgument(
                "an exclusive consumer's name must be at most \(StreamName.maximumLength - 10) UTF-8 bytes, got "
                    + "\(consumer.utf8.count)")
        }
        return try StreamName.system(name)
    }

    /// Throws ``EventStoreError/sessionExpired(stream:sessionID:)`` once the lease is lost.
    func check() async throws {
        let expired = await session.leaseExpiresAt() <= Date()
        if expired || lost.withLock({ $0 }) {
            lost.withLock { $0 = true }
            throw EventStoreError.sessionExpired(stream: session.stream, sessionID: session.id)
        }
    }

    /// Stops renewing and releases the lease (also from a cancelled task); a failed release leaves it to expire.
    func release() async {
        keeper.cancel()
        try? await session.close()
    }

    /// Renews `session` every `interval` until cancelled or until the lease is lost, which it records in `lost`.
    private static func keepRenewed(_ session: any StreamSession, every interval: Duration, lost: Locked<Bool>)
        -> Task<Void, Never>
    {
        Task {
            var wait = interval
            while true {
                do { try await Task.sleep(for: wait) } catch { return }
                do {
                    try await session.renew()
                    wait = interval
                } catch EventStoreError.sessionExpired {
                    lost.withLock { $0 = true }
                    return
                } catch {
                    if Task.isCancelled { return }
                    if await session.leaseExpiresAt() <= Date() {
                        lost.withLock { $0 = true }
                        return
                    }
                    wait = interval / 4
                }
            }
        }
    }
}
