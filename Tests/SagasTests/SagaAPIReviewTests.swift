// The Sagas public API against its documented guarantees, from the fifteenth session's review. These failed before
// their fixes:
// - recovery lost an unfinished saga whose id is canonically equivalent to a finished one's (open sagas were keyed by
//   String, which compares canonically, while ids and their streams compare bytes);
// - one stored saga id with the reserved "resource-" prefix made recover() and stuckSagas() throw for every saga;
// - a recorded input the definition cannot decode failed the next step and compensated a healthy saga for good;
// - a negative resourceWait compensated every saga that takes a resource, and a negative step timeout failed every
//   attempt at once, instead of being refused;
// - an operator's runner without the saga's definition listed no pending compensations and could not resolve it;
// - (from a review of those fixes) an input that does not read back, and a session timeout over 100 years, were
//   still written before being refused.
// The others pin down behaviour the review found sound: hooks against the log, cancellation during a backoff or a
// lock wait, resuming an unknown id.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

@Suite(
    "Sagas: recovery by bytes, stored ids, unreadable inputs, bad options, operators without definitions",
    .timeLimit(.minutes(10)))
struct SagaAPIReviewTests {
    @Test func recoveryFindsAnUnfinishedSagaWhoseIdIsCanonicallyEquivalentToAFinishedOne() async throws {
        let store = makeStore()
        let bank = Bank()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let saga = transferSaga(bank: bank)
        try runner.register(saga)
        // Two different sagas (SagaID compares bytes; their streams differ), one unfinished, one completed.
        let composed = try SagaID("caf\u{E9}-1")
        let decomposed = try SagaID("cafe\u{301}-1")
        #expect(composed != decomposed)
        try await runner.create(saga, id: composed, input: sampleTransfer)
        #expect(try await runner.start(saga, id: decomposed, input: sampleTransfer) == .completed)
        #expect(try await runner.status(of: composed) == .running)

        let recovered = try await runner.recover()
        #expect(recovered.map(\.sagaID) == [composed])
        #expect(try await runner.status(of: composed) == .completed)
    }

