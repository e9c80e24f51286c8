// Parallel step groups: their steps run concurrently, the next step waits for all of them, a final failure stops
// the siblings' retries and compensates what completed, and a crash in the middle of a group resumes correctly.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

/// A one-shot signal that tasks can wait for. A wait throws after `limit` instead of hanging: a test whose steps did
/// not overlap as they should fails. The limit only tells "never" from "eventually": in a full `swift test` run,
/// hundreds of tasks queue for two cooperative threads, and a chain of hops that takes milliseconds alone took over
/// 30 s (SagaParallelReviewTests measured 33 s), so it is generous.
actor Signal {
    private var raised = false
    private var waiting: [Int: CheckedContinuation<Bool, Never>] = [:]
    private var nextID = 0

    func raise() {
        raised = true
        for waiter in waiting.values { waiter.resume(returning: true) }
        waiting.removeAll()
    }

    func wait(limit: Duration = .seconds(180)) async throws {
        if raised { return }
        nextID += 1
        let id = nextID
        let timer = Task {
            try? await Task.sleep(for: limit)  // a guard against hanging, not a timed assertion
            self.expire(id)
        }
        let met = await withCheckedContinuation { waiting[id] = $0 }
        timer.cancel()
        if !met { throw TestFailure(message: "waited \(limit) for a signal that never came") }
    }

    private func expire(_ id: Int) {
        waiting.removeValue(forKey: id)?.resume(returning: false)
    }
}

/// Lets `parties` callers meet: each `arrive()` returns once all have arrived (or throws, see ``Signal``).
actor Rendezvous {
    private let parties: Int
    private var arrived = 0
    private let everyone = Signal()

    init(parties: Int) { self.parties = parties }

    func arrive() async throws {
        arrived += 1
        if arrived == parties { await everyone.raise() }
        try await everyone.wait()
    }
}

