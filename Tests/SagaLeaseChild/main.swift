// The child process of the saga lease tests (Tests/SagasTests/SagaReviewedEdgeTests.swift): it runs one scenario whose
// leases run in real time, in a process of its own, so that the test run's other tasks (hundreds of them, sharing
// two cooperative threads) cannot delay its lease renewals by seconds, as they did in loaded CI runs.
//
//   SagaLeaseChild renewal-failure   one failed lease renewal during a long step must not let a second runner
//                                     run the step at the same time
//   SagaLeaseChild resource-wait     waiting for a resource within resourceWait must not lose the saga's own lease
//
// It prints one line per failed check ("FAIL: ...") and exits with 1 if there was one; otherwise it prints "ok" and
// exits with 0. The parent asserts on both.

import EventStore
import EventStoreKV
import Foundation
import KeyValueTestSupport
import ProcessSupport
import Sagas

struct Transfer: Codable, Sendable {
    var from: String
    var to: String
    var amount: Int
}

let sampleTransfer = Transfer(from: "alice", to: "bob", amount: 10)

/// The checks that failed.
let failures = Locked<[String]>([])

func check(_ condition: Bool, _ message: String) {
    if !condition { failures.withLock { $0.append(message) } }
}

func sagaID() throws -> SagaID { try SagaID("t-\(UUID().uuidString.prefix(8))") }

/// An in-memory backend whose next `update` can be made to fail once with a transient error.
final class FlakyOnceKeyValueStore: ForwardingKeyValueStore, @unchecked Sendable {
    // `@unchecked Sendable`: `armed` is a Locked (pthread mutex); the streams are Sendable and set once.
    private let armed = Locked(false)
    private let injected: AsyncStream<Void>.Continuation
    let injections: AsyncStream<Void>

    init() {
        (injections, injected) = AsyncStream.makeStream(of: Void.self)
        super.init(InMemoryKeyValueStore())
    }

    /// Makes the next `update` throw `unavailable` (as a member failing over would).
    func failNextUpdate() { armed.withLock { $0 = true } }

    override func update<Value: Sendable>(
        _ body: @Sendable (any KeyValueReadContext) async throws -> (transaction: KeyValueTransaction, value: Value)
    ) async throws -> KeyValueUpdateResult<Value> {
        let fail = armed.withLock { armed -> Bool in
            defer { armed = false }
            return armed
        }
        if fail {
            injected.yield()
            throw KeyValueStoreError.unavailable("injected transient failure")
        }
        return try await inner.update(body)
    }
}

/// One failed lease renewal during a long step must not let a second runner run the step at the same time.
func renewalFailure() async throws {
    let backend = FlakyOnceKeyValueStore()
    let store = KeyValueEventStore(backend: backend)
    let inFlight = Locked(0)
    let overlaps = Locked(0)
    let invocations = Locked(0)
    let gate = AsyncStream.makeStream(of: Void.self)
    var saga = SagaDefinition<Transfer>("long-step")
    saga.step("charge", options: StepOptions(retry: .never)) { _ -> NoOutput in
        let first = invocations.withLock {
            $0 += 1
            return $0 == 1
        }
        let running = inFlight.withLock {
            $0 += 1
            return $0
        }
        if running > 1 { overlaps.withLock { $0 += 1 } }
        defer { inFlight.withLock { $0 -= 1 } }
        if first {
            // StepStarted is durable and the lease fresh. The next backend update is the keeper's first renewal (a
            // third of the session timeout from now); make it fail once, then keep working.
            backend.failNextUpdate()
            var iterator = gate.stream.makeAsyncIterator()
            _ = await iterator.next()
        }
        return NoOutput()
    }
    // Sessions of 6 s, renewed every 2 s while the step runs.
    let configuration = SagaRunnerConfiguration(sessionTimeout: .seconds(6), lockWait: .seconds(60))
    let runnerA = SagaRunner(store: store, configuration: configuration)
    let runnerB = SagaRunner(store: store, configuration: configuration)
    try runnerB.register(saga)
    let id = try sagaID()
    let definition = saga
    let (endedA, endA) = AsyncStream.makeStream(of: Void.self)
    let first = Task {
        defer { endA.yield() }
        return try await runnerA.start(definition, id: id, input: sampleTransfer)
    }

    // Wait for the one injected renewal failure; from here on runner A is alive and its step still running. Should
    // runner A end before its step ever ran, report that instead of waiting for an injection that cannot come.
    let injected = await withTaskGroup(of: Bool.self) { group in
        group.addTask {
            var injections = backend.injections.makeAsyncIterator()
            return await injections.next() != nil
        }
        group.addTask {
            // Not `first.result`: awaiting a task does not end when this child is cancelled, and runner A waits for
            // the gate this function opens only after the group returns.
            var ended = endedA.makeAsyncIterator()
            _ = await ended.next()
            return false
        }
        let winner = await group.next() ?? false
        group.cancelAll()
        return winner
    }
    guard injected else {
        check(false, "runner A ended before its step ran: \(await first.result)")
        return
    }
    // A second runner (another node recovering, or an operator's resume) waits for the saga's lock. When runner A
    // gave up renewing after that one failure, the lock ran out while A's step was in flight, and B ran the step
    // too. Give it two lease lengths and more to do so, then let A's step finish.
    let second = Task { try await runnerB.resume(id) }
    try await Task.sleep(for: .seconds(14))
    check(invocations.withLock { $0 } == 1, "a second runner ran the step while the first still held it")
    gate.continuation.yield()
    let outcomeA = try await first.value
    check(outcomeA == .completed, "runner A ended \(outcomeA), not completed")
    let outcomeB = try await second.value
    check(outcomeB == .completed, "runner B ended \(outcomeB), not completed")
    check(overlaps.withLock { $0 } == 0, "the step ran in two runners at the same time")
}

/// Waiting for a resource within resourceWait must not lose the saga's own lease.
func resourceWait() async throws {
    let store = KeyValueEventStore(backend: InMemoryKeyValueStore())
    // Another saga's step holds resource "alice" with a 20 s lease that runs out on its own (its runner died).
    _ = try await store.openSession(
        on: try StreamName.system("$saga-resource-alice"), sessionTimeout: .seconds(20), openTimeout: .zero)
    var saga = SagaDefinition<Transfer>("waits")
    saga.step("debit", options: StepOptions(retry: .never), resources: { [$0.from] }) { _ in NoOutput() }
    // The saga's lease (6 s, renewed every 2 s) is shorter than the wait allowed for resources (60 s), as with the
    // defaults (30 s and 60 s). The resource frees up after about 20 s, well within resourceWait.
    let runner = SagaRunner(
        store: store, configuration: SagaRunnerConfiguration(sessionTimeout: .seconds(6), resourceWait: .seconds(60)))
    let outcome = try await runner.start(saga, id: try sagaID(), input: sampleTransfer)
    check(outcome == .completed, "the saga ended \(outcome), not completed")
}

// A test run that dies must not leave this child running (and holding its output open).
ParentWatch.exitWhenParentExits()
let scenario = CommandLine.arguments.dropFirst().first ?? ""
do {
    switch scenario {
    case "renewal-failure": try await renewalFailure()
    case "resource-wait": try await resourceWait()
    default:
        FileHandle.standardError.write(Data("usage: SagaLeaseChild renewal-failure | resource-wait\n".utf8))
        exit(2)
    }
} catch {
    check(false, "the scenario threw: \(error)")
}
let failed = failures.withLock { $0 }
for failure in failed { print("FAIL: \(failure)") }
if failed.isEmpty { print("ok") }
exit(failed.isEmpty ? 0 : 1)
