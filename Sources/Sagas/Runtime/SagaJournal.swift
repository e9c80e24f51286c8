// The log of a saga while the steps of a parallel group run (SagaExecution.advanceConcurrently).
//
// Invariants:
// - Records are appended one at a time, in the order they arrive, each expecting the version the previous one left;
//   the actor alone would not keep them apart across the append's suspension, so a FIFO WriterLock does.
// - Once the saga is compensating, no new attempt starts (StepStarted is refused with GroupStopped, unless it resumes
//   an attempt a crash interrupted) and a failed attempt is recorded as the last one.

import EventStore
import Foundation

/// A step of a parallel group was not started (again) because a sibling had failed for good.
struct GroupStopped: Error {}

/// The log of a saga while the steps of a parallel group run: they append through it one record at a time, each
/// expecting the version every earlier record left. Once the saga is compensating, it refuses to start a new
/// attempt (throwing ``GroupStopped``; a crash-interrupted attempt may still resume) and records a failed attempt
/// as the last.
actor SagaJournal {
    private(set) var state: SagaState
    private let session: any StreamSession
    private let writerLock = WriterLock()
    /// Tasks waiting for the saga to stop running forward (`untilStopped`), by id.
    private var stopWaiters: [Int: CheckedContinuation<Void, Never>] = [:]
    private var nextStopWaiter = 0

    /// Whether the saga has stopped running forward (a step failed for good): no new attempt starts.
    var stopped: Bool { state.status != .running }

    init(state: SagaState, session: any StreamSession) {
        self.state = state
        self.session = session
    }

    /// Appends `record` (with `others`) and returns the saga's state after it.
    func record(_ record: SagaRecord, with others: [StreamAppend]) async throws -> SagaState {
        await writerLock.lock()
        defer { writerLock.unlock() }
        var record = record
        if state.status != .running {
            if record.kind == .stepStarted, record.resumed != true { throw GroupStopped() }
            if record.kind == .stepFailed { record.willRetry = false }
        }
        state = try await SagaExecution.append(record, with: others, to: session, after: state)
        if stopped {
            for waiter in stopWaiters.values { waiter.resume() }
            stopWaiters.removeAll()
        }
        return state
    }

    /// Returns once the saga has stopped running forward, or the calling task is cancelled.
    func untilStopped() async {
        if stopped { return }
        nextStopWaiter += 1
        let id = nextStopWaiter
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                if stopped || Task.isCancelled {
                    continuation.resume()
                } else {
                    stopWaiters[id] = continuation
                }
            }
        } onCancel: {
            Task { await self.stopWaiting(id) }
        }
    }

    private func stopWaiting(_ id: Int) {
        stopWaiters.removeValue(forKey: id)?.resume()
    }
}
