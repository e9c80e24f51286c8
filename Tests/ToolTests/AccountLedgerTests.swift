// The example ledger, driven through its command line: domain rules (overdraft, compensation, history), input
// errors, a small demo whose verify must pass, and a small crash test followed by a separate verify.

import Foundation
import Testing

@Suite("AccountLedger", .timeLimit(.minutes(10)))
struct AccountLedgerTests {
    private func ledger(_ arguments: [String], data: String) async throws -> ToolResult {
        try await ToolRunner.run("AccountLedger", arguments + ["--data", data])
    }

    @Test("accounts, deposits, withdrawals, transfers, balances and history")
    func commands() async throws {
        let data = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        #expect(try await ledger(["open", "alice", "--initial", "10000"], data: data).status == 0)
        #expect(try await ledger(["open", "bob"], data: data).status == 0)
        #expect(try await ledger(["deposit", "bob", "250"], data: data).status == 0)
        let transfer = try await ledger(["transfer", "alice", "bob", "1250"], data: data)
        #expect(transfer.status == 0, "\(transfer.errors)")
        #expect(try await ledger(["balance", "alice"], data: data).output == "alice: 87.50\n")
        #expect(try await ledger(["balance", "bob"], data: data).output == "bob: 15.00\n")
        let accounts = try await ledger(["accounts"], data: data)
        #expect(accounts.output.contains("2 accounts, total 102.50"))
        let history = try await ledger(["history", "alice"], data: data)
        let rows = history.output.split(separator: "\n").dropFirst()
        #expect(rows.count == 3)
        #expect(rows.map { $0.split(separator: " ").first.map(String.init) ?? "" } == ["1", "2", "3"])
        #expect(history.output.contains("TransferDebited") && history.output.contains("-12.50 to bob"))
        let verify = try await ledger(["verify"], data: data)
        #expect(verify.status == 0, "\(verify.output)")
        #expect(verify.output.contains("verify: passed"))
    }

    @Test("an overdraft is refused and changes nothing")
    func overdraft() async throws {
        let data = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        _ = try await ledger(["open", "carol", "--initial", "500"], data: data)
        _ = try await ledger(["open", "dave"], data: data)
        let withdraw = try await ledger(["withdraw", "carol", "501"], data: data)
        #expect(withdraw.status == 1)
        #expect(withdraw.errors.contains("insufficient funds"))
        let transfer = try await ledger(["transfer", "carol", "dave", "600"], data: data)
        #expect(transfer.status == 1)
        #expect(transfer.errors.contains("insufficient funds"))
        #expect(try await ledger(["balance", "carol"], data: data).output == "carol: 5.00\n")
        #expect(try await ledger(["balance", "dave"], data: data).output == "dave: 0.00\n")
    }

    @Test("bad input gets a clear message and a non-zero exit, and harms nothing")
    func badInput() async throws {
        let data = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        _ = try await ledger(["open", "erin", "--initial", "100"], data: data)
        let cases: [([String], Int32, String)] = [
            (["deposit", "erin", "-5"], 2, "must be positive"),
            (["deposit", "erin", "12.50"], 2, "whole number of cents"),
            (["deposit", "erin", "abc"], 2, "whole number of cents"),
            (["deposit", "erin", "0"], 2, "must be positive"),
            (["deposit", "erin", "99999999999999999999"], 2, "larger than the maximum"),
            (["deposit", "nobody", "5"], 1, "unknown account"),
            (["transfer", "erin", "erin", "5"], 1, "itself"),
            (["open", "erin"], 1, "already exists"),
            (["open", "bad name"], 2, "invalid account name"),
            (["frobnicate"], 2, "unknown command"),
            (["deposit", "erin"], 2, "takes <name> <cents>"),
            (["demo", "--workers", "0"], 2, "--workers"),
            (["balance", "erin", "--bogus"], 2, "unknown option"),
        ]
        for (arguments, status, message) in cases {
            let result = try await ledger(arguments, data: data)
            #expect(result.status == status, "\(arguments): \(result.errors)")
            #expect(result.errors.contains(message), "\(arguments): \(result.errors)")
        }
        #expect(try await ledger(["balance", "erin"], data: data).output == "erin: 1.00\n")
        let help = try await ToolRunner.run("AccountLedger", ["--help"])
        #expect(help.status == 0)
        #expect(help.output.contains("transfer <from> <to> <cents>"))
    }

    @Test("a small demo runs transfers with failures and compensations, then verify passes")
    func smallDemo() async throws {
        let data = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let demo = try await ledger(
            ["demo", "--accounts", "20", "--transfers", "300", "--workers", "4", "--seed", "7"], data: data)
        #expect(demo.status == 0, "\(demo.output)\n\(demo.errors)")
        #expect(demo.output.contains("verify: passed"))
        let compensated = demo.output.split(separator: "\n").first { $0.contains("compensated ") }
        let count = compensated.flatMap { $0.split(separator: " ").dropFirst().first.flatMap { Int($0) } } ?? 0
        #expect(count > 0, "the demo's failing credits must be compensated: \(demo.output)")
        #expect(demo.output.contains("transfers         300"))
    }

    @Test("a small crash test recovers after every kill, and a later verify passes")
    func smallCrashTest() async throws {
        let data = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let crash = try await ledger(["demo", "--crash-test", "2", "--accounts", "20", "--workers", "4"], data: data)
        #expect(crash.status == 0, "\(crash.output)\n\(crash.errors)")
        #expect(crash.output.contains("crash test: passed 2 kills"))
        let verify = try await ledger(["verify"], data: data)
        #expect(verify.status == 0, "\(verify.output)")
    }
}