@Suite(.timeLimit(.minutes(10))) struct SagaParallelGroupTests {
    @Test func stepsOfAGroupRunConcurrentlyAndTheNextStepSeesAllTheirOutputs() async throws {
        let bank = Bank()
        let meeting = Rendezvous(parties: 3)
        let seen = Locked<[String]>([])
        var saga = SagaDefinition<Transfer>("parallel")
        let (stock, payment, mail) = saga.inParallel { group in
            (
                group.step("stock", options: StepOptions(retry: .never)) { step in
                    try bank.call("stock", key: step.idempotencyKey)
                    try await meeting.arrive()
                    return Receipt(reference: "stock-\(step.input.amount)")
                } compensation: { _, _ in },
                group.step("payment", options: StepOptions(retry: .never)) { step in
                    try bank.call("payment", key: step.idempotencyKey)
                    try await meeting.arrive()
                    return Receipt(reference: "payment-\(step.input.amount)")
                } compensation: { _, _ in },
                group.step("mail", options: StepOptions(retry: .never)) { step in
                    try bank.call("mail", key: step.idempotencyKey)
                    try await meeting.arrive()
                    return Receipt(reference: "mail")
                }
            )
        }
        saga.step("ship", options: StepOptions(retry: .never)) { step -> NoOutput in
            try bank.call("ship", key: step.idempotencyKey)
            seen.withLock {
                $0 = [(try? step.output(of: stock).reference) ?? "-", (try? step.output(of: payment).reference) ?? "-",
                    (try? step.output(of: mail).reference) ?? "-"]
            }
            return NoOutput()
        }
        #expect(saga.stepNames == ["stock", "payment", "mail", "ship"])
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        let id = try sagaID()
        #expect(try await runner.start(saga, id: id, input: sampleTransfer) == .completed)
        #expect(Set(bank.names.prefix(3)) == ["stock", "payment", "mail"])
        #expect(bank.names.last == "ship")
        #expect(seen.withLock { $0 } == ["stock-10", "payment-10", "mail"])
        // All three started before any completed: the log shows the overlap too.
        let history = try await kinds(runner, id)
        #expect(Array(history.prefix(4)) == [.sagaStarted, .stepStarted, .stepStarted, .stepStarted])
        #expect(history.filter { $0 == .stepCompleted }.count == 4)
        #expect(history.last == .sagaCompleted)
    }

    @Test func consecutiveGroupsRunOneAfterTheOther() async throws {
        let bank = Bank()
        let first = Rendezvous(parties: 2)
        let second = Rendezvous(parties: 2)
        var saga = SagaDefinition<Transfer>("two-groups")
        let (a, b) = saga.inParallel { group in
            (
                group.step("a", options: StepOptions(retry: .never)) { step in
                    try bank.call("a", key: step.idempotencyKey)
                    try await first.arrive()
                    return Receipt(reference: "a")
                },
                group.step("b", options: StepOptions(retry: .never)) { step in
                    try bank.call("b", key: step.idempotencyKey)
                    try await first.arrive()
                    return Receipt(reference: "b")
                }
            )
        }
        saga.inParallel { group in
            for name in ["c", "d"] {
                // Each step of the second group sees both outputs of the first: the groups are separate stages.
                group.step(name, options: StepOptions(retry: .never)) { step -> NoOutput in
                    let seen = try step.output(of: a).reference + (try step.output(of: b).reference)
                    try bank.call("\(name) saw \(seen)", key: step.idempotencyKey)
                    try await second.arrive()
                    return NoOutput()
                }
            }
        }
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        #expect(try await runner.start(saga, id: try sagaID(), input: sampleTransfer) == .completed)
        #expect(Set(bank.names.prefix(2)) == ["a", "b"])
        #expect(Set(bank.names.suffix(2)) == ["c saw ab", "d saw ab"])
    }

    @Test func aStepNeverSeesTheOutputOfASiblingEvenOnceItHasCompleted() async throws {
        let firstDone = Signal()
        let result = Locked<[String]>([])
        var saga = SagaDefinition<Transfer>("siblings")
        saga.step("before", options: StepOptions(retry: .never)) { _ in Receipt(reference: "before") }
        saga.inParallel { group in
            let quick = group.step("quick", options: StepOptions(retry: .never)) { _ in Receipt(reference: "quick") }
            group.step(
                "reader", options: StepOptions(retry: RetryPolicy(maximumAttempts: 2, initialBackoff: .zero, jitter: 0))
            ) { step -> NoOutput in
                if step.attempt == 1 {
                    try await firstDone.wait()
                    throw TestFailure(message: "try again once quick has completed")
                }
                do {
                    _ = try step.output(of: quick)
                    result.withLock { $0.append("read a sibling's output") }
                } catch let error as EventStoreError {
                    if case .invalidArgument = error { result.withLock { $0.append("invalidArgument") } }
                }
                return NoOutput()
            }
        }
        let hooks = SagaHooks(stepFinished: { event in
            if event.step == "quick" { Task { await firstDone.raise() } }
        })
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock(), hooks: hooks)
        #expect(try await runner.start(saga, id: try sagaID(), input: sampleTransfer) == .completed)
        #expect(result.withLock { $0 } == ["invalidArgument"])
    }

    @Test func aFinalFailureStopsTheSiblingsRetriesAndCompensatesWhatCompleted() async throws {
        let bank = Bank()
        let badFailed = Signal()
        var saga = SagaDefinition<Transfer>("failing-group")
        saga.step("before", options: StepOptions(retry: .never)) { step in
            try bank.call("before", key: step.idempotencyKey)
            return Receipt(reference: "before")
        } compensation: { step, _ in
            try bank.call("undo-before", key: step.idempotencyKey)
        }
        saga.inParallel { group in
            group.step("slow", options: StepOptions(retry: .never)) { step in
                try await badFailed.wait()
                try bank.call("slow", key: step.idempotencyKey)
                return Receipt(reference: "slow")
            } compensation: { step, receipt in
                try bank.call("undo-slow:\(receipt?.reference ?? "nil")", key: step.idempotencyKey)
            }
            group.step("bad", options: StepOptions(retry: .never)) { step -> Receipt in
                try bank.call("bad", key: step.idempotencyKey)
                throw TestFailure(message: "bad refused")
            } compensation: { step, _ in
                try bank.call("undo-bad", key: step.idempotencyKey)
            }
            group.step(
                "flaky",
                options: StepOptions(
                    retry: RetryPolicy(maximumAttempts: 5, initialBackoff: .zero, jitter: 0),
                    compensatesFailedAction: true)
            ) { step -> Receipt in
                try await badFailed.wait()
                try bank.call("flaky", key: step.idempotencyKey)
                throw TestFailure(message: "flaky refused")
            } compensation: { step, receipt in
                try bank.call("undo-flaky:\(receipt?.reference ?? "nil")", key: step.idempotencyKey)
            }
        }
        saga.step("after") { step in
            try bank.call("after", key: step.idempotencyKey)
            return NoOutput()
        }
        let failures = Locked<[String]>([])
        let hooks = SagaHooks(stepFailed: { event in
            failures.withLock { $0.append("\(event.step) retry=\(event.willRetry)") }
            if event.step == "bad" { Task { await badFailed.raise() } }
        })
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock(), hooks: hooks)
        let id = try sagaID()
        let outcome = try await runner.start(saga, id: id, input: sampleTransfer)
        #expect(outcome == .compensated(failedStep: "bad", error: "bad refused"))
        // flaky ran once (no retry once bad had failed for good); after never ran; compensation runs last step
        // first: flaky (compensatesFailedAction, no output), slow (completed), then before. bad has no output.
        #expect(bank.names.filter { $0 == "flaky" }.count == 1)
        #expect(!bank.names.contains("after"))
        #expect(
            Array(bank.names.suffix(3)) == ["undo-flaky:nil", "undo-slow:slow", "undo-before"])
        #expect(!bank.names.contains("undo-bad"))
        #expect(failures.withLock { $0 }.sorted() == ["bad retry=false", "flaky retry=false"])
        #expect(try await runner.status(of: id) == .compensated)
    }

    /// A group step blocked until its run is cancelled, in a saga whose other group step completes first.
    static func blockingGroup(bank: Bank, block: Bool, started: Signal?) -> SagaDefinition<Transfer> {
        var saga = SagaDefinition<Transfer>("resumable-group")
        saga.inParallel { group in
            group.step("quick", options: StepOptions(retry: .never)) { step in
                try bank.call("quick", key: step.idempotencyKey)
                return Receipt(reference: "quick")
            } compensation: { step, _ in
                try bank.call("undo-quick", key: step.idempotencyKey)
            }
            group.step("blocked", options: StepOptions(retry: .never)) { step in
                try bank.call("blocked", key: step.idempotencyKey)
                if block {
                    await started?.raise()
                    try await Task.sleep(for: .seconds(3_600))  // until cancelled: a runner that stops mid-step
                }
                return Receipt(reference: "blocked")
            } compensation: { step, _ in
                try bank.call("undo-blocked", key: step.idempotencyKey)
            }
        }
        saga.step("last", options: StepOptions(retry: .never)) { step in
            try bank.call("last", key: step.idempotencyKey)
            return NoOutput()
        }
        return saga
    }

    @Test func aResumedGroupRerunsOnlyTheStepsThatDidNotComplete() async throws {
        let store = makeStore()
        let bank = Bank()
        let id = try sagaID("resume-group")
        let blocked = Signal()
        let quickDone = Signal()
        let hooks = SagaHooks(stepFinished: { event in
            if event.step == "quick" { Task { await quickDone.raise() } }
        })
        let first = SagaRunner(store: store, clock: ManualSagaClock(), hooks: hooks)
        let run = Task {
            try await first.start(
                Self.blockingGroup(bank: bank, block: true, started: blocked), id: id, input: sampleTransfer)
        }
        try await blocked.wait()
        try await quickDone.wait()
        run.cancel()
        _ = try? await run.value
        #expect(try await first.status(of: id) == .running)

        let second = SagaRunner(store: store, clock: ManualSagaClock())
        try second.register(Self.blockingGroup(bank: bank, block: false, started: nil))
        #expect(try await second.resume(id) == .completed)
        // quick is not run again; blocked runs again with its attempt number, so with the same key.
        #expect(bank.calls.filter { $0.name == "quick" }.map(\.key) == ["resume-group/quick/1"])
        #expect(
            bank.calls.filter { $0.name == "blocked" }.map(\.key) == ["resume-group/blocked/1", "resume-group/blocked/1"])
        #expect(bank.names.last == "last")
    }

    @Test func groupStepsLeftOpenWhileCompensatingFinishTheirAttemptBeforeCompensationBegins() async throws {
        let store = makeStore()
        let bank = Bank()
        let id = try sagaID("open-while-compensating")
        let hangingStarted = Signal()
        let onceStarted = Signal()
        func definition(block: Bool) -> SagaDefinition<Transfer> {
            var saga = SagaDefinition<Transfer>("compensating-group")
            saga.inParallel { group in
                group.step("done", options: StepOptions(retry: .never)) { step in
                    try bank.call("done", key: step.idempotencyKey)
                    return Receipt(reference: "done")
                } compensation: { step, _ in
                    try bank.call("undo-done", key: step.idempotencyKey)
                }
                group.step("bad", options: StepOptions(retry: .never)) { step -> Receipt in
                    try bank.call("bad", key: step.idempotencyKey)
                    throw TestFailure(message: "bad refused")
                }
                // atLeastOnce (the default): its interrupted attempt runs again under the same key, and completes.
                group.step("hanging", options: StepOptions(retry: .never)) { step in
                    try bank.call("hanging", key: step.idempotencyKey)
                    if block {
                        await hangingStarted.raise()
                        try await Task.sleep(for: .seconds(3_600))  // until cancelled: a runner that stops mid-step
                    }
                    return Receipt(reference: "hanging")
                } compensation: { step, receipt in
                    try bank.call("undo-hanging:\(receipt?.reference ?? "nil")", key: step.idempotencyKey)
                }
                // atMostOnce: never runs again; its effect is unknown, so it is compensated without an output.
                group.step(
                    "once", options: StepOptions(semantics: .atMostOnce, retry: .never, compensatesFailedAction: true)
                ) { step in
                    try bank.call("once", key: step.idempotencyKey)
                    if block {
                        await onceStarted.raise()
                        try await Task.sleep(for: .seconds(3_600))
                    }
                    return Receipt(reference: "once")
                } compensation: { step, receipt in
                    try bank.call("undo-once:\(receipt?.reference ?? "nil")", key: step.idempotencyKey)
                }
            }
            return saga
        }
        let badFailed = Signal()
        let doneFinished = Signal()
        let hooks = SagaHooks(
            stepFinished: { event in if event.step == "done" { Task { await doneFinished.raise() } } },
            stepFailed: { event in if event.step == "bad" { Task { await badFailed.raise() } } })
        let first = SagaRunner(store: store, clock: ManualSagaClock(), hooks: hooks)
        let run = Task { try await first.start(definition(block: true), id: id, input: sampleTransfer) }
        try await hangingStarted.wait()
        try await onceStarted.wait()
        try await badFailed.wait()
        try await doneFinished.wait()
        run.cancel()
        _ = try? await run.value
        #expect(try await first.status(of: id) == .compensating)

        let second = SagaRunner(store: store, clock: ManualSagaClock())
        try second.register(definition(block: false))
        #expect(try await second.resume(id) == .compensated(failedStep: "bad", error: "bad refused"))
        let key = "open-while-compensating"
        #expect(bank.calls.filter { $0.name == "hanging" }.map(\.key) == ["\(key)/hanging/1", "\(key)/hanging/1"])
        #expect(bank.calls.filter { $0.name == "once" }.map(\.key) == ["\(key)/once/1"])
        #expect(Array(bank.names.suffix(3)) == ["undo-once:nil", "undo-hanging:hanging", "undo-done"])
        let history = try await second.history(of: id)
        #expect(history.filter { $0.kind == .stepFailed && $0.step == "once" }.count == 1)
        #expect(history.filter { $0.kind == .stepCompleted && $0.step == "hanging" }.count == 1)
    }

    @Test func nestedOrEmptyGroupsAreRefusedBeforeAnythingRuns() async throws {
        var nested = SagaDefinition<Transfer>("nested")
        nested.inParallel { outer in
            outer.step("a") { _ in NoOutput() }
            outer.inParallel { inner in
                inner.step("b") { _ in NoOutput() }
            }
        }
        var empty = SagaDefinition<Transfer>("empty")
        empty.step("a") { _ in NoOutput() }
        empty.inParallel { _ in }
        let store = makeStore()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        for (saga, problem) in [(nested, "cannot be nested"), (empty, "needs at least one step")] {
            do {
                _ = try await runner.start(saga, id: try sagaID(), input: sampleTransfer)
                Issue.record("\(saga.name) was accepted")
            } catch let EventStoreError.invalidArgument(message) {
                #expect(message.contains(problem), "\(message)")
            }
        }
        #expect(try await store.readAll(from: 0, limit: 10).isEmpty)
    }
}