    @Test func aStoredSagaWhoseIdHasTheReservedPrefixDoesNotBreakRecoveryOfTheOthers() async throws {
        let store = makeStore()
        let bank = Bank()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let saga = transferSaga(bank: bank)
        try runner.register(saga)
        // An unfinished saga started normally.
        let ordinary = try sagaID()
        try await runner.create(saga, id: ordinary, input: sampleTransfer)
        // A saga stored before "resource-" was reserved (SagaID's docs: such stored ids "stay readable"):
        // its SagaStarted and the index's SagaOpened, as an older runner wrote them.
        let started = try await store.read(try StreamName.system("$saga-\(ordinary.rawValue)"), limit: 1)[0]
        _ = try await store.append([
            StreamAppend(
                stream: try StreamName.system("$saga-resource-legacy"), expectedVersion: .noStream,
                events: [EventData(type: started.type, data: started.data)]),
            StreamAppend(
                stream: try StreamName.system("$sagas-index"), expectedVersion: .any,
                events: [
                    EventData(
                        type: "SagaOpened", data: Data(#"{"saga":"resource-legacy","definition":"transfer"}"#.utf8))
                ]),
        ])
        // recover() must report the legacy saga (finished or failed), not throw and abandon every saga.
        let recovered = try await runner.recover()
        #expect(recovered.contains { $0.sagaID == ordinary && $0.result == .finished(.completed) })
        #expect(try await runner.status(of: ordinary) == .completed)
    }

    @Test func resumingAnUnknownIdLeavesNothingBehind() async throws {
        let store = makeStore()
        let runner = SagaRunner(store: store, clock: ManualSagaClock())
        let saga = transferSaga(bank: Bank())
        try runner.register(saga)
        let id = try sagaID()
        await #expect(throws: EventStoreError.self) { try await runner.resume(id) }
        #expect(try await runner.start(saga, id: id, input: sampleTransfer) == .completed)
    }

    @Test func aNegativeTimeoutIsRefused() async throws {
        var saga = SagaDefinition<Transfer>("neg")
        saga.step("a", options: StepOptions(retry: .never, timeout: .seconds(-1))) { _ in
            try await Task.sleep(for: .milliseconds(20))
            return NoOutput()
        }
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        // RetryPolicy's bad values are refused at register/start; a negative timeout is not...
        #expect(throws: EventStoreError.self) { try runner.register(saga) }
        // ...and then fails every attempt at once as "timed out".
        let outcome = try? await runner.start(saga, id: try sagaID(), input: sampleTransfer)
        #expect(outcome == nil, "\(String(describing: outcome))")
    }

    @Test func anOperatorRunnerWithoutTheDefinitionListsPendingCompensationsAndCanResolve() async throws {
        let store = makeStore()
        let bank = Bank()
        bank.fail("credit")
        bank.fail("undo-debit")
        let undo = StepOptions(retry: .never, compensationRetry: .never)
        let id = try sagaID()
        let worker = SagaRunner(store: store, clock: ManualSagaClock())
        #expect(
            try await worker.start(transferSaga(bank: bank, options: ["debit": undo]), id: id, input: sampleTransfer)
                == .stuck(step: "debit", error: "undo-debit refused"))
        // An operator's console: a runner of the same store that runs no workflows itself.
        let console = SagaRunner(store: store, clock: ManualSagaClock())
        let stuck = try await console.stuckSagas()
        #expect(stuck.map(\.sagaID) == [id])
        // Documented: "each with its failed step, the error and the compensations still pending".
        #expect(stuck.first?.pendingCompensations == ["debit", "reserve"])
        // markResolved only appends SagaResolved; it needs no step of the definition.
        try await console.markResolved(id, note: "refunded by hand")
        #expect(try await console.status(of: id) == .resolved)
    }

    @Test func hooksMatchTheLogExactlyOnceAcrossRetriesCompensationAndStuck() async throws {
        let log = Locked<[String]>([])
        let hooks = SagaHooks(
            stepStarted: { e in log.withLock { $0.append("start \(e.phase.rawValue) \(e.step) \(e.attempt)") } },
            stepFinished: { e in log.withLock { $0.append("finish \(e.phase.rawValue) \(e.step) \(e.attempt)") } },
            stepFailed: { e in
                log.withLock { $0.append("fail \(e.phase.rawValue) \(e.step) \(e.attempt) \(e.willRetry)") }
            })
        let bank = Bank()
        bank.fail("debit", times: 1)
        bank.fail("credit")
        bank.fail("undo-debit", times: 2)
        let clock = ManualSagaClock()
        let runner = SagaRunner(
            store: makeStore(), clock: clock, configuration: SagaRunnerConfiguration(random: { 0 }), hooks: hooks)
        let retry = RetryPolicy(maximumAttempts: 2, initialBackoff: .seconds(1), jitter: 0)
        let options = ["debit": StepOptions(retry: retry, compensationRetry: retry)]
        let id = try sagaID()
        let run = Task { try await runner.start(transferSaga(bank: bank, options: options), id: id, input: sampleTransfer) }
        for _ in 0..<2 {
            await clock.waitForSleepers(1)
            clock.advance(by: .seconds(1))
        }
        #expect(try await run.value == .stuck(step: "debit", error: "undo-debit refused"))
        bank.fail("undo-debit", times: 0)
        #expect(try await runner.retry(id) == .compensated(failedStep: "credit", error: "credit refused"))
        var expected: [String] = []
        for entry in try await runner.history(of: id) {
            let step = entry.step ?? ""
            let attempt = entry.attempt ?? 0
            switch entry.kind {
            case .stepStarted: expected.append("start action \(step) \(attempt)")
            case .compensationStarted: expected.append("start compensation \(step) \(attempt)")
            case .stepCompleted: expected.append("finish action \(step) \(attempt)")
            case .stepCompensated: expected.append("finish compensation \(step) \(attempt)")
            case .stepFailed: expected.append("fail action \(step) \(attempt) \(entry.willRetry ?? false)")
            case .compensationFailed: expected.append("fail compensation \(step) \(attempt) \(entry.willRetry ?? false)")
            default: break
            }
        }
        #expect(log.withLock { $0 } == expected)
    }

    @Test func cancellingDuringABackoffThenResumingRunsTheNextAttemptOnce() async throws {
        let store = makeStore()
        let bank = Bank()
        bank.fail("debit", times: 1)
        let clock = ManualSagaClock()
        let retry = RetryPolicy(maximumAttempts: 3, initialBackoff: .seconds(5), jitter: 0)
        let saga = transferSaga(bank: bank, options: ["debit": StepOptions(retry: retry)])
        let runner = SagaRunner(store: store, clock: clock)
        let id = try sagaID("cb")
        let run = Task { try await runner.start(saga, id: id, input: sampleTransfer) }
        await clock.waitForSleepers(1)
        run.cancel()
        await #expect(throws: CancellationError.self) { try await run.value }
        #expect(try await runner.status(of: id) == .running)
        #expect(try await runner.resume(id) == .completed)
        #expect(bank.calls.map(\.key) == ["cb/reserve/1", "cb/debit/1", "cb/debit/2", "cb/credit/1"])
    }

    // The lock wait (10 minutes) is far longer than the bound on `took` (1 minute), which is far longer than a
    // cancellation takes even in a loaded run under TSan: a resume that ignored its cancellation would hit the time
    // limit instead.
    @Test(.timeLimit(.minutes(5)))
    func cancellingAResumeThatWaitsForTheSagasLockEndsItPromptly() async throws {
        let store = makeStore()
        let blocked = try await BlockedTransfer.start(on: store)
        let other = SagaRunner(
            store: store, clock: ManualSagaClock(), configuration: SagaRunnerConfiguration(lockWait: .seconds(600)))
        try other.register(transferSaga(bank: Bank()))
        let waiting = Task { try await other.resume(blocked.id) }
        try await Task.sleep(for: .milliseconds(200))
        let cancelledAt = ContinuousClock.now
        waiting.cancel()
        _ = await waiting.result
        let took = ContinuousClock.now - cancelledAt
        await blocked.stop()
        #expect(took < .seconds(60), "resume went on waiting for the lock \(took) after it was cancelled")
    }

    @Test func aNegativeResourceWaitIsRefusedRatherThanCompensatingEverySaga() async throws {
        let store = makeStore()
        let bank = Bank()
        var saga = SagaDefinition<Transfer>("locked-transfer")
        saga.step("debit", options: StepOptions(retry: .never), resources: { [$0.from] }) { step in
            try bank.call("debit", key: step.idempotencyKey)
            return NoOutput()
        } compensation: { step, _ in
            try bank.call("undo-debit", key: step.idempotencyKey)
        }
        let runner = SagaRunner(
            store: store, clock: ManualSagaClock(),
            configuration: SagaRunnerConfiguration(resourceWait: .seconds(-1)))
        let id = try sagaID()
        // A misconfigured runner must fail with a clear error and leave the saga as it was; it must not record
        // the transfer's step as failed and compensate the saga for good.
        let outcome = try? await runner.start(saga, id: id, input: sampleTransfer)
        #expect(outcome == nil, "\(String(describing: outcome))")
        let status = try? await runner.status(of: id)
        #expect(status == nil || status == .running)
    }

    /// The transfer's input as a later deployment (wrongly) declares it.
    struct RenamedTransfer: Codable, Sendable {
        var source: String
        var target: String
        var amount: Int
    }

    @Test func aRecordedInputTheDefinitionCannotDecodeStopsTheRunInsteadOfFailingTheSaga() async throws {
        let store = makeStore()
        let bank = Bank()
        let id = try sagaID("v2")
        // Interrupted in "debit" after "reserve" completed.
        let (signals, signal) = AsyncStream.makeStream(of: String.self)
        let first = SagaRunner(store: store, clock: ManualSagaClock())
        let run = Task {
            try await first.start(
                transferSaga(bank: bank, blockIn: "debit", signal: signal), id: id, input: sampleTransfer)
        }
        _ = await next(signals)
        run.cancel()
        _ = try? await run.value

        // A redeploy keeps the name and step names but its Input type no longer reads the recorded input.
        var wrong = SagaDefinition<RenamedTransfer>("transfer")
        for name in ["reserve", "debit", "credit"] {
            wrong.step(name, options: StepOptions(retry: .never, compensationRetry: .never)) { _ in NoOutput() }
                compensation: { _, _ in }
        }
        let second = SagaRunner(store: store, clock: ManualSagaClock())
        try second.register(wrong)
        // Like a definition whose step names changed, this is refused with a typed error, leaving the saga running
        // so the right definition can finish it.
        await #expect {
            try await second.resume(id)
        } throws: { error in
            guard case EventStoreError.invalidArgument(let message) = error else { return false }
            return message.contains("cannot read")
        }
        #expect(try await second.status(of: id) == .running)
        let third = SagaRunner(store: store, clock: ManualSagaClock())
        try third.register(transferSaga(bank: bank))
        #expect(try await third.resume(id) == .completed)
    }

