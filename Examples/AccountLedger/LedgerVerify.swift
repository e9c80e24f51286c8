// verify: replays everything and checks that money is conserved. It only reads.
//
// Checks, each reported with what was counted:
// - every account replays to the same state with and without snapshots;
// - no account is negative;
// - the sum of balances equals deposits minus withdrawals (transfers only move money);
// - every transfer's debit is matched by exactly one credit or one refund once its saga finished: a credit of the
//   same amount in the stream of the account the debit names, naming the debited account as its source, or a refund
//   in the debited account's stream;
// - every saga finished (completed, compensated or resolved) or is visibly stuck;
// - the storage engine's own structural check is clean.

import EventStore
import EventStoreKV
import Foundation
import Sagas

struct VerifyReport {
    var lines: [String] = []
    var problems: [String] = []
    var isClean: Bool { problems.isEmpty }
}

extension Ledger {
    func verify(progress: (String) -> Void = { _ in }) async throws -> VerifyReport {
        var report = VerifyReport()
        // Each check's "ok" line is reported only if the check added no problem: a failed check is a FAIL line only.
        func check(_ body: () async throws -> String) async rethrows {
            let before = report.problems.count
            let line = try await body()
            if report.problems.count == before { report.lines.append(line) }
        }
        let names = try await accountNames()
        var total = CentsTotal.zero
        var deposits = CentsTotal.zero
        var withdrawals = CentsTotal.zero
        var negative: [String] = []
        try await check {
            for (index, name) in names.enumerated() {
                let stream = try accountStream(name)
                let replayed = try await accounts.load(stream, usingSnapshots: false).state
                let viaSnapshot = try await accounts.load(stream).state
                if let unfoldable = replayed.unfoldable ?? viaSnapshot.unfoldable {
                    report.problems.append("account \(name): its stored events cannot be folded: \(unfoldable)")
                }
                if replayed.balance != viaSnapshot.balance || replayed.events != viaSnapshot.events {
                    report.problems.append(
                        "account \(name): snapshot load gives \(viaSnapshot.balance) after \(viaSnapshot.events) events, full replay \(replayed.balance) after \(replayed.events)")
                }
                if replayed.balance < .zero { negative.append("account \(name) is negative: \(replayed.balance)") }
                total = total + replayed.balance
                deposits = deposits + replayed.deposited
                withdrawals = withdrawals + replayed.withdrawn
                if index % 200 == 199 { progress("verify: replayed \(index + 1)/\(names.count) accounts") }
            }
            return "accounts replayed: \(names.count) (with and without snapshots: identical)"
        }
        await check {
            report.problems.append(contentsOf: negative)
            return "no negative balances"
        }
        await check {
            if total != deposits - withdrawals {
                report.problems.append("balances sum to \(total), but deposits minus withdrawals is \(deposits - withdrawals)")
            }
            return "sum of balances \(total) = deposits \(deposits) - withdrawals \(withdrawals)"
        }

        try await check {
            let transfers = try await tallyTransfers()
            var unsettled = 0
            for (id, transfer) in transfers {
                if transfer.debits == 1 && transfer.settlements.isEmpty {
                    unsettled += 1
                } else {
                    report.problems.append(contentsOf: transfer.problems.map { "transfer \(id): \($0)" })
                }
            }
            if unsettled > 0 {
                report.problems.append("\(unsettled) debited transfer(s) have neither a credit nor a refund")
            }
            // A credit or refund with no debit makes a tally too: only transfers with a debit count as debited.
            let debited = transfers.values.count(where: { $0.debits > 0 })
            return "transfers: \(debited) debited, each credited to the account debited for or refunded, exactly once"
        }

        try await check {
            let sagaStatus = try await sagaSummary()
            for (id, status) in sagaStatus.unfinished {
                report.problems.append("saga \(id) has not finished (\(status))")
            }
            return "sagas: \(sagaStatus.total) in all, \(sagaStatus.unfinished.count) unfinished, \(sagaStatus.stuck) stuck"
        }

        try await check {
            let structure = try await engine.verify()
            if !structure.isClean {
                report.problems.append(contentsOf: structure.problems.map { "storage: \($0)" })
            }
            return "storage verify: \(structure.pageCount) pages, \(structure.keys) keys, depth \(structure.depth), \(structure.problems.count) problems"
        }
        return report
    }

