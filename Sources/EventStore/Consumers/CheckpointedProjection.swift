// A durable consumer of the global log: a named projection that resumes after its stored checkpoint.
//
// Invariants:
// - The checkpoint is saved only after the handler has returned for every event up to it, so a restart never skips
//   an event. Events after the last checkpoint are handled again after a crash: delivery is at-least-once, and
//   handlers must be idempotent (or store their own position atomically with their effects).
// - The checkpoint is saved every `checkpointInterval` handled events, and whenever the subscription catches up (so
//   a consumer whose filter skips most events still records its progress).
// - A cancelled run checkpoints the last event its handler returned for, whether the handler ignored the
//   cancellation or threw because of it.
// - An exclusive run handles events only while it holds the consumer's lease (a session on `$consumer-<name>`),
//   checked before each event, and saves checkpoints only in transactions that check the lease: once another run
//   holds it, this one can neither handle another event nor move the checkpoint. A run waiting for events waits on
//   a doorbell that the lease's loss ends, so an idle run stops too.

import Foundation

/// Runs a handler over the global log for a named consumer, checkpointing its position in the store.
public struct CheckpointedProjection: Sendable {
    /// The store read and checkpointed.
    public let store: any EventStoring
    /// The consumer's name, under which its checkpoint is stored.
    public let consumer: String
    /// How many handled events between checkpoints.
    public let checkpointInterval: Int
    /// Which events the handler sees.
    public let filter: SubscriptionFilter
    /// How many events the subscription reads ahead at most.
    public let bufferSize: Int
    /// Whether runs of this consumer in other tasks, processes or nodes may handle events at the same time.
    public let exclusivity: Exclusivity

    /// Creates a projection runner.
    /// - Parameter checkpointEvery: how many handled events between checkpoints; at least 1.
    /// - Parameter exclusivity: ``Exclusivity/exclusive(lease:)`` for one run at a time across every process that
    ///   shares the store.
    public init(
        store: any EventStoring, consumer: String, checkpointEvery: Int = 100, filter: SubscriptionFilter = .all,
        bufferSize: Int = 256, exclusivity: Exclusivity = .shared
    ) {
        self.store = store
        self.consumer = consumer
        self.checkpointInterval = checkpointEvery
        self.filter = filter
        self.bufferSize = bufferSize
        self.exclusivity = exclusivity
    }

    /// Whether runs of one consumer may overlap.
    public enum Exclusivity: Sendable, Hashable {
        /// Runs do not coordinate: each one handles every event after the checkpoint it started from, and the last
        /// checkpoint saved wins.
        case shared
        /// One run at a time across every task, process and node that shares the store. A run holds a lease on the
        /// consumer (a session on the system stream `$consumer-<name>`, so the name must be at most 245 UTF-8
        /// bytes), renews it every third of `lease`, and saves checkpoints only while it holds it. Other runs wait
        /// until it is released or expires, then resume after the last checkpoint. Every run of the consumer must be
        /// exclusive: a shared run's checkpoints are not fenced.
        case exclusive(lease: Duration)
    }

    /// How a run ends.
    public enum Stop: Sendable, Hashable {
        /// Run live until the task is cancelled or the store closes.
        case never
        /// Stop once the projection has caught up with the log (after checkpointing), for rebuilds and batch jobs.
        case whenCaughtUp
    }

    /// Resumes after the stored checkpoint and calls `handler` for each event, in position order.
    ///
    /// If `handler` throws, the run stops with that error; the failed event and those after the last checkpoint are
    /// delivered again by the next run. On cancellation, the position of the last handled event is checkpointed and
    /// the run returns normally, also when `handler` ends the cancelled run by throwing (the event it was handling
    /// counts as not handled). When the store closes under a started run, the run returns the last checkpoint it
    /// saved (it cannot save another); the events handled since are delivered again by the next run.
    ///
    /// An exclusive run (``Exclusivity/exclusive(lease:)``) first waits, as long as it takes, for the consumer's
    /// lease (cancelled meanwhile, it returns the stored checkpoint; if the store closes meanwhile, it throws
    /// ``EventStoreError/storeClosed``), and releases it when it ends. If it loses the lease (a renewal was refused,
    /// or none succeeded before the lease ran out), it throws ``EventStoreError/sessionExpired(stream:sessionID:)``
    /// before it handles another event, saving nothing more; a run that is waiting for events stops as soon as the
    /// loss is known. A lease
    /// bounds how long two runs can overlap, it does not rule it out: a run that stalls for longer than its lease
    /// (a paused process) may finish the event in hand after another run took over. Handlers must still be
    /// idempotent.
    /// - Returns: the last checkpointed position (0 if none).
    @discardableResult
    public func run(
        until stop: Stop = .never, _ handler: (RecordedEvent) async throws -> Void
    ) async throws -> UInt64 {
        guard checkpointInterval > 0 else {
            throw EventStoreError.invalidArgument("checkpointEvery must be at least 1, got \(checkpointInterval)")
        }
        guard case .exclusive(let duration) = exclusivity else {
            return try await consume(until: stop, holding: nil, handler)
        }
        let lease: ConsumerLease
        do {
            lease = try await ConsumerLease.acquire(for: consumer, in: store, lasting: duration)
        } catch is CancellationError {
            // Cancelled while waiting: nothing was handled, and the run ends as a cancelled run does, returning the
            // stored checkpoint (read outside the cancelled task, which a backend would refuse).
            return try await storedCheckpoint()
        }
        do {
            let saved = try await consume(until: stop, holding: lease, handler)
            await lease.release()
            return saved
        } catch {
            await lease.release()
            throw error
        }
    }

