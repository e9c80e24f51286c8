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
    /// compensation. Up to ``SagaRunnerConfiguration/recoveryConcurrency`` sagas run at once. Stuck sagas are
    /// reported as they are, not retried. Call it when the process starts.
    /// - Returns: one entry per unfinished saga found, oldest first.
    public func recover() async throws -> [SagaRecovery] {
        try configuration.validate()
        let width = configuration.recoveryConcurrency
        let (open, head, mark) = try await openSagas()
        let recoverAt = { @Sendable (index: Int) async throws -> (Int, SagaRecovery.Result) in
            (index, try await self.recoverOne(open[index].id))
        }
        let outcomes = try await withThrowingTaskGroup(of: (Int, SagaRecovery.Result).self) { group in
            var outcomes = [SagaRecovery.Result](repeating: .heldByAnotherRunner, count: open.count)
            var next = min(width, open.count)
            for index in 0..<next { group.addTask { try await recoverAt(index) } }
            while let (index, result) = try await group.next() {
                outcomes[index] = result
                if next < open.count {
                    let index = next
                    group.addTask { try await recoverAt(index) }
                    next += 1
                }
            }
            return outcomes
        }
        var stillOpen: [UInt64] = []
        for (saga, result) in zip(open, outcomes) {
            if case .finished(let outcome) = result, outcome.isFinished { continue }
            stillOpen.append(saga.indexVersion)
        }
        try await advanceCheckpoint(from: mark, to: stillOpen.min() ?? (head + 1))
        return zip(open, outcomes).map { SagaRecovery(sagaID: $0.id, result: $1) }
    }

    /// Resumes one saga for recovery; only cancellation is thrown, every other problem is reported.
    private func recoverOne(_ id: SagaID) async throws -> SagaRecovery.Result {
        do {
            return .finished(try await resume(id, lockWait: configuration.recoveryLockWait))
        } catch EventStoreError.streamLocked {
            return .heldByAnotherRunner
        } catch let error where error is CancellationError {
            throw error
        } catch {
            return .failed(String(describing: error))
        }
    }

    /// The sagas the index lists as open, oldest first, with the index head and the mark the read started from.
    func openSagas() async throws -> (open: [OpenSaga], head: UInt64, mark: UInt64) {
        let mark = try await checkpoint()
        let index = try SagaStreams.index()
        let events = try await store.read(index, from: .version(mark))
        // Keyed by SagaID, which compares bytes as the sagas' streams do: two canonically equivalent ids are two
        // sagas, and closing one must not drop the other.
        var open: [SagaID: UInt64] = [:]
        for event in events {
            let record = try SagaIndexRecord.decode(event)
            let location = "\"\(index)\" version \(event.version)"
            guard let saga = record.saga else {
                throw EventStoreError.corrupted(location: location, detail: "\(event.type) names no saga")
            }
            // Read as stored: ids from before the reserved prefix stay recoverable.
            let id: SagaID
            do {
                id = try SagaID(stored: saga)
            } catch {
                throw EventStoreError.corrupted(location: location, detail: "\(event.type) names an invalid saga id: \(error)")
            }
            switch event.type {
            case SagaIndexRecord.opened: open[id] = event.version
            case SagaIndexRecord.closed: open[id] = nil
            default:
                throw EventStoreError.corrupted(location: location, detail: "unknown index event \(event.type)")
            }
        }
        let sagas = open.sorted { $0.value < $1.value }.map { OpenSaga(id: $0.key, indexVersion: $0.value) }
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
