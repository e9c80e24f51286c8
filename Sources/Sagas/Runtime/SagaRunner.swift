// The saga runner: starts sagas, resumes them, and recovers the unfinished ones after a crash.
//
// Invariants:
// - A saga is advanced only while this runner holds a session lock on its stream, and every record is appended
//   with the expected version it was decided on: two runners never advance, or run a step of, the same saga.
// - SagaStarted and the index's SagaOpened commit in one transaction; every terminal record (SagaCompleted,
//   SagaCompensated, SagaResolved) commits with the index's SagaClosed. So the index's open sagas are exactly the
//   unfinished ones (see SagaRecovery.swift for how recovery reads it).
// - Starting a saga whose id already exists resumes it with its recorded input; it never runs twice.
// - A resumed saga must match its registered definition's step names; otherwise it is refused, not guessed at.

import EventStore
import Foundation

/// Runs sagas durably on an event store: each saga is a stream of its progress, resumable after a crash.
public final class SagaRunner: Sendable {
    /// The store holding the saga logs.
    public let store: any EventStoring
    /// The clock for backoff, timeouts and log timestamps.
    public let clock: any SagaClock
    /// Lease lengths and lock waits.
    public let configuration: SagaRunnerConfiguration
    /// Callbacks for step events.
    public let hooks: SagaHooks
    private let definitions = Locked<[String: ErasedSaga]>([:])

    /// Creates a runner.
    public init(
        store: any EventStoring, clock: any SagaClock = SystemSagaClock(),
        configuration: SagaRunnerConfiguration = SagaRunnerConfiguration(), hooks: SagaHooks = SagaHooks()
    ) {
        self.store = store
        self.clock = clock
        self.configuration = configuration
        self.hooks = hooks
    }

    /// Registers a definition so that sagas started from it can be resumed and recovered. Registering a definition
    /// again under the same name replaces it.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` if the definition is broken.
    public func register<Input>(_ definition: SagaDefinition<Input>) throws {
        let erased = try definition.erased()
        definitions.withLock { $0[erased.name] = erased }
    }

    /// Starts the saga `id` from `definition` with `input` and runs it to its outcome. If a saga with this id
    /// already exists, it is resumed instead, with the input it was started with.
    public func start<Input>(_ definition: SagaDefinition<Input>, id: SagaID, input: Input) async throws
        -> SagaOutcome
    {
        try register(definition)
        try await create(definition, id: id, input: input)
        return try await resume(id)
    }

    /// Records the saga `id` as started, without running it; ``resume(_:)`` or ``recover()`` runs it.
    /// Does nothing if the saga already exists.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` if a saga with this id exists under another definition.
    public func create<Input>(_ definition: SagaDefinition<Input>, id: SagaID, input: Input) async throws {
        try configuration.validate()
        let erased = try definition.erased()
        let stream = try id.stream
        var started = SagaRecord(.sagaStarted, at: clock.now())
        started.definition = erased.name
        let encoded = try definition.encodeInput(input)
        // An input whose Codable does not read back what it wrote could never be resumed: refuse it before writing.
        if let problem = erased.readsInput(encoded) {
            throw EventStoreError.invalidArgument(
                "the input of saga \(id) does not read back as \(Input.self) (\(problem)), so it could never be resumed")
        }
        started.input = encoded
        started.steps = erased.steps.map(\.name)
        let opened = try SagaIndexRecord(saga: id.rawValue, definition: erased.name).eventData(
            type: SagaIndexRecord.opened)
        do {
            _ = try await store.append([
                StreamAppend(stream: stream, expectedVersion: .noStream, events: [try started.eventData()]),
                StreamAppend(stream: try SagaStreams.index(), expectedVersion: .any, events: [opened]),
            ])
        } catch EventStoreError.wrongExpectedVersion(let conflicted, _, _) where conflicted == stream {
            // It exists already: it must be a saga of this definition.
            try await checkDefinition(of: id, stream: stream, is: erased.name)
        } catch EventStoreError.streamLocked(let locked, _, _) where locked == stream {
            // Another runner holds it, so it exists and is running; reads are not locked, and it must still be a
            // saga of this definition.
            try await checkDefinition(of: id, stream: stream, is: erased.name)
        }
    }

    /// Throws `invalidArgument` if the existing saga `id` was started under another definition than `name`.
    private func checkDefinition(of id: SagaID, stream: StreamName, is name: String) async throws {
        guard let first = try await store.read(stream, limit: 1).first else { return }
        let existing = try SagaRecord.decode(first).definition ?? ""
        guard existing == name else {
            throw EventStoreError.invalidArgument("saga \(id) already exists as a \"\(existing)\" saga, not \"\(name)\"")
        }
    }

    /// Resumes the saga `id` and runs it to its outcome, waiting up to ``SagaRunnerConfiguration/lockWait`` for
    /// another runner's lock on it. A finished saga just reports its outcome.
    /// - Throws: ``EventStoreError/streamNotFound(_:)`` for an unknown saga,
    ///   ``EventStoreError/streamLocked(stream:holder:leaseExpiresAt:)`` when another runner keeps it,
    ///   ``EventStoreError/invalidArgument(_:)`` when its definition is not registered or no longer matches.
    public func resume(_ id: SagaID) async throws -> SagaOutcome {
        try await resume(id, lockWait: configuration.lockWait)
    }

