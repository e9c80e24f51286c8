// AccountLedger defects found in the eighth session's review, each of which failed before its fix:
// - `accounts` and `verify` summed balances across accounts in Int64 and trapped (arithmetic overflow) once the sum
//   passed Int64.max, although every balance was within it;
// - an amount with leading zeros was refused as "larger than the maximum" (its length was checked, not its value);
// - every command opened (and so created) the ledger at `--data`: `verify` of a mistyped path passed on a new,
//   empty ledger and left it behind;
// - an option the command does not take was silently ignored (`withdraw amy 5 --initial 100`).

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("AccountLedger: sums across accounts, input and the --data directory")
struct LedgerReviewedEdgeTests {
    private func ledger(_ arguments: [String], data: String) async throws -> ToolResult {
        try await ToolRunner.run("AccountLedger", arguments + ["--data", data])
    }

    @Test("accounts and verify sum balances past Int64.max exactly instead of trapping")
    func sumsPastInt64() async throws {
        let data = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        for name in ["whale1", "whale2"] {
            #expect(try await ledger(["open", name, "--initial", "1000000000000000"], data: data).status == 0)
        }
        // Stand-in for 5,000 further valid `deposit whaleN 1000000000000000` commands per account: copies of the
        // stored Deposited event, so each balance is 5.001 x 10^18 cents (under Int64.max) and their sum is over.
        do {
            let store = try KeyValueEventStore.open(directory: data)
            for name in ["whale1", "whale2"] {
                let stream = try StreamName("account-\(name)")
                let deposit = try #require(try await store.read(stream).first { $0.type == "Deposited" })
                for _ in 0..<5 {
                    let events = (0..<1_000).map { _ in EventData(type: deposit.type, data: deposit.data) }
                    _ = try await store.append(events, to: stream, expectedVersion: .any)
                }
            }
            try await store.close()
        }
        let accounts = try await ledger(["accounts"], data: data)
        #expect(accounts.status == 0, "\(accounts.errors)")
        #expect(accounts.output.hasSuffix("2 accounts, total 100020000000000000.00\n"), "\(accounts.output)")
        let verify = try await ledger(["verify"], data: data)
        #expect(verify.status == 0, "\(verify.errors)")
        #expect(verify.output.contains("sum of balances 100020000000000000.00 = deposits 100020000000000000.00"))
    }

    @Test("leading zeros do not make an amount too large; a really larger one is still refused")
    func leadingZeros() async throws {
        let data = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        #expect(try await ledger(["open", "zed"], data: data).status == 0)
        let deposit = try await ledger(["deposit", "zed", "00000000000000001"], data: data)
        #expect(deposit.status == 0, "\(deposit.errors)")
        #expect(try await ledger(["balance", "zed"], data: data).output == "zed: 0.01\n")
        let tooLarge = try await ledger(["deposit", "zed", "0001000000000000001"], data: data)
        #expect(tooLarge.status == 2 && tooLarge.errors.contains("larger than the maximum"))
    }

    @Test("commands other than open and demo refuse a --data directory that holds no ledger and create nothing")
    func missingLedger() async throws {
        let parent = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let missing = parent + "/typo"
        for command in [["verify"], ["accounts"], ["balance", "amy"], ["history", "amy"], ["deposit", "amy", "5"],
                        ["withdraw", "amy", "5"], ["transfer", "amy", "bob", "5"]] {
            let result = try await ledger(command, data: missing)
            #expect(result.status == 1 && result.errors.contains("no ledger in \(missing)"), "\(command): \(result.errors)")
            #expect(!FileManager.default.fileExists(atPath: missing), "\(command) created a ledger")
        }
    }

    @Test("an option the command does not take is a usage error, and nothing changes")
    func unknownOptionForCommand() async throws {
        let data = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        #expect(try await ledger(["open", "amy", "--initial", "500"], data: data).status == 0)
        for command in [["withdraw", "amy", "5", "--initial", "100"], ["balance", "amy", "--accounts", "3"],
                        ["open", "bob", "--workers", "2"]] {
            let result = try await ledger(command, data: data)
            #expect(result.status == 2 && result.errors.contains("does not take --"), "\(command): \(result.errors)")
        }
        #expect(try await ledger(["balance", "amy"], data: data).output == "amy: 5.00\n")
        #expect(try await ledger(["balance", "bob"], data: data).status == 1)
    }
}
