// Recovery: finding the unfinished sagas and resuming each one.
//
// The choice: an index stream, "$sagas-index", instead of a scan of the global log. SagaOpened is written in the
// same transaction as SagaStarted and SagaClosed in the same transaction as the terminal record, so the index's
// open sagas are exactly the unfinished ones. A checkpoint stream, "$sagas-index-checkpoint", holds a low-water
// mark: every saga opened at an index version below it is finished.
//
// Cost: recovery reads the last checkpoint (one event) and the index from the mark onwards: two events per saga
// started since the oldest unfinished saga, whatever the size of the global log. A saga that stays Stuck holds the
// mark back until an operator finishes it. Each saga start and end costs one extra small event in the index.
//
// Invariants:
// - The mark only ever names an index version at or below the oldest saga still open when it was computed, so
//   it never hides an unfinished saga (a lower mark written later by another runner is safe, just slower).
// - A saga another runner holds is left to it, and stays open in the index.

import EventStore
import Foundation

/// What recovery did with one unfinished saga.
public struct SagaRecovery: Sendable, Hashable {
    /// What happened.
    public enum Result: Sendable, Hashable {
        /// The saga was resumed and ran to this outcome.
        case finished(SagaOutcome)
        /// Another runner holds the saga's lock; it is left to that runner.
        case heldByAnotherRunner
        /// The saga could not be resumed (its definition is not registered, its log is damaged): the reason.
        case failed(String)
    }

    /// The saga.
    public var sagaID: SagaID
    /// What happened to it.
    public var result: Result

    /// Creates a recovery report entry.
    public init(sagaID: SagaID, result: Result) {
        self.sagaID = sagaID
        self.result = result
    }
}

/// An unfinished saga as the index lists it.
struct OpenSaga: Sendable {
    var id: SagaID
    var indexVersion: UInt64
}

extension SagaRunner {
    /// Finds every unfinished saga and resumes each one: forward if no step failed, otherwise by continuing its
    /// compensation. Stuck sagas are reported as they are, not retried. Call it when the process starts.
    /// - Returns: one entry per unfinished saga found, oldest first.
    public func recover() async throws -> [SagaRecovery] {
        let (open, head, mark) = try await openSagas()
        var results: [SagaRecovery] = []
        var stillOpen: [UInt64] = []
        for saga in open {
            try Task.checkCancellation()
            let result: SagaRecovery.Result
            do {
                result = .finished(try await resume(saga.id, lockWait: configuration.recoveryLockWait))
            } catch EventStoreError.streamLocked {
                result = .heldByAnotherRunner
            } catch let error where error is CancellationError {
                throw error
            } catch {
                result = .failed(String(describing: error))
            }
            results.append(SagaRecovery(sagaID: saga.id, result: result))
            if case .finished(let outcome) = result, outcome.isFinished { continue }
            stillOpen.append(saga.indexVersion)
        }
        try await advanceCheckpoint(from: mark, to: stillOpen.min() ?? (head + 1))
        return results
    }

    /// The sagas the index lists as open, oldest first, with the index head and the mark the read started from.
    func openSagas() async throws -> (open: [OpenSaga], head: UInt64, mark: UInt64) {
        let mark = try await checkpoint()
        let index = try SagaStreams.index()
        let events = try await store.read(index, from: .version(mark))
        var open: [String: UInt64] = [:]
        for event in events {
            let record = try SagaIndexRecord.decode(event)
            guard let saga = record.saga else {
                throw EventStoreError.corrupted(
                    location: "\"\(index)\" version \(event.version)", detail: "\(event.type) names no saga")
            }
            switch event.type {
            case SagaIndexRecord.opened: open[saga] = event.version
            case SagaIndexRecord.closed: open[saga] = nil
            default:
                throw EventStoreError.corrupted(
                    location: "\"\(index)\" version \(event.version)", detail: "unknown index event \(event.type)")
            }
        }
        let sagas = try open.sorted { $0.value < $1.value }.map { OpenSaga(id: try SagaID($0.key), indexVersion: $0.value) }
        return (sagas, events.last?.version ?? (mark - 1), mark)
    }

    private func checkpoint() async throws -> UInt64 {
        guard let last = try await store.readBackward(try SagaStreams.checkpoint(), limit: 1).first else { return 1 }
        return max(try SagaIndexRecord.decode(last).lowWaterMark ?? 1, 1)
    }

    private func advanceCheckpoint(from mark: UInt64, to newMark: UInt64) async throws {
        guard newMark > mark else { return }
        let event = try SagaIndexRecord(lowWaterMark: newMark).eventData(type: SagaIndexRecord.checkpoint)
        _ = try await store.append([event], to: try SagaStreams.checkpoint(), expectedVersion: .any)
    }
}
