// The ledger bounds each amount (at most 10^15 cents) and, since the seventh session's review, every balance and
// running total: a deposit that took a balance past Int64.max used to be appended, and then the process trapped
// while folding it, and on every later load of the account. Now it is refused, and nothing is stored.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("AccountLedger: balances stay within what an Int64 holds")
struct LedgerBalanceLimitTests {
    private func ledger(_ arguments: [String], data: String) async throws -> ToolResult {
        try await ToolRunner.run("AccountLedger", arguments + ["--data", data])
    }

    @Test("a deposit that would overflow a balance is refused, and the account stays readable")
    func balanceOverflow() async throws {
        let data = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let maximum = "1000000000000000"  // Cents.maximum, accepted for every single amount
        #expect(try await ledger(["open", "whale", "--initial", maximum], data: data).status == 0)

        // Stand-in for 9,222 further `deposit whale 1000000000000000` commands (each is valid input): copy the
        // stored Deposited event, so the balance is 9,223 x 10^15 cents, just under Int64.max (9.22 x 10^18).
        do {
            let store = try KeyValueEventStore.open(directory: data)
            let stream = try StreamName("account-whale")
            let deposit = try #require(try await store.read(stream).first { $0.type == "Deposited" })
            var remaining = 9_222
            while remaining > 0 {
                let count = min(remaining, 1_000)
                let events = (0..<count).map { _ in EventData(type: deposit.type, data: deposit.data) }
                _ = try await store.append(events, to: stream, expectedVersion: .any)
                remaining -= count
            }
            try await store.close()
        }
        let before = try await ledger(["balance", "whale"], data: data)
        #expect(before.status == 0, "\(before.errors)")
        #expect(before.output == "whale: 92230000000000000.00\n")

        // One more valid deposit would pass Int64.max: it is refused with a message, never trapping after appending.
        let deposit = try await ledger(["deposit", "whale", maximum], data: data)
        #expect(deposit.status == 1, "deposit exited with \(deposit.status): \(deposit.errors)")
        #expect(deposit.errors.contains("cannot hold more"), "\(deposit.errors)")
        let stored = try KeyValueEventStore.open(directory: data)
        let version = try await stored.version(of: try StreamName("account-whale"))
        try await stored.close()
        #expect(version == 9_224, "the refused deposit must not be stored; the stream is at \(version)")
        let after = try await ledger(["balance", "whale"], data: data)
        #expect(after.status == 0, "the account can no longer be read: exit \(after.status) \(after.errors)")
    }
}
