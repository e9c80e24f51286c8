// Ledger: the account service. Accounts are event-sourced aggregates loaded through snapshots; a transfer is a
// saga (debit the source, then credit the destination; if the credit fails, refund the source). Each step's effect
// is appended atomically with the saga's record of it, so a crash can neither lose nor repeat a debit or a credit.

import EventStore
import EventStoreKV
import Foundation
import Sagas
import Snapshots
import Synchronization

/// A transfer's input, recorded in its saga's log.
struct TransferRequest: Codable, Sendable {
    var transfer: UUID
    var from: String
    var to: String
    var amount: Cents
    /// Demo only: the credit step fails, forcing the debit to be compensated.
    var failCredit: Bool
}

/// The credit failure the demo injects to exercise compensation.
struct SimulatedCreditFailure: Error, CustomStringConvertible {
    var description: String { "simulated credit failure" }
}

/// How a transfer ended.
enum TransferOutcome: Equatable {
    case completed
    /// The debit step failed (the balance fell below the amount after the pre-check, or conflicts with concurrent
    /// transfers outlasted its retries): nothing was debited, so nothing was refunded.
    case notDebited(String)
    /// The credit failed and the debit was refunded.
    case compensated(String)
    case stuck(String)
}

final class Ledger: Sendable {
    let store: KeyValueEventStore
    let engine: PageFileKeyValueStore
    let registry: EventTypeRegistry
    let accounts: SnapshottingRepository<Account>
    let sagas: SagaRunner
    let transferSaga: SagaDefinition<TransferRequest>
    /// Snapshots written by transfers (saga effects bypass the repository's save policy).
    let snapshotsTaken = Atomic<Int>(0)
    /// The transfer saga's first step, which debits the source account.
    static let debitStep = "debit"
    /// Snapshot an account every this many events.
    static let snapshotInterval: UInt64 = 100

    /// Opens (creating if needed) the ledger in `directory`, on the embedded page-file engine, and finishes any
    /// transfer a crash interrupted.
    static func open(directory: String) async throws -> Ledger {
        let engine = try await PageFileKeyValueStore.open(directory: directory)
        let ledger = try Ledger(store: KeyValueEventStore(backend: engine), engine: engine)
        _ = try await ledger.sagas.recover()
        return ledger
    }

    /// Opens the ledger that must already exist in `directory` (every command but `open` and `demo`), so that a
    /// mistyped `--data` is reported instead of answered from a new, empty ledger left behind.
    static func open(existing directory: String) async throws -> Ledger {
        guard FileManager.default.fileExists(atPath: directory + "/data") else {
            throw LedgerError.noLedger(directory: directory)
        }
        return try await open(directory: directory)
    }

    init(store: KeyValueEventStore, engine: PageFileKeyValueStore) throws {
        self.registry = try ledgerRegistry()
        self.store = store
        self.engine = engine
        let accounts = try SnapshottingRepository<Account>(
            events: store, registry: registry, policy: .every(Self.snapshotInterval, keepingLast: 3))
        self.accounts = accounts
        let registry = self.registry
        // The page file admits one process per directory, so any saga lease found at open belongs to a process that
        // died: recovery waits for such leases to run out (10 s) and finishes those sagas too.
        self.sagas = SagaRunner(
            store: store,
            configuration: SagaRunnerConfiguration(sessionTimeout: .seconds(10), recoveryLockWait: .seconds(12)))
        self.transferSaga = Self.defineTransfer(accounts: accounts, registry: registry)
        try sagas.register(transferSaga)
    }

    func close() async throws { try await store.close() }

    private static func defineTransfer(accounts: SnapshottingRepository<Account>, registry: EventTypeRegistry)
        -> SagaDefinition<TransferRequest>
    {
        // Conflicts with concurrent transfers on the same account are retried quickly. They are the only transient
        // failure: a refusal (insufficient funds) would only be repeated, so it throws PermanentStepFailure.
        let quickRetry = RetryPolicy(
            maximumAttempts: 10, initialBackoff: .milliseconds(1), multiplier: 2, maximumBackoff: .milliseconds(50),
            jitter: 0.5)
        var saga = SagaDefinition<TransferRequest>("transfer")
        saga.appendingStep(
            debitStep, options: StepOptions(retry: quickRetry, compensationRetry: quickRetry),
            action: { step in
                let request = step.input
                let stream = try accountStream(request.from)
                let loaded = try await accounts.load(stream)
                do {
                    try loaded.state.requireFunds(request.amount, account: request.from)
                } catch let refusal as LedgerError {
                    throw PermanentStepFailure(refusal)
                }
                let debit = try registry.encode(
                    TransferDebited(transfer: request.transfer, to: request.to, amount: request.amount))
                return StepEffect(
                    output: loaded.version + 1,
                    appends: [StreamAppend(stream: stream, expectedVersion: .exact(loaded.version), events: [debit])])
            },
            compensation: { step, _ in
                let request = step.input
                let refund = try registry.encode(
                    TransferRefunded(transfer: request.transfer, to: request.to, amount: request.amount))
                return [StreamAppend(stream: try accountStream(request.from), expectedVersion: .any, events: [refund])]
            })
        saga.appendingStep(
            "credit", options: StepOptions(retry: quickRetry),
            action: { step in
                let request = step.input
                if request.failCredit { throw SimulatedCreditFailure() }
                // The credit is decided on the target's current state (and appended at its version), so it can never
                // take the balance past what an Int64 holds: then the step fails and the debit is refunded.
                let stream = try accountStream(request.to)
                let target = try await accounts.load(stream)
                try target.state.requireRoom(for: request.amount, account: request.to)
                let credit = try registry.encode(
                    TransferCredited(transfer: request.transfer, from: request.from, amount: request.amount))
                return StepEffect(
                    output: true,
                    appends: [StreamAppend(stream: stream, expectedVersion: .exact(target.version), events: [credit])])
            },
            compensation: { _, _ in [] })
        return saga
    }

