// The child process of the saga crash test (Tests/SagasTests/SagaCrashTests.swift).
//
//   SagaCrashChild run <store-dir> <ledger> <seed> <sagas>   recover, then start <sagas> new sagas concurrently
//   SagaCrashChild finish <store-dir> <ledger>               recover until no saga is left to another runner,
//                                                            then print "saga <id> <status>" for every saga
//
// The parent SIGKILLs `run` children at random moments: before or after a step's effect, mid-compensation, mid-
// recovery. Effects go to the ledger file. Which sagas fail, and where, follows from the saga id, so the parent
// can check the ledger against each saga's final status.
//
// Invariants:
// - The saga definition here is the one the parent's checks assume: reserve (atLeastOnce), charge (atMostOnce,
//   compensated even when interrupted), ship (atLeastOnce, fails for ids whose number is divisible by 3, before
//   any effect); the compensation of reserve always fails for ids divisible by 7 (those sagas end Stuck).
// - Leases are short (1 s) so that a killed child's locks expire before the final recovery takes the sagas over.

import EventStore
import EventStoreKV
import Foundation
import ProcessSupport
import Sagas

struct Order: Codable, Sendable {
    var number: Int
    var account: String
}

func crashSaga(ledger: Ledger) -> SagaDefinition<Order> {
    var saga = SagaDefinition<Order>("crash-order")
    let quick = RetryPolicy(maximumAttempts: 3, initialBackoff: .milliseconds(1), jitter: 0.5)
    let undoRetry = RetryPolicy(maximumAttempts: 2, initialBackoff: .milliseconds(1), jitter: 0)
    @Sendable func effect(_ kind: String, _ step: StepContext<Order>) async throws {
        try await Task.sleep(for: .microseconds(Int.random(in: 0...1_500)))
        try ledger.record(kind, saga: step.sagaID.rawValue, step: step.stepName, key: step.idempotencyKey)
        try await Task.sleep(for: .microseconds(Int.random(in: 0...1_500)))
    }
    saga.step(
        "reserve", options: StepOptions(retry: quick, compensationRetry: undoRetry), resources: { [$0.account] }
    ) { step -> NoOutput in
        try await effect("do", step)
        return NoOutput()
    } compensation: { step, _ in
        if step.input.number % 7 == 0 { throw ChildFailure(message: "warehouse unreachable") }
        try await effect("undo", step)
    }
    // charge and ship run as a parallel group, so kills also land while both are in flight, or while one is still
    // running after the other failed for good.
    saga.inParallel { group in
        group.step(
            "charge",
            options: StepOptions(
                semantics: .atMostOnce, retry: .never, compensationRetry: undoRetry, compensatesFailedAction: true)
        ) { step -> NoOutput in
            try await effect("do", step)
            return NoOutput()
        } compensation: { step, _ in
            try await effect("undo", step)
        }
        group.step("ship", options: StepOptions(retry: quick)) { step -> NoOutput in
            if step.input.number % 3 == 0 { throw ChildFailure(message: "no courier") }
            try await effect("do", step)
            return NoOutput()
        } compensation: { step, _ in
            try await effect("undo", step)
        }
    }
    return saga
}

struct ChildFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

func makeRunner(store: KeyValueEventStore, ledger: Ledger, recoveryLockWait: Duration) throws -> SagaRunner {
    let runner = SagaRunner(
        store: store,
        configuration: SagaRunnerConfiguration(
            sessionTimeout: .seconds(5), lockWait: .seconds(5), recoveryLockWait: recoveryLockWait,
            resourceWait: .seconds(10)))
    try runner.register(crashSaga(ledger: ledger))
    return runner
}

func run(directory: String, ledger: Ledger, seed: Int, count: Int) async throws {
    let store = try DurableStore.open(directory: directory)
    let runner = try makeRunner(store: store, ledger: ledger, recoveryLockWait: .zero)
    let saga = crashSaga(ledger: ledger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { _ = try await runner.recover() }
        for index in 0..<count {
            let number = seed * 100 + index
            let order = Order(number: number, account: "account-\(number % 3)")
            group.addTask { _ = try await runner.start(saga, id: try SagaID("order-\(number)"), input: order) }
        }
        try await group.waitForAll()
    }
    try await store.close()
}

func finish(directory: String, ledger: Ledger) async throws {
    let store = try DurableStore.open(directory: directory)
    let runner = try makeRunner(store: store, ledger: ledger, recoveryLockWait: .seconds(7))
    for _ in 0..<5 {
        let report = try await runner.recover()
        if !report.contains(where: { $0.result == .heldByAnotherRunner }) { break }
    }
    let index = try await store.read(try StreamName.system("$sagas-index"))
    var ids = Set<String>()
    for event in index where event.type == "SagaOpened" {
        if let object = try JSONSerialization.jsonObject(with: event.data) as? [String: Any],
            let saga = object["saga"] as? String
        {
            ids.insert(saga)
        }
    }
    for id in ids.sorted() {
        print("saga \(id) \(try await runner.status(of: try SagaID(id)).rawValue)")
    }
    try await store.close()
}

// A test run that dies must not leave this child running (and holding its output open).
ParentWatch.exitWhenParentExits()
let arguments = CommandLine.arguments
do {
    switch (arguments.count > 1 ? arguments[1] : "", arguments.count) {
    case ("run", 6):
        guard let seed = Int(arguments[4]), let count = Int(arguments[5]) else {
            throw CrashChildError.usage("seed and count must be integers")
        }
        try await run(directory: arguments[2], ledger: Ledger(path: arguments[3]), seed: seed, count: count)
    case ("finish", 4):
        try await finish(directory: arguments[2], ledger: Ledger(path: arguments[3]))
    default:
        throw CrashChildError.usage("usage: SagaCrashChild run <dir> <ledger> <seed> <sagas> | finish <dir> <ledger>")
    }
} catch {
    FileHandle.standardError.write(Data("SagaCrashChild: \(error)\n".utf8))
    exit(1)
}
