// verify: replays everything and checks that money is conserved. It only reads.
//
// Checks, each reported with what was counted:
// - every account replays to the same state with and without snapshots;
// - no account is negative;
// - the sum of balances equals deposits minus withdrawals (transfers only move money);
// - every transfer's debit is matched by exactly one credit or one refund once its saga finished;
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
        let names = try await accountNames()
        var total = CentsTotal.zero
        var deposits = CentsTotal.zero
        var withdrawals = CentsTotal.zero
        for (index, name) in names.enumerated() {
            let stream = try accountStream(name)
            let replayed = try await accounts.load(stream, usingSnapshots: false).state
            let viaSnapshot = try await accounts.load(stream).state
            if replayed.balance != viaSnapshot.balance || replayed.events != viaSnapshot.events {
                report.problems.append(
                    "account \(name): snapshot load gives \(viaSnapshot.balance) after \(viaSnapshot.events) events, full replay \(replayed.balance) after \(replayed.events)")
            }
            if replayed.balance < .zero { report.problems.append("account \(name) is negative: \(replayed.balance)") }
            total = total + replayed.balance
            deposits = deposits + replayed.deposited
            withdrawals = withdrawals + replayed.withdrawn
            if index % 200 == 199 { progress("verify: replayed \(index + 1)/\(names.count) accounts") }
        }
        report.lines.append("accounts replayed: \(names.count) (with and without snapshots: identical)")
        report.lines.append("no negative balances")
        if total != deposits - withdrawals {
            report.problems.append("balances sum to \(total), but deposits minus withdrawals is \(deposits - withdrawals)")
        }
        report.lines.append("sum of balances \(total) = deposits \(deposits) - withdrawals \(withdrawals)")

        var transfers: [UUID: (debited: Cents, credited: Cents, refunded: Cents, debits: Int, settlements: Int)] = [:]
        for type in [TransferDebited.eventType, TransferCredited.eventType, TransferRefunded.eventType] {
            var position: UInt64 = 1
            while true {
                let page = try await store.readEvents(ofType: type, from: position, limit: 4_096)
                for event in page {
                    switch try registry.decode(event) {
                    case let debit as TransferDebited:
                        transfers[debit.transfer, default: (.zero, .zero, .zero, 0, 0)].debited = debit.amount
                        transfers[debit.transfer, default: (.zero, .zero, .zero, 0, 0)].debits += 1
                    case let credit as TransferCredited:
                        transfers[credit.transfer, default: (.zero, .zero, .zero, 0, 0)].credited = credit.amount
                        transfers[credit.transfer, default: (.zero, .zero, .zero, 0, 0)].settlements += 1
                    case let refund as TransferRefunded:
                        transfers[refund.transfer, default: (.zero, .zero, .zero, 0, 0)].refunded = refund.amount
                        transfers[refund.transfer, default: (.zero, .zero, .zero, 0, 0)].settlements += 1
                    default: break
                    }
                }
                guard let last = page.last, page.count == 4_096 else { break }
                position = last.position + 1
            }
        }
        var unsettled = 0
        for (id, transfer) in transfers {
            if transfer.debits != 1 {
                report.problems.append("transfer \(id) was debited \(transfer.debits) times")
            } else if transfer.settlements == 0 {
                unsettled += 1
            } else if transfer.settlements > 1 || transfer.credited + transfer.refunded != transfer.debited {
                report.problems.append(
                    "transfer \(id): debited \(transfer.debited) but credited \(transfer.credited) and refunded \(transfer.refunded)")
            }
        }
        report.lines.append("transfers: \(transfers.count) debited, each credited or refunded exactly once")

        let sagaStatus = try await sagaSummary()
        for (id, status) in sagaStatus.unfinished {
            report.problems.append("saga \(id) has not finished (\(status))")
        }
        if unsettled > 0 {
            report.problems.append("\(unsettled) debited transfer(s) have neither a credit nor a refund")
        }
        report.lines.append(
            "sagas: \(sagaStatus.total) in all, \(sagaStatus.unfinished.count) unfinished, \(sagaStatus.stuck) stuck")

        let structure = try await engine.verify()
        if !structure.isClean {
            report.problems.append(contentsOf: structure.problems.map { "storage: \($0)" })
        }
        report.lines.append(
            "storage verify: \(structure.pageCount) pages, \(structure.keys) keys, depth \(structure.depth), \(structure.problems.count) problems")
        return report
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
