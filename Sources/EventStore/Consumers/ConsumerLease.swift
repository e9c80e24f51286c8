// The lease an exclusive projection holds on its consumer: a session on the system stream `$consumer-<name>`,
// renewed in the background until released.
//
// Invariants:
// - Only one session at a time holds the stream, in every process that shares the store; the others wait for it by
//   polling every tenth of the lease, but never more often than every 10 ms nor less often than once a second.
// - The lease counts as lost once a renewal is refused (`sessionExpired`) or once its local expiry passed without a
//   successful renewal, by the store's clock, which dated it (`StreamSession.hasExpired()`, never `Date()`); a
//   failed renewal for any other reason is retried every twelfth of the lease until then.
// - Losing it is final for this holder: `check()` throws from then on, the doorbells made by `doorbell(of:)` end
//   with `sessionExpired` at once (so a run waiting for events stops without waiting for one), and the session's
//   fenced checkpoint saves are refused by the store itself.

import Foundation

/// A projection's hold on its consumer's lease.
final class ConsumerLease: Sendable {
    /// The session that holds the lease; checkpoints are saved through it.
    let session: any StreamSession
    private let loss: Loss
    private let keeper: Task<Void, Never>

    private init(session: any StreamSession, renewEvery interval: Duration) {
        let loss = Loss(EventStoreError.sessionExpired(stream: session.stream, sessionID: session.id))
        self.session = session
        self.loss = loss
        self.keeper = Self.keepRenewed(session, every: interval, loss: loss)
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
        if await session.hasExpired() { loss.record() }
        if loss.isRecorded { throw loss.error }
    }

    /// The store's doorbell (``EventStoring/logNotifications()``), ended with
    /// ``EventStoreError/sessionExpired(stream:sessionID:)`` as soon as the lease is lost.
    func doorbell(of store: any EventStoring) async throws -> AsyncThrowingStream<Void, any Error> {
        let rings = try await store.logNotifications()
        let (doorbell, continuation) = AsyncThrowingStream<Void, any Error>.makeStream(
            bufferingPolicy: .bufferingNewest(1))
        let forwarder = Task {
            do {
                for try await _ in rings { continuation.yield() }
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in forwarder.cancel() }
        loss.whenRecorded { error in continuation.finish(throwing: error) }
        return doorbell
    }

    /// Stops renewing and releases the lease (also from a cancelled task); a failed release leaves it to expire.
    func release() async {
        keeper.cancel()
        try? await session.close()
    }

    /// Renews `session` every `interval` until cancelled or until the lease is lost, which it records in `loss`.
    private static func keepRenewed(_ session: any StreamSession, every interval: Duration, loss: Loss)
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
                    loss.record()
                    return
                } catch {
                    if Task.isCancelled { return }
                    if await session.hasExpired() {
                        loss.record()
                        return
                    }
                    wait = interval / 4
                }
            }
        }
    }
}

/// Whether a lease was lost, and who to tell when it is: recorded once, and final.
private final class Loss: Sendable {
    /// The error a holder that lost the lease throws.
    let error: EventStoreError
    private let state = Locked<(recorded: Bool, observers: [@Sendable (EventStoreError) -> Void])>((false, []))

    init(_ error: EventStoreError) { self.error = error }

    var isRecorded: Bool { state.withLock { $0.recorded } }

    /// Records the loss and tells every observer, once.
    func record() {
        let observers = state.withLock { state in
            guard !state.recorded else { return [@Sendable (EventStoreError) -> Void]() }
            state.recorded = true
            defer { state.observers = [] }
            return state.observers
        }
        for observer in observers { observer(error) }
    }

    /// Calls `observer` when the loss is recorded (at once if it already was).
    func whenRecorded(_ observer: @escaping @Sendable (EventStoreError) -> Void) {
        let now = state.withLock { state in
            if state.recorded { return true }
            state.observers.append(observer)
            return false
        }
        if now { observer(error) }
    }
}
