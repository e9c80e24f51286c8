// The ledger's domain: accounts are event-sourced aggregates. Overdrafts are forbidden: every decision that takes
// money out checks the balance of the state it was loaded from, and the append uses that state's version as the
// expected version, so two concurrent debits cannot both spend the same money.

import EventStore
import Foundation

struct AccountOpened: DomainEvent {
    static let eventType = "AccountOpened"
    var name: String
}

struct Deposited: DomainEvent {
    static let eventType = "Deposited"
    var amount: Cents
}

struct Withdrawn: DomainEvent {
    static let eventType = "Withdrawn"
    var amount: Cents
}

struct TransferDebited: DomainEvent {
    static let eventType = "TransferDebited"
    var transfer: UUID
    var to: String
    var amount: Cents
}

struct TransferCredited: DomainEvent {
    static let eventType = "TransferCredited"
    var transfer: UUID
    var from: String
    var amount: Cents
}

struct TransferRefunded: DomainEvent {
    static let eventType = "TransferRefunded"
    var transfer: UUID
    var to: String
    var amount: Cents
}

/// Every ledger event type, for decoding.
func ledgerRegistry() throws -> EventTypeRegistry {
    var registry = EventTypeRegistry()
    try registry.register(AccountOpened.self)
    try registry.register(Deposited.self)
    try registry.register(Withdrawn.self)
    try registry.register(TransferDebited.self)
    try registry.register(TransferCredited.self)
    try registry.register(TransferRefunded.self)
    return registry
}

/// An account's state, folded from its stream.
struct Account: Aggregate, Codable {
    var name: String?
    var balance = Cents.zero
    var deposited = Cents.zero
    var withdrawn = Cents.zero
    var events = 0
    /// Why the stored events cannot be folded, from the first that cannot (an amount that is not positive, or a sum
    /// past what an Int64 holds); nil when every event folded. Once set, later events change nothing but `events`.
    var unfoldable: String?

    init() {}

    var isOpen: Bool { name != nil }

    mutating func apply(_ event: any DomainEvent) {
        events += 1
        guard unfoldable == nil else { return }
        switch event {
        case let opened as AccountOpened: name = opened.name
        case let deposit as Deposited: fold(deposit, deposit.amount, total: \.deposited)
        case let withdrawal as Withdrawn: fold(withdrawal, withdrawal.amount, debit: true, total: \.withdrawn)
        case let debit as TransferDebited: fold(debit, debit.amount, debit: true)
        case let credit as TransferCredited: fold(credit, credit.amount)
        case let refund as TransferRefunded: fold(refund, refund.amount)
        default: break
        }
    }

    /// Adds `amount` to the balance (subtracts it for a `debit`) and to the running `total`, with checked arithmetic:
    /// stored bytes may hold any Int64, and a sum that does not fit marks the state `unfoldable` instead of trapping.
    private mutating func fold(
        _ event: any DomainEvent, _ amount: Cents, debit: Bool = false, total: WritableKeyPath<Account, Cents>? = nil
    ) {
        let what = "event \(events) (\(type(of: event).eventType) of \(amount))"
        guard amount > .zero else {
            unfoldable = "\(what) does not hold a positive amount"
            return
        }
        let newBalance = debit
            ? balance.value.subtractingReportingOverflow(amount.value) : balance.value.addingReportingOverflow(amount.value)
        let newTotal = total.map { self[keyPath: $0].value.addingReportingOverflow(amount.value) }
        guard !newBalance.overflow, newTotal?.overflow != true else {
            unfoldable = "\(what) takes the balance or a running total past \(Cents(Int64.max)), the most the ledger holds"
            return
        }
        balance = Cents(newBalance.partialValue)
        if let total, let newTotal { self[keyPath: total] = Cents(newTotal.partialValue) }
    }

    /// Throws unless every stored event of the account folded (see `unfoldable`).
    func requireFoldable(account: String) throws {
        if let unfoldable { throw LedgerError.unfoldable(account: account, detail: unfoldable) }
    }

    /// Money may arrive only if the account's balance and its running totals stay within the cents an Int64 holds
    /// (about 92 quadrillion units): folding an event past that would trap, so the command is refused instead.
    func requireRoom(for amount: Cents, account: String, deposit: Bool = false) throws {
        try requireFoldable(account: account)
        guard isOpen else { throw LedgerError.unknownAccount(account) }
        let (_, balanceOverflows) = balance.value.addingReportingOverflow(amount.value)
        let (_, totalOverflows) = deposited.value.addingReportingOverflow(amount.value)
        guard !balanceOverflows, !(deposit && totalOverflows) else { throw LedgerError.balanceLimit(account: account) }
    }

    /// Money may leave only if it is there, and the account's withdrawn total stays within an Int64.
    func requireFunds(_ amount: Cents, account: String) throws {
        try requireFoldable(account: account)
        guard isOpen else { throw LedgerError.unknownAccount(account) }
        guard balance >= amount else {
            throw LedgerError.insufficientFunds(account: account, balance: balance, requested: amount)
        }
        guard !withdrawn.value.addingReportingOverflow(amount.value).overflow else {
            throw LedgerError.balanceLimit(account: account)
        }
    }
}

/// What the ledger reports to its user.
enum LedgerError: Error, CustomStringConvertible, Equatable {
    case invalidInput(String)
    case unknownAccount(String)
    case accountExists(String)
    case insufficientFunds(account: String, balance: Cents, requested: Cents)
    case sameAccount(String)
    case balanceLimit(account: String)
    /// The account's stored events cannot be folded into a balance (Account.unfoldable).
    case unfoldable(account: String, detail: String)
    /// No ledger in the `--data` directory (only `open` and `demo` create one).
    case noLedger(directory: String)
    case transferFailed(String)
    case verificationFailed([String])

    var description: String {
        switch self {
        case .invalidInput(let detail): detail
        case .unknownAccount(let name): "unknown account \"\(name)\"; open it first with: open \(name)"
        case .accountExists(let name): "account \"\(name)\" already exists"
        case .insufficientFunds(let account, let balance, let requested):
            "insufficient funds in \"\(account)\": balance \(balance), requested \(requested); overdrafts are not allowed"
        case .sameAccount(let name): "cannot transfer from \"\(name)\" to itself"
        case .noLedger(let directory):
            "no ledger in \(directory); open an account first (`open` creates the ledger) or pass the right --data"
        case .balanceLimit(let account):
            "\"\(account)\" cannot hold more: its balance or running totals would pass \(Cents(Int64.max)), the most the ledger holds"
        case .unfoldable(let account, let detail): "account \"\(account)\": its stored events cannot be folded: \(detail)"
        case .transferFailed(let detail): "transfer failed: \(detail)"
        case .verificationFailed(let problems): "verify found \(problems.count) problem(s):\n" + problems.joined(separator: "\n")
        }
    }
}

/// Account names: 1...64 characters of letters, digits, '_', '.' and '-'.
func validateAccountName(_ name: String) throws -> String {
    let allowed = name.unicodeScalars.allSatisfy {
        ($0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0))) || $0 == "_" || $0 == "." || $0 == "-"
    }
    guard !name.isEmpty, name.count <= 64, allowed else {
        throw LedgerError.invalidInput(
            "invalid account name \"\(name)\": use 1-64 letters, digits, '_', '.' or '-'")
    }
    return name
}

func accountStream(_ name: String) throws -> StreamName { try StreamName("account-\(name)") }