    @Test("an input that does not read back as its own Input type is refused before anything is written")
    func unreadableInputIsRefusedBeforeWriting() async throws {
        let runner = SagaRunner(store: makeStore(), clock: ManualSagaClock())
        var saga = SagaDefinition<LopsidedInput>("lopsided")
        saga.step("only", options: StepOptions(retry: .never, compensationRetry: .never)) { _ in NoOutput() }
            compensation: { _, _ in }
        let id = try sagaID()
        await #expect(throws: EventStoreError.self) { _ = try await runner.start(saga, id: id, input: LopsidedInput(amount: 1)) }
        await #expect(throws: EventStoreError.self) { _ = try await runner.status(of: id) }
        #expect(try await runner.recover().isEmpty)
    }

    @Test("a session timeout no lease can have is refused before anything is written")
    func oversizedSessionTimeoutIsRefusedBeforeWriting() async throws {
        let runner = SagaRunner(
            store: makeStore(), clock: ManualSagaClock(),
            configuration: SagaRunnerConfiguration(sessionTimeout: .seconds(Int64.max)))
        var saga = SagaDefinition<Transfer>("plain")
        saga.step("only", options: StepOptions(retry: .never, compensationRetry: .never)) { _ in NoOutput() }
            compensation: { _, _ in }
        let id = try sagaID()
        await #expect(throws: EventStoreError.self) { _ = try await runner.start(saga, id: id, input: sampleTransfer) }
        await #expect(throws: EventStoreError.self) { _ = try await runner.status(of: id) }
    }
}

/// Writes "amount", reads "value": an input its own definition cannot read back.
private struct LopsidedInput: Codable, Sendable {
    var amount: Int
    init(amount: Int) { self.amount = amount }
    private enum Keys: String, CodingKey { case amount, value }
    init(from decoder: any Decoder) throws {
        amount = try decoder.container(keyedBy: Keys.self).decode(Int.self, forKey: .value)
    }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: Keys.self)
        try container.encode(amount, forKey: .amount)
    }
}
