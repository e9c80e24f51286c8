// Review of the `eventstore` admin tool's output and the AccountLedger example's input and verify.
import EventStore
import EventStoreKV
import Foundation
import ProcessSupport
import Testing

@Suite("Tool review: eventstore output, AccountLedger input and verify")
final class ToolReviewTests {
    private let scratch: String
    init() throws { scratch = try ToolRunner.temporaryDirectory() }
    deinit { try? FileManager.default.removeItem(atPath: scratch) }

    private func tool(_ arguments: [String]) async throws -> ToolResult {
        try await ToolRunner.run("eventstore", arguments)
    }
    private func ledger(_ arguments: [String], data: String) async throws -> ToolResult {
        try await ToolRunner.run("AccountLedger", arguments + ["--data", data])
    }
    /// A store holding `events` (type, data) in `stream`.
    private func makeStore(_ stream: String, _ events: [(String, Data)]) async throws -> String {
        let directory = try ToolRunner.temporaryDirectory(under: scratch) + "/store"
        let store = try KeyValueEventStore.open(directory: directory)
        _ = try await store.append(
            events.map { EventData(type: $0.0, data: $0.1) }, to: try StreamName(stream), expectedVersion: .any)
        try await store.close()
        return directory
    }
    private func jsonLines(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }
    /// The JSON object `read --json` prints for one event holding `bytes`.
    private func shownEvent(_ bytes: Data) async throws -> [String: Any] {
        let directory = try await makeStore("blob-1", [("Happened", bytes)])
        return try #require(try jsonLines(try await tool(["read", directory, "blob-1", "--json"]).output).first)
    }

    @Test("read --json shows the stored bytes exactly and unambiguously")
    func dataShownExactly() async throws {
        let bom = Data([0xEF, 0xBB, 0xBF]) + Data("{\"a\":1}".utf8)
        let shownBOM = try #require(try await shownEvent(bom)["data"] as? String)
        #expect(Data(shownBOM.utf8) == bom, "stored \(Array(bom)), shown \(Array(shownBOM.utf8))")
        // Bytes that are not UTF-8 are shown as base64 under their own key, so no text can be taken for them.
        let binary = try await shownEvent(Data([0xFF, 0x00]))  // not UTF-8
        let text = try await shownEvent(Data("base64:/wA=".utf8))  // UTF-8 text
        #expect(binary["dataBase64"] as? String == "/wA=" && binary["data"] == nil, "binary shown as \(binary)")
        #expect(text["data"] as? String == "base64:/wA=" && text["dataBase64"] == nil, "text shown as \(text)")
    }

    @Test("read's table prints one line per event, even when the data or type holds a newline")
    func tableOneLinePerEvent() async throws {
        let pretty = Data("{\n  \"amount\": 5\n}".utf8)
        let directory = try await makeStore("pretty-1", [("Happened", pretty), ("Two\nLines", Data("{}".utf8))])
        let result = try await tool(["read", directory, "pretty-1"])
        let lines = result.output.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(lines.count == 3, "a header and two events, got:\n\(result.output)")
    }

    @Test("delete --hard tombstones a soft-deleted stream, whether or not it has metadata")
    func hardDeleteAfterSoftDelete() async throws {
        let directory = try await makeStore("order-1", [("Happened", Data("{}".utf8))])
        #expect(try await tool(["delete", directory, "order-1"]).status == 0)
        let hard = try await tool(["delete", directory, "order-1", "--hard"])
        #expect(hard.status == 0, "exit \(hard.status): \(hard.errors)")
        // With metadata set before the soft delete, the same hard delete succeeds.
        let other = try await makeStore("order-2", [("Happened", Data("{}".utf8))])
        #expect(try await tool(["metadata", other, "order-2", "--max-count", "5"]).status == 0)
        #expect(try await tool(["delete", other, "order-2"]).status == 0)
        #expect(try await tool(["delete", other, "order-2", "--hard"]).status == 0)
    }

    @Test("metadata shows a maxAge set in milliseconds exactly, not truncated to whole seconds")
    func maxAgeShownExactly() async throws {
        let directory = try await makeStore("session-1", [("Happened", Data("{}".utf8))])
        let store = try KeyValueEventStore.open(directory: directory)
        try await store.setMetadata(StreamMetadata(maxAge: .milliseconds(500)), for: try StreamName("session-1"))
        try await store.close()
        let result = try await tool(["metadata", directory, "session-1", "--json"])
        let shown = try #require(try jsonLines(result.output).first?["maxAgeSeconds"] as? NSNumber)
        #expect(shown.doubleValue == 0.5, "a 500 ms maxAge is shown as \(shown) seconds")
    }