    // MARK: Commands

    func open(_ name: String, initial: Cents?) async throws {
        let stream = try accountStream(try validateAccountName(name))
        _ = try await accounts.execute(on: stream) { state in
            guard !state.isOpen else { throw LedgerError.accountExists(name) }
            var events: [any DomainEvent] = [AccountOpened(name: name)]
            if let initial { events.append(Deposited(amount: initial)) }
            return events
        }
    }

    @discardableResult
    func deposit(_ name: String, _ amount: Cents) async throws -> Account {
        let stream = try accountStream(try validateAccountName(name))
        return try await accounts.execute(on: stream) { state in
            try state.requireRoom(for: amount, account: name, deposit: true)
            return [Deposited(amount: amount)]
        }.aggregate.state
    }

    @discardableResult
    func withdraw(_ name: String, _ amount: Cents) async throws -> Account {
        let stream = try accountStream(try validateAccountName(name))
        return try await accounts.execute(on: stream) { state in
            try state.requireFunds(amount, account: name)
            return [Withdrawn(amount: amount)]
        }.aggregate.state
    }

    /// Moves `amount` from one account to another as a saga. Fails fast, without starting a saga, on unknown
    /// accounts or a balance that is already too low.
    func transfer(from: String, to: String, amount: Cents, failCredit: Bool = false) async throws -> TransferOutcome {
        _ = try validateAccountName(from)
        _ = try validateAccountName(to)
        guard from != to else { throw LedgerError.sameAccount(from) }
        let source = try await account(from)
        guard try await account(to).isOpen else { throw LedgerError.unknownAccount(to) }
        try source.requireFunds(amount, account: from)
        let request = TransferRequest(transfer: UUID(), from: from, to: to, amount: amount, failCredit: failCredit)
        let outcome = try await sagas.start(
            transferSaga, id: try SagaID("transfer-\(request.transfer.uuidString.lowercased())"), input: request)
        try await snapshotIfDue(from)
        try await snapshotIfDue(to)
        switch outcome {
        case .completed, .resolved: return .completed
        // A failed debit step debited nothing: only a failed credit step's saga refunded a debit.
        case .compensated(Self.debitStep, let error): return .notDebited(error)
        case .compensated(_, let error): return .compensated(error)
        case .stuck(_, let error): return .stuck(error)
        }
    }

    /// Saga effects bypass the repository's save policy, so transfers check the snapshot interval themselves.
    @discardableResult
    func snapshotIfDue(_ name: String) async throws -> Bool {
        let stream = try accountStream(name)
        let version = try await store.version(of: stream)
        let last = try await accounts.lastSnapshotVersion(of: stream) ?? 0
        guard version >= last + Self.snapshotInterval else { return false }
        _ = try await accounts.takeSnapshot(of: stream, at: version)
        snapshotsTaken.add(1, ordering: .relaxed)
        return true
    }

    // MARK: Queries

    /// The account's state; throws if its stored events cannot be folded into a balance.
    func account(_ name: String) async throws -> Account {
        let state = try await accounts.load(try accountStream(try validateAccountName(name))).state
        try state.requireFoldable(account: name)
        return state
    }

    func existingAccount(_ name: String) async throws -> Account {
        let account = try await account(name)
        guard account.isOpen else { throw LedgerError.unknownAccount(name) }
        return account
    }

    func history(_ name: String) async throws -> [RecordedEvent] {
        _ = try await existingAccount(name)
        return try await store.read(try accountStream(name))
    }

    /// Every account name, in order.
    func accountNames() async throws -> [String] {
        var names: [String] = []
        var after: StreamName?
        while true {
            let page = try await store.listStreams(prefix: "account-", after: after, limit: 1_000)
            names.append(contentsOf: page.map { String($0.stream.rawValue.dropFirst("account-".count)) })
            guard page.count == 1_000, let last = page.last else { break }
            after = last.stream
        }
        return names
    }
}
