// AccountLedger defects found in the r3 review: what verify and the demo report, and repeated or ignored options.
// Each test failed before its fix:
// - verifyReportsOnlyChecksThatPassed: `verify` printed its "ok:" lines whatever the checks found, so "ok: no
//   negative balances" stood above "FAIL: account amy is negative", the sum check printed a false "ok: sum of
//   balances", and the transfers line counted every transfer id seen (a credit with no debit too) as debited;
//   a check that finds a problem must print no "ok:" line.
// - verifyCountsDebitedTransfers (passed before too; it pins the line the README's sample shows): on a clean ledger
//   the transfers line counts each debited transfer once.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("AccountLedger: verify's report, the demo's summary, repeated and ignored options", .timeLimit(.minutes(10)))
struct LedgerReportTests {
    private func ledger(_ arguments: [String], data: String) async throws -> ToolResult {
        try await ToolRunner.run("AccountLedger", arguments + ["--data", data])
    }

    private func appendToAccount(_ name: String, _ events: [(String, String)], data: String) async throws {
        let store = try KeyValueEventStore.open(directory: data)
        _ = try await store.append(
            events.map { EventData(type: $0.0, data: Data($0.1.utf8)) }, to: try StreamName("account-\(name)"),
            expectedVersion: .any)
        try await store.close()
    }

    @Test("verify prints no \"ok:\" line for a check that failed")
    func verifyReportsOnlyChecksThatPassed() async throws {
        let data = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        #expect(try await ledger(["open", "amy", "--initial", "100"], data: data).status == 0)
        #expect(try await ledger(["open", "bob"], data: data).status == 0)
        // Wrong data: amy withdrew more than she had (negative), and bob got a credit no debit paid for (money made).
        try await appendToAccount("amy", [("Withdrawn", #"{"amount":500}"#)], data: data)
        try await appendToAccount(
            "bob", [("TransferCredited", #"{"transfer":"\#(UUID().uuidString)","from":"amy","amount":300}"#)],
            data: data)
        let verify = try await ledger(["verify"], data: data)
        #expect(verify.status == 1)
        #expect(verify.output.contains("FAIL: account amy is negative"))
        #expect(verify.output.contains("FAIL: balances sum to -1.00, but deposits minus withdrawals is -4.00"))
        #expect(verify.output.contains("FAIL: transfer "), "the credit no debit paid for: \(verify.output)")
        // Each failed check must not also be reported as passed; the checks that found nothing still are.
        let okLines = verify.output.split(separator: "\n").filter { $0.hasPrefix("ok:") }
        #expect(!okLines.contains("ok: no negative balances"), "\(verify.output)")
        #expect(!okLines.contains { $0.hasPrefix("ok: sum of balances") }, "\(verify.output)")
        #expect(!okLines.contains { $0.hasPrefix("ok: transfers:") }, "\(verify.output)")
        #expect(okLines.contains("ok: accounts replayed: 2 (with and without snapshots: identical)"), "\(verify.output)")
        #expect(okLines.contains { $0.hasPrefix("ok: storage verify:") }, "\(verify.output)")
    }

    @Test("verify's transfers line counts the transfers that were debited, not every transfer id seen")
    func verifyCountsDebitedTransfers() async throws {
        let data = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        #expect(try await ledger(["open", "amy", "--initial", "100"], data: data).status == 0)
        #expect(try await ledger(["open", "bob"], data: data).status == 0)
        #expect(try await ledger(["transfer", "amy", "bob", "30"], data: data).status == 0)
        #expect(try await ledger(["transfer", "amy", "bob", "20"], data: data).status == 0)
        let verify = try await ledger(["verify"], data: data)
        #expect(verify.status == 0, "\(verify.output)")
        #expect(
            verify.output.contains(
                "ok: transfers: 2 debited, each credited to the account debited for or refunded, exactly once"),
            "\(verify.output)")
    }
}
