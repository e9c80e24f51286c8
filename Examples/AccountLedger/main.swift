// AccountLedger: the example ledger app, and the project's main command (`swift run -c release AccountLedger demo`).
// Every command takes `--data DIR` (default ./ledger-data). Exit codes: 0 success, 1 a failed operation or a
// failed verify, 2 a usage error.

import EventStore
import EventStoreKV
import Foundation

let usage = """
    usage: AccountLedger <command> [arguments] [--data DIR]

    commands:
      open <name> [--initial <cents>]     open an account, optionally with an initial deposit
      deposit <name> <cents>              deposit money
      withdraw <name> <cents>             withdraw money (overdrafts are refused)
      transfer <from> <to> <cents>        move money between accounts (a saga: debit, then credit)
      balance <name>                      show an account's balance
      history <name>                      show an account's events with versions and timestamps
      accounts                            list every account with its balance
      verify                              replay everything and check that money is conserved
      demo [--accounts N] [--transfers N] [--workers N] [--initial-balance <cents>] [--seed N]
                                          the main job: many concurrent transfers, then verify
      demo --crash-test N [--accounts N] [--workers N] [--initial-balance <cents>] [--seed N]
                                          kill a child running transfers N times, recovering and verifying
                                          after each kill (the child runs until killed: no --transfers)

    Amounts are whole numbers of cents: 1250 means 12.50. Data lives in ./ledger-data unless --data DIR is given.
    """

/// A command line split into the command, its positional arguments and its --flags.
struct Arguments {
    var command: String
    var positional: [String] = []
    var flags: [String: String] = [:]

    static let valueFlags: Set<String> = [
        "--data", "--initial", "--accounts", "--transfers", "--workers", "--crash-test", "--seed", "--initial-balance",
    ]
    static let switches: Set<String> = ["--help", "-h", "--child"]

    init(_ arguments: [String]) throws {
        var rest = arguments.makeIterator()
        var command: String?
        while let argument = rest.next() {
            // A flag given twice is a mistake (which value was meant?), not the last value silently.
            if Self.switches.contains(argument) || Self.valueFlags.contains(argument), flags[argument] != nil {
                throw LedgerError.invalidInput("\(argument) is given more than once")
            }
            if Self.switches.contains(argument) {
                flags[argument] = ""
            } else if Self.valueFlags.contains(argument) {
                guard let value = rest.next() else { throw LedgerError.invalidInput("\(argument) needs a value") }
                flags[argument] = value
            } else if argument.hasPrefix("--") {
                throw LedgerError.invalidInput("unknown option \(argument)")
            } else if command == nil {
                command = argument
            } else {
                positional.append(argument)
            }
        }
        self.command = command ?? ""
    }

    var dataDirectory: String { flags["--data"] ?? "ledger-data" }

    func count(_ flag: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text = flags[flag] else { return value }
        guard let number = Int(text), range.contains(number) else {
            throw LedgerError.invalidInput("\(flag) must be a whole number from \(range.lowerBound) to \(range.upperBound), got \"\(text)\"")
        }
        return number
    }

    /// Refuses any option but `--data` and `allowed`: an option the command does not take is a mistake, not a no-op.
    func allow(_ allowed: Set<String> = []) throws {
        for flag in flags.keys.sorted() where flag != "--data" && !allowed.contains(flag) {
            throw LedgerError.invalidInput("\(command) does not take \(flag)")
        }
    }

    /// Checks the account names among the positional arguments at `indices` before the ledger is opened, so a refused
    /// name neither creates a ledger nor changes one.
    func validateNames(_ indices: Int...) throws {
        for index in indices { _ = try validateAccountName(positional[index]) }
    }

    func expect(_ count: Int, _ names: String) throws {
        guard positional.count == count else {
            throw LedgerError.invalidInput("\(command) takes \(names); got \(positional.count) argument(s)")
        }
    }
}

func fail(_ message: String, code: Int32) -> Never {
    complain("AccountLedger: \(message)\n")
    exit(code)
}