    /// The run itself: resumes after the checkpoint and handles events until `stop`, cancellation or an error,
    /// checking `lease` (when exclusive) before each event and saving checkpoints through it.
    private func consume(
        until stop: Stop, holding lease: ConsumerLease?, _ handler: (RecordedEvent) async throws -> Void
    ) async throws -> UInt64 {
        // Read outside the calling task: a run started (or handed its lease) in a cancelled task still returns its
        // stored checkpoint normally, as `run` documents, on a backend whose reads honour cancellation (etcd).
        let resumeAfter = try await storedCheckpoint()
        var saved = resumeAfter
        var handled = resumeAfter
        var sinceCheckpoint = 0
        // An exclusive run waits for events on a doorbell that ends as soon as the lease is lost.
        var openDoorbell: (@Sendable () async throws -> AsyncThrowingStream<Void, any Error>)?
        if let lease {
            let store = store
            openDoorbell = { try await lease.doorbell(of: store) }
        }
        let subscription = AllSubscription(
            store: store, start: .after(resumeAfter), filter: filter, bufferSize: bufferSize,
            openDoorbell: openDoorbell)
        do {
            messages: for try await message in subscription {
                switch message {
                case .event(let event):
                    try await lease?.check()
                    do {
                        try await handler(event)
                    } catch {
                        // A handler that honours cancellation throws when the run is cancelled: that event was not
                        // handled, the ones before it were, and the run ends as a cancelled run does.
                        if Task.isCancelled { break messages }
                        // Its own error, even a `storeClosed` of another store, stops the run with that error.
                        throw HandlerFailure(error: error)
                    }
                    handled = event.position
                    sinceCheckpoint += 1
                    if sinceCheckpoint >= checkpointInterval {
                        try await save(handled, holding: lease)
                        saved = handled
                        sinceCheckpoint = 0
                    }
                case .caughtUp(let through):
                    // Everything through `through` was either handled or filtered out.
                    handled = max(handled, through)
                    if handled != saved {
                        try await save(handled, holding: lease)
                        saved = handled
                        sinceCheckpoint = 0
                    }
                    if stop == .whenCaughtUp { return saved }
                }
            }
            // Cancelled or closed: record progress (outside the cancelled task, see `save`).
            if handled != saved {
                try await save(handled, holding: lease)
                saved = handled
            }
        } catch let failure as HandlerFailure {
            throw failure.error
        } catch EventStoreError.storeClosed {
            // The store closed under the run: it ends, as a cancelled run does, with the last checkpoint it saved.
            // The events handled since then are delivered again by the next run.
        }
        return saved
    }

    /// The handler's own error, carried past the loop's handling of the store closing.
    private struct HandlerFailure: Error {
        let error: any Error
    }

    /// The stored checkpoint (0 if none), read outside the calling task, which a backend whose reads honour
    /// cancellation (etcd) would refuse once cancelled; a cancelled run still ends normally with it.
    private func storedCheckpoint() async throws -> UInt64 {
        let (store, consumer) = (store, consumer)
        return try await Task { try await store.checkpoint(of: consumer) ?? 0 }.value
    }

    /// Saves a checkpoint (through the lease's session when exclusive) outside the calling task, so that a
    /// cancellation arriving mid-save (on a backend whose requests honour cancellation, such as etcd) neither refuses
    /// nor loses it; the loop then ends normally.
    private func save(_ position: UInt64, holding lease: ConsumerLease?) async throws {
        let (store, consumer) = (store, consumer)
        if let session = lease?.session {
            try await Task { try await session.saveCheckpoint(position, for: consumer) }.value
        } else {
            try await Task { try await store.saveCheckpoint(position, for: consumer) }.value
        }
    }
}
