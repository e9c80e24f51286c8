// A saga definition: a named, ordered list of steps, each an action with an optional compensation, typed by the
// saga's input and each step's output. Consecutive steps defined inside one `inParallel` form a parallel group.
//
// Invariants:
// - Steps run in the order they were defined, except that the steps of a parallel group run concurrently; the step
//   after a group starts only once every step of the group has completed. A step's index is its position, fixed
//   when it is defined.
// - A parallel group has at least one step and groups do not nest; its steps see only the outputs of the steps
//   before the group, never each other's.
// - A step's compensation is part of the definition, registered before any action runs: a resumed or recovered
//   saga always knows how to undo every step its log says took (or may have taken) effect.
// - Step names are unique, non-empty and contain no "/"; a broken definition is refused with a typed error when
//   it is registered or started, never half-run.
// - Outputs are encoded with `coder` by the runner once the action has returned (never inside the action's closure,
//   so an output that does not encode is not mistaken for an error the action threw), and decoded from the log
//   afterwards.

import EventStore
import Foundation

/// A saga: a named, ordered list of steps over an input of type `Input`.
///
/// ```swift
/// var transfer = SagaDefinition<Transfer>("transfer")
/// let debit = transfer.step("debit", resources: { [$0.from] }) { step in
///     try await bank.debit(step.input.from, step.input.amount, key: step.idempotencyKey)
/// } compensation: { step, receipt in
///     try await bank.refund(step.input.from, step.input.amount, key: step.idempotencyKey)
/// }
/// ```
public struct SagaDefinition<Input: Codable & Sendable>: Sendable {
    /// The definition's name, recorded in SagaStarted; recovery finds the definition by it.
    public let name: String
    /// Encodes the input and the step outputs into the log.
    public let coder: any EventCoder
    var steps: [ErasedStep] = []
    var problems: [String] = []
    /// The parallel group that steps added now join (inside `inParallel`), and the number of groups so far.
    private var openGroup: Int?
    private var groupCount = 0

    /// Creates an empty definition.
    public init(_ name: String, coder: any EventCoder = JSONEventCoder()) {
        self.name = name
        self.coder = coder
        if name.isEmpty { problems.append("a saga definition needs a name") }
    }

    /// The step names, in order.
    public var stepNames: [String] { steps.map(\.name) }

    /// Adds the steps `build` defines as one parallel group: they run concurrently, each with its own attempts,
    /// retries, timeout and resource locks, and the next step starts once all of them have completed.
    ///
    /// ```swift
    /// let (stock, payment) = order.inParallel { group in
    ///     (group.step("reserve stock") { ... } compensation: { ... },
    ///      group.step("charge card") { ... } compensation: { ... })
    /// }
    /// ```
    ///
    /// If one of them fails for good, the others are not started again (an attempt already running finishes and
    /// is recorded), and then every completed step is compensated, last step first. Steps of a group see only the
    /// outputs of steps before the group. Groups do not nest, and a group needs at least one step.
    /// - Returns: what `build` returns, typically the group's step handles.
    @discardableResult
    public mutating func inParallel<Result>(
        _ build: (inout SagaDefinition<Input>) throws -> Result
    ) rethrows -> Result {
        guard openGroup == nil else {
            problems.append("parallel groups cannot be nested")
            return try build(&self)
        }
        let first = steps.count
        groupCount += 1
        openGroup = groupCount
        defer {
            openGroup = nil
            if steps.count == first { problems.append("a parallel group needs at least one step") }
        }
        return try build(&self)
    }