    func resume(_ id: SagaID, lockWait: Duration) async throws -> SagaOutcome {
        try await withExecution(id, lockWait: lockWait) { execution in try await execution.run() }
    }

    /// The saga's status, from its log.
    public func status(of id: SagaID) async throws -> SagaStatus {
        try await load(id).status
    }

    /// The saga's history: every event of its log, in order, with timestamps.
    public func history(of id: SagaID) async throws -> [SagaHistoryEntry] {
        let stream = try id.stream
        let events = try await store.read(stream)
        guard !events.isEmpty else { throw EventStoreError.streamNotFound(stream) }
        var stepNames: [String] = []
        return try events.map { event in
            let record = try SagaRecord.decode(event)
            if let steps = record.steps { stepNames = steps }
            return SagaHistoryEntry(record, event: event, stepNames: stepNames)
        }
    }

    // MARK: Internals

    func load(_ id: SagaID) async throws -> SagaState {
        let stream = try id.stream
        let events = try await store.read(stream)
        guard !events.isEmpty else { throw EventStoreError.streamNotFound(stream) }
        return try SagaState.replay(events, id: id)
    }

    /// Locks the saga, loads it, and hands `body` an execution ready to run; always releases the lock.
    func withExecution<Value: Sendable>(
        _ id: SagaID, lockWait: Duration, _ body: (inout SagaExecution) async throws -> Value
    ) async throws -> Value {
        try await withLockedLog(id, lockWait: lockWait) { state, session in
            var execution = SagaExecution(
                saga: try definition(for: state), session: session, store: store, clock: clock, hooks: hooks,
                configuration: configuration, state: state)
            return try await body(&execution)
        }
    }

    /// Locks the saga and hands `body` its state and the session holding it, without needing its definition;
    /// always releases the lock.
    func withLockedLog<Value: Sendable>(
        _ id: SagaID, lockWait: Duration, _ body: (SagaState, any StreamSession) async throws -> Value
    ) async throws -> Value {
        try configuration.validate()
        let stream = try id.stream
        let session = try await store.openSession(
            on: stream, sessionTimeout: configuration.sessionTimeout, openTimeout: lockWait)
        do {
            let state = try SagaState.replay(try await store.read(stream), id: id)
            guard state.version > 0 else { throw EventStoreError.streamNotFound(stream) }
            let value = try await body(state, session)
            await StepAttempt.release([session])
            return value
        } catch {
            await StepAttempt.release([session])
            throw error
        }
    }

    func definition(for state: SagaState) throws -> ErasedSaga {
        guard let saga = definitions.withLock({ $0[state.definition] }) else {
            throw EventStoreError.invalidArgument(
                "saga \(state.id) uses definition \"\(state.definition)\", which is not registered with this runner")
        }
        guard saga.steps.map(\.name) == state.stepNames else {
            throw EventStoreError.invalidArgument(
                "saga \(state.id) was started with steps \(state.stepNames), but definition \"\(saga.name)\" now has "
                    + "\(saga.steps.map(\.name)); keep the old definition under its name to finish old sagas")
        }
        // Checked before any step runs: an input the definition cannot read would otherwise fail the next step and
        // compensate a healthy saga for good.
        if let problem = saga.readsInput(state.input) {
            throw EventStoreError.invalidArgument(
                "saga \(state.id) was started with an input that definition \"\(saga.name)\" cannot read (\(problem)); "
                    + "keep the old definition under its name to finish old sagas")
        }
        try checkMatches(saga, state)
        return saga
    }

    /// Throws `invalidArgument` if `saga`, whose step names match `state`'s, has changed in a way that would make
    /// the runner fail or skip work the log says is due: a recorded output its step can no longer read (a later
    /// step or the compensation would fail a healthy saga), a compensation the log has open or a stuck saga has
    /// pending that the definition no longer runs (it would be dropped silently).
    private func checkMatches(_ saga: ErasedSaga, _ state: SagaState) throws {
        let keep = "keep the old definition under its name to finish old sagas"
        for (index, output) in state.outputs.sorted(by: { $0.key < $1.key }) {
            guard let problem = saga.steps[index].readsOutput(output) else { continue }
            throw EventStoreError.invalidArgument(
                "saga \(state.id) recorded an output of step \"\(saga.steps[index].name)\" that definition "
                    + "\"\(saga.name)\" cannot read (\(problem)); \(keep)")
        }
        if let open = state.openCompensation, saga.steps[open.index].compensation == nil {
            throw EventStoreError.invalidArgument(
                "saga \(state.id) has the compensation of step \"\(saga.steps[open.index].name)\" open, but definition "
                    + "\"\(saga.name)\" has none for it; \(keep)")
        }
        if state.status == .stuck, let pending = state.stuckPending {
            let now = SagaExecution.pendingCompensations(saga: saga, state: state)
            let dropped = pending.filter { !now.contains($0) }.map { saga.steps[$0].name }
            if !dropped.isEmpty {
                throw EventStoreError.invalidArgument(
                    "saga \(state.id) is stuck with compensations pending for \(dropped), which definition "
                        + "\"\(saga.name)\" would no longer run; \(keep)")
            }
        }
    }
}
