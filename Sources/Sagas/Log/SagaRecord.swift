// The events of a saga's log, as stored in its stream "$saga-<id>".
//
// Invariants:
// - The stored event type is the kind's raw value ("SagaStarted", "StepCompleted", ...); the payload is one JSON
//   object (`SagaRecord`) whose fields that do not apply to the kind are absent.
// - `at` is the runner's SagaClock time when the event was written (the store adds its own wall-clock time).
// - A log event that does not decode is reported as EventStoreError.corrupted naming the stream and version; it is
//   never skipped.

import EventStore
import Foundation

/// The kinds of event in a saga's log.
public enum SagaEventKind: String, Sendable, Hashable, Codable, CaseIterable {
    /// The saga was started with its input.
    case sagaStarted = "SagaStarted"
    /// An attempt of a step's action began.
    case stepStarted = "StepStarted"
    /// A step's action completed, with its output.
    case stepCompleted = "StepCompleted"
    /// An attempt of a step's action failed (it may be retried).
    case stepFailed = "StepFailed"
    /// An attempt of a step's compensation began.
    case compensationStarted = "CompensationStarted"
    /// A step's compensation completed.
    case stepCompensated = "StepCompensated"
    /// An attempt of a step's compensation failed (it may be retried).
    case compensationFailed = "CompensationFailed"
    /// An operator skipped a step's compensation.
    case compensationSkipped = "CompensationSkipped"
    /// Every step completed.
    case sagaCompleted = "SagaCompleted"
    /// Every completed step was compensated.
    case sagaCompensated = "SagaCompensated"
    /// A compensation failed after its retries; an operator must act.
    case sagaStuck = "SagaStuck"
    /// An operator asked for the compensation of a stuck saga to be tried again.
    case sagaRetried = "SagaRetried"
    /// An operator marked a stuck saga resolved by hand.
    case sagaResolved = "SagaResolved"
}

/// The payload of one saga log event.
struct SagaRecord: Codable, Sendable, Hashable {
    var kind: SagaEventKind
    var at: Date
    var definition: String?
    var input: Data?
    var steps: [String]?
    var step: Int?
    var stepName: String?
    var attempt: Int?
    var idempotencyKey: String?
    var output: Data?
    var error: String?
    var willRetry: Bool?
    /// On StepFailed: true when the action had returned, so its effect happened, but its result could not be
    /// recorded; the step is then compensated. Absent (false) for every other failure, and in logs written before
    /// it was recorded.
    var tookEffect: Bool?
    var resumed: Bool?
    var note: String?
    /// On SagaStuck: the steps whose compensation is still to run, the stuck one first, as the runner's definition
    /// said, so that an operator's runner without the definition can list them.
    var pending: [Int]?

    init(_ kind: SagaEventKind, at: Date) {
        self.kind = kind
        self.at = at
    }

    func eventData() throws -> EventData {
        do {
            return EventData(type: kind.rawValue, data: try JSONEventCoder().encode(self))
        } catch {
            throw EventStoreError.codingFailed(type: kind.rawValue, reason: "\(error)")
        }
    }

    static func decode(_ event: RecordedEvent) throws -> SagaRecord {
        let location = "saga log \"\(event.stream)\" version \(event.version)"
        guard let kind = SagaEventKind(rawValue: event.type) else {
            throw EventStoreError.corrupted(location: location, detail: "unknown saga event type \"\(event.type)\"")
        }
        let record: SagaRecord
        do {
            record = try JSONEventCoder().decode(SagaRecord.self, from: event.data)
        } catch {
            throw EventStoreError.corrupted(location: location, detail: "undecodable \(kind.rawValue): \(error)")
        }
        guard record.kind == kind else {
            throw EventStoreError.corrupted(
                location: location, detail: "event type \(kind.rawValue) holds a \(record.kind.rawValue) payload")
        }
        return record
    }
}

/// The payload of an index event: which saga opened or closed.
struct SagaIndexRecord: Codable, Sendable, Hashable {
    static let opened = "SagaOpened"
    static let closed = "SagaClosed"
    static let checkpoint = "SagaIndexCheckpoint"

    var saga: String?
    var definition: String?
    /// For a checkpoint: every saga opened at an index version below this one is finished.
    var lowWaterMark: UInt64?

    func eventData(type: String) throws -> EventData {
        do {
            return EventData(type: type, data: try JSONEventCoder().encode(self))
        } catch {
            throw EventStoreError.codingFailed(type: type, reason: "\(error)")
        }
    }

    static func decode(_ event: RecordedEvent) throws -> SagaIndexRecord {
        do {
            return try JSONEventCoder().decode(SagaIndexRecord.self, from: event.data)
        } catch {
            throw EventStoreError.corrupted(
                location: "\"\(event.stream)\" version \(event.version)", detail: "undecodable \(event.type): \(error)")
        }
    }
}