    /// Every transfer's debits, credits and refunds, from the indexed reads of their event types.
    func tallyTransfers() async throws -> [UUID: TransferTally] {
        var transfers: [UUID: TransferTally] = [:]
        for type in [TransferDebited.eventType, TransferCredited.eventType, TransferRefunded.eventType] {
            var position: UInt64 = 1
            while true {
                let page = try await store.readEvents(ofType: type, from: position, limit: 4_096)
                for event in page {
                    let account = TransferTally.account(of: event.stream)
                    switch try registry.decode(event) {
                    case let debit as TransferDebited:
                        transfers[debit.transfer, default: TransferTally()].debit(debit, from: account)
                    case let credit as TransferCredited:
                        transfers[credit.transfer, default: TransferTally()].settlements.append(
                            .init(account: account, credit: credit.from, refund: nil, amount: credit.amount))
                    case let refund as TransferRefunded:
                        transfers[refund.transfer, default: TransferTally()].settlements.append(
                            .init(account: account, credit: nil, refund: refund.to, amount: refund.amount))
                    default: break
                    }
                }
                guard let last = page.last, page.count == 4_096 else { break }
                position = last.position + 1
            }
        }
        return transfers
    }

    /// Every saga's status, from the SagaStarted events in the global log (an indexed read).
    func sagaSummary() async throws -> (total: Int, stuck: Int, unfinished: [(SagaID, SagaStatus)]) {
        var total = 0
        var stuck = 0
        var unfinished: [(SagaID, SagaStatus)] = []
        var position: UInt64 = 1
        while true {
            let page = try await store.readEvents(ofType: SagaEventKind.sagaStarted.rawValue, from: position, limit: 4_096)
            for event in page {
                total += 1
                // A saga's log is the stream "$saga-<id>".
                let id = try SagaID(String(event.stream.rawValue.dropFirst("$saga-".count)))
                let status = try await sagas.status(of: id)
                switch status {
                case .completed, .compensated, .resolved: break
                case .stuck: stuck += 1
                default: unfinished.append((id, status))
                }
            }
            guard let last = page.last, page.count == 4_096 else { break }
            position = last.position + 1
        }
        return (total, stuck, unfinished)
    }
}

/// One transfer as its events tell it: the debit, and each credit or refund that settles it.
struct TransferTally {
    /// A credit (naming the account it came from) or a refund (naming the account the transfer was for).
    struct Settlement {
        var account: String
        var credit: String?
        var refund: String?
        var amount: Cents
    }

    var debits = 0
    /// The debited account, the account the debit names as the destination, and the amount.
    var from = ""
    var to = ""
    var debited = Cents.zero
    var settlements: [Settlement] = []

    mutating func debit(_ debit: TransferDebited, from account: String) {
        debits += 1
        (from, to, debited) = (account, debit.to, debit.amount)
    }

    /// What is wrong with a transfer that has one debit and is settled (or that has not exactly one debit).
    var problems: [String] {
        guard debits == 1 else { return ["debited \(debits) times"] }
        guard settlements.count == 1, let settlement = settlements.first else {
            return ["debited \(debited) from \(from) but settled \(settlements.count) times"]
        }
        var problems: [String] = []
        if settlement.amount != debited {
            problems.append("debited \(debited) but \(settlement.credit == nil ? "refunded" : "credited") \(settlement.amount)")
        }
        if let source = settlement.credit, settlement.account != to || source != from {
            problems.append(
                "\(from) was debited for \(to), but the credit is in \(settlement.account)'s stream and names \(source) as its source")
        }
        if let destination = settlement.refund, settlement.account != from || destination != to {
            problems.append(
                "\(from) was debited for \(to), but the refund is in \(settlement.account)'s stream and names \(destination)")
        }
        return problems
    }

    /// The account whose stream is `stream` ("account-amy" is amy); another stream keeps its full name in brackets.
    static func account(of stream: StreamName) -> String {
        let name = stream.rawValue
        return name.hasPrefix("account-") ? String(name.dropFirst("account-".count)) : "[\(name)]"
    }
}