    @Test("a result that cannot be written (stdout on a full disk) is a failure with a message, not a crash")
    func fullStdout() async throws {
        let directory = try await makeStore("order-1", [("Happened", Data("{}".utf8))])
        let errorPath = scratch + "/stderr"
        let process = try ChildProcess(
            ToolRunner.executable("eventstore").path, ["info", directory], standardOutput: .file("/dev/full"),
            standardError: .file(errorPath))
        let ending = try await process.exited()
        let message = (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? ""
        #expect(ending == .exited(1), "\(ending): \(message.prefix(200))")
    }

    @Test("a ledger result that cannot be written (stdout on a full disk) is a failure, not silently lost")
    func ledgerFullStdout() async throws {
        let process = try ChildProcess(
            ToolRunner.executable("AccountLedger").path, ["open", "amy", "--data", scratch + "/ledger"],
            standardOutput: .file("/dev/full"), standardError: .discard)
        #expect(try await process.exited() == .exited(1))
    }

    // MARK: AccountLedger

    @Test("demo --initial-balance is used, or refused, never silently ignored")
    func demoInitialBalance() async throws {
        let data = scratch + "/ledger"
        let demo = try await ledger(["demo", "--accounts", "2", "--transfers", "0", "--initial-balance", "7"], data: data)
        if demo.status == 2 { return }  // refused: fine
        let balance = try await ledger(["balance", "demo-0000"], data: data)
        #expect(balance.output == "demo-0000: 0.07\n", "--initial-balance 7 was accepted, but: \(balance.output)")
    }

    @Test("demo --crash-test fails when its child cannot run the workload, instead of passing every kill")
    func crashTestIgnoresChildFailure() async throws {
        let data = scratch + "/ledger"
        // demo-0000 is hard-deleted, so the workload cannot open it: every demo run fails at once.
        #expect(try await ledger(["open", "demo-0000"], data: data).status == 0)
        #expect(try await tool(["delete", data, "account-demo-0000", "--hard"]).status == 0)
        let demo = try await ledger(["demo", "--accounts", "2", "--transfers", "10"], data: data)
        #expect(demo.status == 1, "the workload itself fails: \(demo.errors)")
        let crash = try await ledger(["demo", "--accounts", "2", "--crash-test", "2"], data: data)
        #expect(crash.status != 0, "the crash test passed although its child never ran a transfer:\n\(crash.output)")
    }

    @Test("open with an invalid account name is a usage error that leaves no new ledger behind")
    func invalidNameCreatesNothing() async throws {
        let data = scratch + "/typo"
        #expect(try await ledger(["open", "a b"], data: data).status == 2)
        #expect(!FileManager.default.fileExists(atPath: data), "a refused open created a ledger at \(data)")
        #expect(try await ledger(["verify"], data: data).status != 0, "verify passes on the ledger left behind")
    }

    private func appendToAccount(_ name: String, _ events: [(String, String)], data: String) async throws {
        let store = try KeyValueEventStore.open(directory: data)
        _ = try await store.append(
            events.map { EventData(type: $0.0, data: Data($0.1.utf8)) }, to: try StreamName("account-\(name)"),
            expectedVersion: .any)
        try await store.close()
    }

    @Test("verify fails when a transfer's credit lands on an account other than the one debited for")
    func verifyCreditToWrongAccount() async throws {
        let data = scratch + "/ledger"
        #expect(try await ledger(["open", "amy", "--initial", "1000"], data: data).status == 0)
        #expect(try await ledger(["open", "bob"], data: data).status == 0)
        #expect(try await ledger(["open", "carl"], data: data).status == 0)
        // Wrong data: amy is debited 400 for a transfer to bob, but the credit is in carl's stream, "from" zed.
        let transfer = UUID().uuidString
        try await appendToAccount(
            "amy", [("TransferDebited", #"{"transfer":"\#(transfer)","to":"bob","amount":400}"#)], data: data)
        try await appendToAccount(
            "carl", [("TransferCredited", #"{"transfer":"\#(transfer)","from":"zed","amount":400}"#)], data: data)
        #expect(try await ledger(["balance", "bob"], data: data).output == "bob: 0.00\n")
        let verify = try await ledger(["verify"], data: data)
        #expect(verify.status == 1, "verify passed although bob never got amy's transfer:\n\(verify.output)")
    }

    @Test("an account whose stored events sum past Int64.max is reported, not a trap")
    func storedOverflowDoesNotTrap() async throws {
        let data = scratch + "/ledger"
        #expect(try await ledger(["open", "amy"], data: data).status == 0)
        try await appendToAccount(
            "amy", [("Deposited", #"{"amount":9223372036854775807}"#), ("Deposited", #"{"amount":1}"#)], data: data)
        for command in [["balance", "amy"], ["verify"]] {
            let result = try await ledger(command, data: data)
            #expect(result.status == 1, "\(command): exit \(result.status): \(result.errors.prefix(200))")
        }
    }
}
