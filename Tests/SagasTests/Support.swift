// Shared test fixtures: a transfer saga over a fake bank that records every effect, and small async helpers.
//
// Invariants:
// - `Bank` records every call (with its idempotency key) in order, under its mutex, so tests assert on exactly
//   what ran; failures are scripted per step name, never random.
// - No helper sleeps on a timer: tests wait for events (an AsyncStream signal, a clock sleeper).

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Testing

struct Transfer: Codable, Sendable, Hashable {
    var from: String
    var to: String
    var amount: Int
}

struct Receipt: Codable, Sendable, Hashable {
    var reference: String
}

struct TestFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// A fake downstream system: records calls and fails on demand.
final class Bank: Sendable {
    struct Call: Sendable, Hashable {
        var name: String
        var key: String
    }
    private struct State {
        var calls: [Call] = []
        var failuresLeft: [String: Int] = [:]
        var inFlight = 0
        var maximumInFlight = 0
    }
    private let state = Locked(State())

    var calls: [Call] { state.withLock { $0.calls } }
    var names: [String] { calls.map(\.name) }
    var maximumInFlight: Int { state.withLock { $0.maximumInFlight } }

    /// Makes the next `count` calls named `name` throw.
    func fail(_ name: String, times count: Int = .max) {
        state.withLock { $0.failuresLeft[name] = count }
    }

    /// Records a call, throwing if a failure is scripted for it.
    func call(_ name: String, key: String) throws {
        try state.withLock { state in
            state.calls.append(Call(name: name, key: key))
            if let left = state.failuresLeft[name], left > 0 {
                state.failuresLeft[name] = left - 1
                throw TestFailure(message: "\(name) refused")
            }
        }
    }

    func enter() {
        state.withLock {
            $0.inFlight += 1
            $0.maximumInFlight = max($0.maximumInFlight, $0.inFlight)
        }
    }
    func leave() { state.withLock { $0.inFlight -= 1 } }
}

/// A three-step transfer: reserve, debit, credit, each compensated.
func transferSaga(
    bank: Bank, options: [String: StepOptions] = [:], blockIn: String? = nil,
    signal: AsyncStream<String>.Continuation? = nil
) -> SagaDefinition<Transfer> {
    var saga = SagaDefinition<Transfer>("transfer")
    for name in ["reserve", "debit", "credit"] {
        saga.step(name, options: options[name] ?? StepOptions(retry: .never)) { step in
            try bank.call(name, key: step.idempotencyKey)
            if name == blockIn {
                signal?.yield(step.idempotencyKey)
                try await Task.sleep(for: .seconds(3_600))  // until cancelled: a runner that stops mid-step
            }
            return Receipt(reference: "\(name)-\(step.input.amount)")
        } compensation: { step, receipt in
            try bank.call("undo-\(name)", key: step.idempotencyKey)
            if "undo-\(name)" == blockIn {
                signal?.yield(step.idempotencyKey)
                try await Task.sleep(for: .seconds(3_600))
            }
            _ = receipt
        }
    }
    return saga
}

/// An in-memory store whose clock stands still, so a runner's lease (a real 30 s TTL) ends only when released. The
/// tests drive time through ManualSagaClock; on the real clock, a loaded run (ThreadSanitizer with every test at
/// once) starved the runners' renewals past their leases, and a runner that lost its saga left its test waiting.
func makeStore() -> KeyValueEventStore {
    let now = Date()
    return KeyValueEventStore(backend: InMemoryKeyValueStore(clock: { now }), clock: { now })
}

func sagaID(_ text: String = "t-\(UUID().uuidString.prefix(8))") throws -> SagaID {
    try SagaID(text)
}

let sampleTransfer = Transfer(from: "alice", to: "bob", amount: 10)

/// The kinds of a saga's history, in order.
func kinds(_ runner: SagaRunner, _ id: SagaID) async throws -> [SagaEventKind] {
    try await runner.history(of: id).map(\.kind)
}

/// Waits for the next value of `stream`.
func next(_ stream: AsyncStream<String>) async -> String? {
    var iterator = stream.makeAsyncIterator()
    return await iterator.next()
}

/// A transfer saga started on its own runner and blocked inside its "debit" step, so that runner holds the saga's
/// lock until `run` is cancelled.
struct BlockedTransfer {
    let id: SagaID
    let bank: Bank
    let run: Task<SagaOutcome, any Error>

    static func start(on store: KeyValueEventStore) async throws -> BlockedTransfer {
        let bank = Bank()
        let (signals, signal) = AsyncStream.makeStream(of: String.self)
        let id = try sagaID()
        let owner = SagaRunner(store: store, clock: ManualSagaClock())
        let run = Task {
            try await owner.start(
                transferSaga(bank: bank, blockIn: "debit", signal: signal), id: id, input: sampleTransfer)
        }
        _ = await next(signals)
        return BlockedTransfer(id: id, bank: bank, run: run)
    }

    /// Cancels the blocked run and waits for it to end.
    func stop() async {
        run.cancel()
        _ = try? await run.value
    }
}

/// Appends a raw record of `kind` with `fields` to saga `id`'s log, as damage or a foreign writer would.
func appendRecord(_ store: KeyValueEventStore, _ id: SagaID, _ kind: String, _ fields: [String: Any])
    async throws
{
    let stream = try StreamName.system("$saga-\(id.rawValue)")
    let last = try await store.readBackward(stream, limit: 1)[0]
    let previous = try #require(try JSONSerialization.jsonObject(with: last.data) as? [String: Any])
    var object = fields
    object["kind"] = kind
    object["at"] = previous["at"]
    let data = try JSONSerialization.data(withJSONObject: object)
    _ = try await store.append([EventData(type: kind, data: data)], to: stream, expectedVersion: .any)
}