func run(_ arguments: Arguments) async throws -> Int32 {
    switch arguments.command {
    case "open":
        try arguments.allow(["--initial"])
        try arguments.expect(1, "<name>")
        try arguments.validateNames(0)
        let initial = try arguments.flags["--initial"].map { try Cents.parse($0, what: "--initial") }
        let ledger = try await Ledger.open(directory: arguments.dataDirectory)  // creates the ledger if needed
        try await ledger.open(arguments.positional[0], initial: initial)
        try await ledger.close()
        try say("opened \(arguments.positional[0]) with balance \(initial ?? .zero)")
    case "deposit", "withdraw":
        try arguments.allow()
        try arguments.expect(2, "<name> <cents>")
        try arguments.validateNames(0)
        let amount = try Cents.parse(arguments.positional[1])
        let ledger = try await Ledger.open(existing: arguments.dataDirectory)
        let name = arguments.positional[0]
        let account = arguments.command == "deposit"
            ? try await ledger.deposit(name, amount) : try await ledger.withdraw(name, amount)
        try say("\(arguments.command == "deposit" ? "deposited" : "withdrew") \(amount); \(name) balance \(account.balance)")
        try await ledger.close()
    case "transfer":
        try arguments.allow()
        try arguments.expect(3, "<from> <to> <cents>")
        try arguments.validateNames(0, 1)
        let amount = try Cents.parse(arguments.positional[2])
        let ledger = try await Ledger.open(existing: arguments.dataDirectory)
        let outcome = try await ledger.transfer(from: arguments.positional[0], to: arguments.positional[1], amount: amount)
        try await ledger.close()
        switch outcome {
        case .completed: try say("transferred \(amount) from \(arguments.positional[0]) to \(arguments.positional[1])")
        case .notDebited(let error): throw LedgerError.transferFailed("\(error); nothing was debited")
        case .compensated(let error): throw LedgerError.transferFailed("\(error); the debit was refunded")
        case .stuck(let error): throw LedgerError.transferFailed("\(error); the saga is stuck and needs an operator")
        }
    case "balance":
        try arguments.allow()
        try arguments.expect(1, "<name>")
        try arguments.validateNames(0)
        let ledger = try await Ledger.open(existing: arguments.dataDirectory)
        let account = try await ledger.existingAccount(arguments.positional[0])
        try say("\(arguments.positional[0]): \(account.balance)")
        try await ledger.close()
    case "history":
        try arguments.allow()
        try arguments.expect(1, "<name>")
        try arguments.validateNames(0)
        let ledger = try await Ledger.open(existing: arguments.dataDirectory)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        try say("version  position  recorded at                type              amount")
        for event in try await ledger.history(arguments.positional[0]) {
            let amount: String
            switch try ledger.registry.decode(event) {
            case let deposit as Deposited: amount = "+\(deposit.amount)"
            case let withdrawal as Withdrawn: amount = "-\(withdrawal.amount)"
            case let debit as TransferDebited: amount = "-\(debit.amount) to \(debit.to)"
            case let credit as TransferCredited: amount = "+\(credit.amount) from \(credit.from)"
            case let refund as TransferRefunded: amount = "+\(refund.amount) refund"
            default: amount = ""
            }
            let columns = [
                String(event.version).padding(toLength: 8, withPad: " ", startingAt: 0),
                String(event.position).padding(toLength: 9, withPad: " ", startingAt: 0),
                formatter.string(from: event.recordedAt).padding(toLength: 26, withPad: " ", startingAt: 0),
                event.type.padding(toLength: 17, withPad: " ", startingAt: 0), amount,
            ]
            try say(columns.joined(separator: " "))
        }
        try await ledger.close()
    case "accounts":
        try arguments.allow()
        try arguments.expect(0, "no arguments")
        let ledger = try await Ledger.open(existing: arguments.dataDirectory)
        var total = CentsTotal.zero
        let names = try await ledger.accountNames()
        for name in names {
            let account = try await ledger.account(name)
            total = total + account.balance
            try say("\(name.padding(toLength: 24, withPad: " ", startingAt: 0)) \(account.balance)")
        }
        try say("\(names.count) accounts, total \(total)")
        try await ledger.close()
    case "verify":
        try arguments.allow()
        try arguments.expect(0, "no arguments")
        let ledger = try await Ledger.open(existing: arguments.dataDirectory)
        let report = try await ledger.verify { complain("\($0)\n") }
        try await ledger.close()
        for line in report.lines { try say("ok: \(line)") }
        for problem in report.problems { try say("FAIL: \(problem)") }
        try say(report.isClean ? "verify: passed" : "verify: FAILED with \(report.problems.count) problem(s)")
        return report.isClean ? 0 : 1
    case "demo":
        try arguments.allow(["--accounts", "--transfers", "--workers", "--crash-test", "--seed", "--initial-balance", "--child"])
        try arguments.expect(0, "only options")
        return try await Demo(arguments).run()
    case "":
        throw LedgerError.invalidInput("missing command\n\(usage)")
    default:
        throw LedgerError.invalidInput("unknown command \"\(arguments.command)\"\n\(usage)")
    }
    return 0
}

// A reader that closes the pipe early (`AccountLedger history x | head`) makes the next write fail with EPIPE instead
// of killing the process silently: the command then fails with status 1 and a message, like any failed write.
signal(SIGPIPE, SIG_IGN)
do {
    let arguments = try Arguments(Array(CommandLine.arguments.dropFirst()))
    if arguments.flags["--help"] != nil || arguments.flags["-h"] != nil || arguments.command == "help" {
        try say(usage)
        exit(0)
    }
    exit(try await run(arguments))
} catch LedgerError.invalidInput(let message) {
    fail(message, code: 2)
} catch let error as LedgerError {
    fail(error.description, code: 1)
} catch let error as EventStoreError {
    fail(error.description, code: 1)
} catch {
    fail("\(error)", code: 1)
}