    /// Adds a step with an action and its compensation.
    /// - Parameters:
    ///   - resources: names of the resources (accounts, stock items) the step locks while its action or
    ///     compensation runs; sagas touching the same resource take turns.
    ///   - action: the forward action; its output is recorded and available to later steps. If the action returns
    ///     but its output cannot be recorded (it does not encode, or the store refuses it as too large), the step
    ///     fails for good, is not run again and is compensated: its effect happened.
    ///   - compensation: undoes the action; it gets the action's output, or nil when the action's output was not
    ///     recorded (with ``StepOptions/compensatesFailedAction`` when the action failed, or when it returned but
    ///     its output could not be recorded). It must be idempotent: it runs at least once.
    @discardableResult
    public mutating func step<Output: Codable & Sendable>(
        _ name: String, options: StepOptions = StepOptions(),
        resources: @escaping @Sendable (Input) -> [String] = { _ in [] },
        action: @escaping @Sendable (StepContext<Input>) async throws -> Output,
        compensation: @escaping @Sendable (StepContext<Input>, Output?) async throws -> Void
    ) -> StepHandle<Output> {
        let coder = self.coder
        return add(
            name, options: options, resources: resources,
            action: { invocation in
                let output = try await action(try invocation.context(Input.self))
                return StepResult(output: { try Self.encode(output, step: name, coder: coder) }, appends: [])
            },
            compensation: { invocation, output in
                let decoded = try output.map { try Self.decode(Output.self, from: $0, step: name, coder: coder) }
                try await compensation(try invocation.context(Input.self), decoded)
                return []
            })
    }

    /// Adds a step that needs no compensation (a check, or the last step of the saga).
    @discardableResult
    public mutating func step<Output: Codable & Sendable>(
        _ name: String, options: StepOptions = StepOptions(),
        resources: @escaping @Sendable (Input) -> [String] = { _ in [] },
        action: @escaping @Sendable (StepContext<Input>) async throws -> Output
    ) -> StepHandle<Output> {
        let coder = self.coder
        return add(
            name, options: options, resources: resources,
            action: { invocation in
                let output = try await action(try invocation.context(Input.self))
                return StepResult(output: { try Self.encode(output, step: name, coder: coder) }, appends: [])
            },
            compensation: nil)
    }

    /// Adds a step whose effect is an append to the event store: the appends it returns are committed in one atomic
    /// transaction with its StepCompleted record, so the effect happens exactly once. Its compensation's appends
    /// likewise commit atomically with StepCompensated.
    ///
    /// The action may run more than once, so it must have no other side effect. An attempt whose output does not
    /// encode, or whose appends and StepCompleted do not commit, wrote nothing and is retried within the step's
    /// policy. Appends to a system stream (`$...`) are refused before anything is written: the action's attempt
    /// then fails for good (not retried), and a compensation's is retried as usual, then leaves the saga stuck.
    @discardableResult
    public mutating func appendingStep<Output: Codable & Sendable>(
        _ name: String, options: StepOptions = StepOptions(),
        resources: @escaping @Sendable (Input) -> [String] = { _ in [] },
        action: @escaping @Sendable (StepContext<Input>) async throws -> StepEffect<Output>,
        compensation: @escaping @Sendable (StepContext<Input>, Output?) async throws -> [StreamAppend]
    ) -> StepHandle<Output> {
        let coder = self.coder
        return add(
            name, options: options, resources: resources,
            appending: true,
            action: { invocation in
                let effect = try await action(try invocation.context(Input.self))
                let output = effect.output
                return StepResult(
                    output: { try Self.encode(output, step: name, coder: coder) }, appends: effect.appends)
            },
            compensation: { invocation, output in
                let decoded = try output.map { try Self.decode(Output.self, from: $0, step: name, coder: coder) }
                return try await compensation(try invocation.context(Input.self), decoded)
            })
    }

    private mutating func add<Output: Codable & Sendable>(
        _ name: String, options: StepOptions, resources: @escaping @Sendable (Input) -> [String],
        appending: Bool = false,
        action: @escaping @Sendable (StepInvocation) async throws -> StepResult,
        compensation: (@Sendable (StepInvocation, Data?) async throws -> [StreamAppend])?
    ) -> StepHandle<Output> {
        if name.isEmpty || name.contains("/") || name.utf8.count > 200 {
            problems.append("step name \"\(name)\" must be 1 to 200 UTF-8 bytes without \"/\"")
        }
        if steps.contains(where: { $0.name == name }) { problems.append("step name \"\(name)\" is used twice") }
        do {
            try options.retry.validate("step \"\(name)\" retry")
            try options.compensationRetry.validate("step \"\(name)\" compensation retry")
        } catch {
            problems.append("\(error)")
        }
        // A timeout that is not positive would fail every attempt at once, as timed out.
        for (what, timeout) in [("timeout", options.timeout), ("compensationTimeout", options.compensationTimeout)] {
            if let timeout, timeout <= .zero { problems.append("step \"\(name)\" \(what) must be positive, got \(timeout)") }
        }
        let index = steps.count
        let coder = self.coder
        steps.append(
            ErasedStep(
                name: name, options: options, group: openGroup, appending: appending,
                resources: { invocation in resources(try invocation.context(Input.self).input) },
                action: action, compensation: compensation,
                readsOutput: { data in
                    do {
                        _ = try Self.decode(Output.self, from: data, step: name, coder: coder)
                        return nil
                    } catch {
                        return "\(error)"
                    }
                }))
        return StepHandle(name: name, index: index)
    }

