// Resuming sagas a runner left mid-way. In-process, a runner "crashes" in the middle of a step by having its store
// refuse every further append and its task cancelled: nothing more is recorded, exactly as after a kill (the
// SIGKILL version is SagaCrashTests). A fresh runner then resumes or recovers.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite(.timeLimit(.minutes(10))) struct SagaRecoveryTests {
    /// Starts `saga` on a runner of `store` and stops that runner once the step `blockIn` is running.
    /// - Returns: the idempotency key the interrupted attempt saw.
    func interrupt(
        _ makeSaga: (AsyncStream<String>.Continuation) -> SagaDefinition<Transfer>, store: KeyValueEventStore,
        id: SagaID
    ) async throws -> String? {
        let (signals, signal) = AsyncStream.makeStream(of: String.self)
        // A cancelled runner records how an attempt that returned, or an atMostOnce one that threw, ended; a
        // crashed one records nothing more.
        let crashing = CancellationCheckingStore(base: store)
        let runner = SagaRunner(store: crashing, clock: ManualSagaClock())
        let saga = makeSaga(signal)
        let run = Task { try await runner.start(saga, id: id, input: sampleTransfer) }
        let key = await next(signals)
        crashing.crashed.withLock { $0 = true }
        run.cancel()
        await #expect(throws: CancellationError.self) { try await run.value }
        return key
    }

    @Test func anInterruptedAtLeastOnceStepRunsAgainWithTheSameIdempotencyKey() async throws {
        let store = makeStore()
        let bank = Bank()
        let id = try sagaID("resume")
        let key = try await interrupt({ transferSaga(bank: bank, blockIn: "debit", signal: $0) }, store: store, id: id)
        #expect(key == "resume/debit/1")
        #expect(try await SagaRunner(store: store).status(of: id) == .running)

        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        try runner.register(transferSaga(bank: bank))
        #expect(try await runner.resume(id) == .completed)
        #expect(bank.calls.map(\.key) == ["resume/reserve/1", "resume/debit/1", "resume/debit/1", "resume/credit/1"])
        let restarted = try await runner.history(of: id).filter { $0.kind == .stepStarted && $0.step == "debit" }
        #expect(restarted.map(\.resumed) == [false, true])
        #expect(restarted.map(\.idempotencyKey) == ["resume/debit/1", "resume/debit/1"])
    }

    @Test func anInterruptedAtMostOnceStepNeverRunsAgainAndIsCompensated() async throws {
        let store = makeStore()
        let bank = Bank()
        let once = StepOptions(semantics: .atMostOnce, retry: .never, compensatesFailedAction: true)
        let id = try sagaID()
        _ = try await interrupt(
            { transferSaga(bank: bank, options: ["debit": once], blockIn: "debit", signal: $0) }, store: store, id: id)

        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        try runner.register(transferSaga(bank: bank, options: ["debit": once]))
        let outcome = try await runner.resume(id)
        #expect(
            outcome
                == .compensated(
                    failedStep: "debit", error: "interrupted by a crash; an atMostOnce step never runs twice"))
        #expect(bank.names == ["reserve", "debit", "undo-debit", "undo-reserve"])
    }

    @Test func aCrashDuringCompensationResumesTheCompensation() async throws {
        let store = makeStore()
        let bank = Bank()
        bank.fail("credit")
        let id = try sagaID("undo")
        let key = try await interrupt(
            { transferSaga(bank: bank, blockIn: "undo-debit", signal: $0) }, store: store, id: id)
        #expect(key == "undo/debit/compensation/1")
        #expect(try await SagaRunner(store: store).status(of: id) == .compensating)

        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        try runner.register(transferSaga(bank: bank))
        let recovered = try await runner.recover()
        #expect(
            recovered == [
                SagaRecovery(sagaID: id, result: .finished(.compensated(failedStep: "credit", error: "credit refused")))
            ])
        #expect(bank.names == ["reserve", "debit", "credit", "undo-debit", "undo-debit", "undo-reserve"])
        #expect(
            bank.calls.filter { $0.name == "undo-debit" }.map(\.key) == [
                "undo/debit/compensation/1", "undo/debit/compensation/1",
            ])
    }

    @Test func recoveryFindsEveryUnfinishedSagaThroughTheIndexAndMovesItsCheckpoint() async throws {
        let store = makeStore()
        let bank = Bank()
        let first = SagaRunner(store: store, clock: ManualSagaClock())
        let done = try sagaID("done")
        #expect(try await first.start(transferSaga(bank: bank), id: done, input: sampleTransfer) == .completed)
        let waiting = try (1...3).map { try sagaID("waiting-\($0)") }
        for id in waiting { try await first.create(transferSaga(bank: bank), id: id, input: sampleTransfer) }

        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        try runner.register(transferSaga(bank: bank))
        let recovered = try await runner.recover()
        #expect(recovered.map(\.sagaID) == waiting)
        #expect(recovered.allSatisfy { $0.result == .finished(.completed) })
        #expect(try await runner.recover().isEmpty)

        // Everything in the index is finished, so the low-water mark is past its end.
        let index = try await store.read(try StreamName.system("$sagas-index"))
        #expect(index.count == 8)
        let checkpoint = try await store.readBackward(try StreamName.system("$sagas-index-checkpoint"), limit: 1)
        #expect(checkpoint.first.map { String(decoding: $0.data, as: UTF8.self) } == "{\"lowWaterMark\":9}")
    }

    @Test func aStuckSagaHoldsTheCheckpointBackAndIsReportedNotRetried() async throws {
        let store = makeStore()
        let bank = Bank()
        bank.fail("credit")
        bank.fail("undo-debit")
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let undo = StepOptions(retry: .never, compensationRetry: .never)
        let saga = transferSaga(bank: bank, options: ["debit": undo])
        let stuck = try sagaID("stuck")
        _ = try await runner.start(saga, id: stuck, input: sampleTransfer)
        let later = try sagaID("later")
        try await runner.create(saga, id: later, input: sampleTransfer)
        bank.fail("credit", times: 0)
        let calls = bank.calls.count

        let recovered = try await runner.recover()
        #expect(recovered.map(\.sagaID) == [stuck, later])
        #expect(recovered.first?.result == .finished(.stuck(step: "debit", error: "undo-debit refused")))
        #expect(recovered.last?.result == .finished(.completed))
        #expect(bank.calls.count == calls + 3)  // only the later saga's three steps ran
        let checkpoint = try await store.readBackward(try StreamName.system("$sagas-index-checkpoint"), limit: 1)
        #expect(checkpoint.isEmpty)  // the stuck saga is the oldest entry: the mark cannot move past it
        #expect(try await runner.recover().map(\.sagaID) == [stuck])
    }

    @Test func aSagaAnotherRunnerHoldsIsLeftToIt() async throws {
        let store = makeStore()
        let blocked = try await BlockedTransfer.start(on: store)
        let (id, bank) = (blocked.id, blocked.bank)

        let other = SagaRunner(
            store: store, clock: ManualSagaClock(), configuration: SagaRunnerConfiguration(lockWait: .milliseconds(20)))
        try other.register(transferSaga(bank: bank))
        #expect(try await other.recover() == [SagaRecovery(sagaID: id, result: .heldByAnotherRunner)])
        await #expect(throws: EventStoreError.self) { try await other.resume(id) }
        #expect(bank.names == ["reserve", "debit"])
        await blocked.stop()
    }

    @Test func twoRunnersNeverExecuteTheSameSagaStepAtOnce() async throws {
        let store = makeStore()
        let executions = Locked<[String: Int]>([:])
        let inFlight = Locked<[String: Int]>([:])
        let overlaps = Locked(0)
        var saga = SagaDefinition<Transfer>("counted")
        for name in ["a", "b", "c"] {
            saga.step(name) { step -> NoOutput in
                let key = "\(step.sagaID)/\(name)"
                executions.withLock { $0[key, default: 0] += 1 }
                let running = inFlight.withLock {
                    $0[key, default: 0] += 1
                    return $0[key] ?? 0
                }
                if running > 1 { overlaps.withLock { $0 += 1 } }
                for _ in 0..<20 { await Task.yield() }
                inFlight.withLock { $0[key, default: 0] -= 1 }
                return NoOutput()
            }
        }
        let ids = try (1...12).map { try sagaID("pair-\($0)") }
        let creator = SagaRunner(store: store)
        for id in ids { try await creator.create(saga, id: id, input: sampleTransfer) }

        let runners = [SagaRunner(store: store), SagaRunner(store: store)]
        for runner in runners { try runner.register(saga) }
        let reports = try await withThrowingTaskGroup(of: [SagaRecovery].self) { group in
            for runner in runners { group.addTask { try await runner.recover() } }
            var all: [[SagaRecovery]] = []
            for try await report in group { all.append(report) }
            return all
        }
        #expect(overlaps.withLock { $0 } == 0)
        #expect(executions.withLock { $0 }.count == ids.count * 3)
        #expect(executions.withLock { $0 }.values.allSatisfy { $0 == 1 })
        for id in ids { #expect(try await creator.status(of: id) == .completed) }
        #expect(reports.flatMap { $0 }.filter { $0.result == .finished(.completed) }.count >= ids.count)
    }

    @Test func stepsDeclaringTheSameResourceTakeTurns() async throws {
        let store = makeStore()
        let bank = Bank()
        let (signals, signal) = AsyncStream.makeStream(of: String.self)
        let gate = AsyncStream.makeStream(of: Void.self)
        var saga = SagaDefinition<Transfer>("locked")
        saga.step("debit", resources: { [$0.from] }) { step -> NoOutput in
            bank.enter()
            defer { bank.leave() }
            try bank.call("debit", key: step.idempotencyKey)
            signal.yield(step.sagaID.rawValue)
            if step.sagaID.rawValue == "first" {
                var iterator = gate.stream.makeAsyncIterator()
                _ = await iterator.next()
            }
            return NoOutput()
        }
        let runner = SagaRunner(store: store)
        let definition = saga
        let first = Task { try await runner.start(definition, id: try sagaID("first"), input: sampleTransfer) }
        var iterator = signals.makeAsyncIterator()
        #expect(await iterator.next() == "first")
        // The first saga's step holds the lease on "alice": nobody else can take it now.
        await #expect(throws: EventStoreError.self) {
            try await store.openSession(
                on: try StreamName.system("$saga-resource-alice"), sessionTimeout: .seconds(5), openTimeout: .zero)
        }
        let second = Task { try await runner.start(definition, id: try sagaID("second"), input: sampleTransfer) }
        gate.continuation.yield()
        #expect(await iterator.next() == "second")
        #expect(try await first.value == .completed)
        #expect(try await second.value == .completed)
        #expect(bank.maximumInFlight == 1)
    }

    @Test(.timeLimit(.minutes(5)))
    func recoveryResumesSeveralSagasAtOnce() async throws {
        // Each saga's step waits until the other's has started: sequential recovery could never finish this.
        let store = makeStore()
        let arrivals = Locked<[CheckedContinuation<Void, Never>]>([])
        var saga = SagaDefinition<Transfer>("rendezvous")
        saga.step("meet") { _ -> NoOutput in
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let partners: [CheckedContinuation<Void, Never>] = arrivals.withLock { waiting in
                    waiting.append(continuation)
                    guard waiting.count == 2 else { return [] }
                    defer { waiting.removeAll() }
                    return waiting
                }
                for partner in partners { partner.resume() }
            }
            return NoOutput()
        }
        let creator = SagaRunner(store: store)
        let ids = try [sagaID("meet-1"), sagaID("meet-2")]
        for id in ids { try await creator.create(saga, id: id, input: sampleTransfer) }
        let runner = SagaRunner(store: store, configuration: SagaRunnerConfiguration(recoveryConcurrency: 2))
        try runner.register(saga)
        let recovered = try await runner.recover()
        #expect(recovered.map(\.sagaID) == ids)
        #expect(recovered.allSatisfy { $0.result == .finished(.completed) })

        let invalid = SagaRunner(store: store, configuration: SagaRunnerConfiguration(recoveryConcurrency: 0))
        await #expect(throws: EventStoreError.self) { try await invalid.recover() }
    }
}
