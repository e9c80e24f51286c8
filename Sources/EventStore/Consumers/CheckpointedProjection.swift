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

    /// Creates a projection runner.
    /// - Parameter checkpointEvery: how many handled events between checkpoints; at least 1.
    public init(
        store: any EventStoring, consumer: String, checkpointEvery: Int = 100, filter: SubscriptionFilter = .all,
        bufferSize: Int = 256
    ) {
        self.store = store
        self.consumer = consumer
        self.checkpointInterval = checkpointEvery
        self.filter = filter
        self.bufferSize = bufferSize
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
    /// counts as not handled).
    /// - Returns: the last checkpointed position (0 if none).
    @discardableResult
    public func run(
        until stop: Stop = .never, _ handler: (RecordedEvent) async throws -> Void
    ) async throws -> UInt64 {
        guard checkpointInterval > 0 else {
            throw EventStoreError.invalidArgument("checkpointEvery must be at least 1, got \(checkpointInterval)")
        }
        let resumeAfter = try await store.checkpoint(of: consumer) ?? 0
        var saved = resumeAfter
        var handled = resumeAfter
        var sinceCheckpoint = 0
        let subscription = store.subscribeToAll(from: .after(resumeAfter), filter: filter, bufferSize: bufferSize)
        messages: for try await message in subscription {
            switch message {
            case .event(let event):
                do {
                    try await handler(event)
                } catch {
                    // A handler that honours cancellation throws when the run is cancelled: that event was not
                    // handled, the ones before it were, and the run ends as a cancelled run does.
                    if Task.isCancelled { break messages }
                    throw error
                }
                handled = event.position
                sinceCheckpoint += 1
                if sinceCheckpoint >= checkpointInterval {
                    try await Self.save(handled, for: consumer, in: store)
                    saved = handled
                    sinceCheckpoint = 0
                }
            case .caughtUp(let through):
                // Everything through `through` was either handled or filtered out.
                handled = max(handled, through)
                if handled != saved {
                    try await Self.save(handled, for: consumer, in: store)
                    saved = handled
                    sinceCheckpoint = 0
                }
                if stop == .whenCaughtUp { return saved }
            }
        }
        // Cancelled or closed: record progress outside the cancelled task, so that the save itself is not refused.
        if handled != saved {
            let (store, consumer, position) = (store, consumer, handled)
            try await Task { try await store.saveCheckpoint(position, for: consumer) }.value
            saved = handled
        }
        return saved
    }

    /// Saves a checkpoint outside the calling task, so that a cancellation arriving mid-save (on a backend whose
    /// requests honour cancellation, such as etcd) neither refuses nor loses it; the loop then ends normally.
    private static func save(_ position: UInt64, for consumer: String, in store: any EventStoring) async throws {
        try await Task { try await store.saveCheckpoint(position, for: consumer) }.value
    }
}
