// A saga's history as it reads to a person: its log events, in order, with their timestamps.
//
// Invariants:
// - One entry per log event, in version order; nothing is merged or dropped.
// - `at` is the runner's clock time written into the event; `recordedAt` is the store's commit time.

import EventStore
import Foundation

/// One event of a saga's history.
public struct SagaHistoryEntry: Sendable, Hashable {
    /// The event's version in the saga's stream.
    public var version: UInt64
    /// What happened.
    public var kind: SagaEventKind
    /// When, by the runner's clock.
    public var at: Date
    /// When the store committed it, by the store's clock.
    public var recordedAt: Date
    /// The step concerned, if any.
    public var step: String?
    /// The attempt number, if any.
    public var attempt: Int?
    /// The attempt's idempotency key, if any.
    public var idempotencyKey: String?
    /// The error recorded with a failure or a stuck saga.
    public var error: String?
    /// For a failure, whether another attempt followed.
    public var willRetry: Bool?
    /// For a step's failure, whether its action had taken effect: it returned, but its result could not be recorded
    /// (its output did not encode, or the store refused it). Such a step is compensated, with a nil output.
    public var tookEffect: Bool
    /// Whether a StepStarted re-runs an attempt a crash interrupted.
    public var resumed: Bool
    /// An operator's note.
    public var note: String?
}

extension SagaHistoryEntry {
    init(_ record: SagaRecord, event: RecordedEvent, stepNames: [String]) {
        self.init(
            version: event.version, kind: record.kind, at: record.at, recordedAt: event.recordedAt,
            step: record.stepName ?? record.step.flatMap { stepNames.indices.contains($0) ? stepNames[$0] : nil },
            attempt: record.attempt, idempotencyKey: record.idempotencyKey, error: record.error,
            willRetry: record.willRetry, tookEffect: record.tookEffect ?? false, resumed: record.resumed ?? false,
            note: record.note)
    }
}