    /// The definition without its Swift types, ready for the runner.
    func erased() throws -> ErasedSaga {
        if steps.isEmpty { throw EventStoreError.invalidArgument("saga definition \"\(name)\" has no steps") }
        if let problem = problems.first {
            throw EventStoreError.invalidArgument("saga definition \"\(name)\": \(problem)")
        }
        let coder = self.coder
        return ErasedSaga(
            name: name, steps: steps, coder: coder,
            readsInput: { data in
                do {
                    _ = try coder.decode(Input.self, from: data)
                    return nil
                } catch {
                    return "\(error)"
                }
            })
    }

    func encodeInput(_ input: Input) throws -> Data {
        try Self.encode(input, step: "input", coder: coder)
    }

    private static func encode<Value: Encodable>(_ value: Value, step: String, coder: any EventCoder) throws -> Data {
        do {
            return try coder.encode(value)
        } catch {
            throw EventStoreError.codingFailed(type: "saga \(step) value", reason: "\(error)")
        }
    }

    private static func decode<Value: Decodable>(
        _ type: Value.Type, from data: Data, step: String, coder: any EventCoder
    ) throws -> Value {
        do {
            return try coder.decode(type, from: data)
        } catch {
            throw EventStoreError.codingFailed(type: "output of step \(step)", reason: "\(error)")
        }
    }
}

/// A step without its Swift types.
struct ErasedStep: Sendable {
    let name: String
    let options: StepOptions
    /// The parallel group the step belongs to, if any.
    let group: Int?
    /// Whether the step was added with `appendingStep`: its effect is its appends, which commit with StepCompleted,
    /// and its action has no other side effect (so an action that returned but whose StepCompleted did not commit
    /// took no effect).
    let appending: Bool
    let resources: @Sendable (StepInvocation) throws -> [String]
    let action: @Sendable (StepInvocation) async throws -> StepResult
    let compensation: (@Sendable (StepInvocation, Data?) async throws -> [StreamAppend])?
    /// Why the step's `Output` type cannot read a recorded output, or nil when it can.
    let readsOutput: @Sendable (Data) -> String?
}

/// What a step's action returned, before the runner records it. The output is encoded only by the runner, after
/// the action has returned, so that a failure to encode it is known to come after the action's effect rather than
/// being taken for an error the action threw.
struct StepResult: Sendable {
    /// Encodes the action's output for StepCompleted (nil for a compensation, which has none).
    let output: @Sendable () throws -> Data?
    /// The appends that commit with the StepCompleted (or StepCompensated) record.
    let appends: [StreamAppend]
}

/// A saga definition without its Swift types.
struct ErasedSaga: Sendable {
    let name: String
    let steps: [ErasedStep]
    let coder: any EventCoder
    /// Why the definition's `Input` type cannot read a recorded input, or nil when it can.
    let readsInput: @Sendable (Data) -> String?

    /// The steps that run together with step `index`: its parallel group, or just the step.
    func stage(of index: Int) -> Range<Int> {
        guard let group = steps[index].group else { return index..<(index + 1) }
        var lower = index
        while lower > 0, steps[lower - 1].group == group { lower -= 1 }
        var upper = index + 1
        while upper < steps.count, steps[upper].group == group { upper += 1 }
        return lower..<upper
    }
}
