// The `eventstore` admin tool, driven through its command line against stores the tests make: every command's
// output and exit status, the error cases (not a store, locked, unknown stream, bad usage), and proof that the
// read-only commands leave the store's files byte for byte unchanged.

import EventStore
@testable import EventStoreKV
import Foundation
import ProcessSupport
import Testing

@Suite("eventstore admin tool", .timeLimit(.minutes(5)))
final class AdminToolTests {
    /// Holds every directory this test makes; `deinit` removes it when the test is over.
    private let scratch: String

    init() throws {
        scratch = try ToolRunner.temporaryDirectory()
    }

    deinit {
        try? FileManager.default.removeItem(atPath: scratch)
    }

    private func tool(_ arguments: [String]) async throws -> ToolResult {
        try await ToolRunner.run("eventstore", arguments)
    }

    /// A store with accounts `account-1` (3 events) and `account-2` (2 events) and `order-1` (1 event).
    private func makeStore(checkpoint: Bool = true) async throws -> String {
        let directory = try ToolRunner.temporaryDirectory(under: scratch) + "/store"
        let engine = try await PageFileKeyValueStore.open(directory: directory)
        let store = KeyValueEventStore(backend: engine)
        for (name, count) in [("account-1", 3), ("account-2", 2), ("order-1", 1)] {
            let events = (1...count).map { EventData(type: "Happened", data: Data("{\"n\":\($0)}".utf8)) }
            _ = try await store.append(events, to: try StreamName(name), expectedVersion: .any)
        }
        if checkpoint {
            try await engine.close()
        } else {
            await engine.closeWithoutCheckpoint()
        }
        return directory
    }

    private func jsonLines(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    private func fileBytes(_ directory: String) throws -> [Data] {
        try ["data", "wal"].map { try Data(contentsOf: URL(fileURLWithPath: directory + "/" + $0)) }
    }

    @Test("info reports the format, sizes, streams, events and last position")
    func info() async throws {
        let directory = try await makeStore()
        let table = try await tool(["info", directory])
        #expect(table.status == 0, "\(table.errors)")
        #expect(table.output.contains("formatVersion"))
        #expect(table.output.contains("pageSize                8192"))
        let json = try #require(try jsonLines(try await tool(["info", directory, "--json"]).output).first)
        #expect(json["streams"] as? Int == 3)
        #expect(json["events"] as? Int == 6)
        #expect(json["lastPosition"] as? Int == 6)
        #expect(json["formatVersion"] as? Int == 1)
        #expect((json["pages"] as? Int ?? 0) > 0)
        #expect(json["pagesUsed"] as? Int == (json["pages"] as? Int ?? -1) - (json["pagesFree"] as? Int ?? -1))
        #expect(json["durability"] is String && json["walBytes"] is Int)
    }

    @Test("verify passes on a sound store and fails with exit 1 on a damaged page")
    func verify() async throws {
        let directory = try await makeStore()
        let good = try await tool(["verify", directory])
        #expect(good.status == 0, "\(good.output)\(good.errors)")
        #expect(good.output.contains("status         ok"))
        #expect(good.errors.contains("walking every page"), "progress goes to stderr")
        let json = try #require(try jsonLines(try await tool(["verify", directory, "--json"]).output).first)
        #expect(json["status"] as? String == "ok")
        #expect((json["problems"] as? [String]) == [])

        // Damage the page after the two meta pages (a tree page): its checksum no longer matches.
        let data = try FileHandle(forUpdating: URL(fileURLWithPath: directory + "/data"))
        try data.seek(toOffset: 2 * 8192 + 100)
        data.write(Data(repeating: 0xA5, count: 64))
        try data.close()
        let bad = try await tool(["verify", directory])
        #expect(bad.status == 1, "\(bad.output)\(bad.errors)")
        #expect(bad.output.contains("problems found"), "\(bad.output)")
        let badJSON = try await tool(["verify", directory, "--json"])
        #expect(badJSON.status == 1)
        let problems = try #require(try jsonLines(badJSON.output).first?["problems"] as? [String])
        #expect(problems.contains { $0.contains("page 2") }, "the report names where the damage is: \(problems)")
    }

    @Test("streams lists streams with versions, filtered by prefix")
    func streams() async throws {
        let directory = try await makeStore()
        let all = try await tool(["streams", directory])
        #expect(all.status == 0)
        let rows = all.output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        #expect(rows == [["stream", "version"], ["account-1", "3"], ["account-2", "2"], ["order-1", "1"]])
        let accounts = try jsonLines(try await tool(["streams", directory, "--prefix", "account-", "--json"]).output)
        #expect(accounts.map { $0["stream"] as? String } == ["account-1", "account-2"])
        #expect(accounts.map { $0["version"] as? Int } == [3, 2])
    }

    @Test("read shows a stream's events forward, backward, from a version and limited")
    func read() async throws {
        let directory = try await makeStore()
        let forward = try jsonLines(try await tool(["read", directory, "account-1", "--json"]).output)
        #expect(forward.map { $0["version"] as? Int } == [1, 2, 3])
        #expect(forward.map { $0["data"] as? String } == ["{\"n\":1}", "{\"n\":2}", "{\"n\":3}"])
        #expect(forward.allSatisfy { $0["type"] as? String == "Happened" && $0["stream"] as? String == "account-1" })
        let backward = try jsonLines(
            try await tool(["read", directory, "account-1", "--backward", "--limit", "2", "--json"]).output)
        #expect(backward.map { $0["version"] as? Int } == [3, 2])
        let from = try jsonLines(try await tool(["read", directory, "account-1", "--from=2", "--json"]).output)
        #expect(from.map { $0["version"] as? Int } == [2, 3])
        let table = try await tool(["read", directory, "account-2"])
        #expect(table.status == 0)
        #expect(table.output.split(separator: "\n").count == 3)
        #expect(table.output.hasPrefix("position"))
    }

    @Test("tail prints the global log from a position")
    func tail() async throws {
        let directory = try await makeStore()
        let all = try jsonLines(try await tool(["tail", directory, "--json"]).output)
        #expect(all.map { $0["position"] as? Int } == [1, 2, 3, 4, 5, 6])
        let later = try jsonLines(try await tool(["tail", directory, "--from", "5", "--json"]).output)
        #expect(later.map { $0["position"] as? Int } == [5, 6])
        #expect(later.map { $0["stream"] as? String } == ["account-2", "order-1"])
    }

    /// Starts `eventstore tail <directory> --follow --json` and collects what it prints.
    private func follow(_ directory: String) throws -> (ChildProcess, LineCollector) {
        let process = try ChildProcess(
            ToolRunner.executable("eventstore").path, ["tail", directory, "--follow", "--json"],
            standardOutput: .pipe, standardError: .discard)
        return (process, LineCollector(try #require(process.standardOutput)))
    }

    @Test("tail --follow prints the log, then waits for more instead of exiting")
    func tailFollow() async throws {
        let directory = try await makeStore()
        let (process, lines) = try follow(directory)
        defer { process.send(SIGTERM) }
        #expect(await lines.wait(for: 6), "\(lines.text)")
        // The process must still be running (it follows), then stop it.
        #expect(process.isRunning, "--follow keeps waiting for new events")
        process.send(SIGTERM)
        _ = try await process.exited()
    }

    @Test("tail --follow prints what another process appends, across that writer's checkpoints")
    func tailFollowsAWriter() async throws {
        let directory = try await makeStore()
        let holder = try await PageFileKeyValueStore.open(directory: directory)
        let store = KeyValueEventStore(backend: holder)
        let (process, lines) = try follow(directory)
        defer { process.send(SIGTERM) }
        #expect(await lines.wait(for: 6), "the six events already stored: \(lines.text)")
        let stream = try StreamName("order-9")
        for round in 1...3 {
            let events = (1...2).map { EventData(type: "Happened", data: Data("{\"round\":\(round),\"n\":\($0)}".utf8)) }
            _ = try await store.append(events, to: stream, expectedVersion: .any)
            #expect(await lines.wait(for: 6 + 2 * round), "round \(round): \(lines.text)")
            // Two checkpoints would let the writer reuse the pages of an unpinned snapshot; the follower's is pinned,
            // and it moves on to the newest checkpoint by refresh().
            try await holder.checkpoint()
            try await holder.checkpoint()
        }
        let printed = try jsonLines(lines.text)
        #expect(printed.map { $0["position"] as? Int } == Array(1...12))
        #expect(printed.suffix(6).map { $0["stream"] as? String } == Array(repeating: "order-9", count: 6))
        #expect(process.isRunning)
        process.send(SIGTERM)
        _ = try await process.exited()
        try await holder.close()
    }

    @Test("info on a store whose free list names more pages than the file has reports damage instead of trapping")
    func infoWithAnImpossibleFreeList() async throws {
        let directory = try await makeStore()
        // A newer meta whose free list, one page appended to the file, names every page a free-list page can hold.
        let data = try #require(FileHandle(forUpdatingAtPath: directory + "/data"))
        let head = try #require(try data.readToEnd())
        let pageSize = 8192
        let current = try #require(
            (0..<2).compactMap { slot in
                MetaPage.decode(
                    Array(head[(slot * pageSize)..<((slot + 1) * pageSize)]), slot: UInt64(slot), pageSize: pageSize, path: "")
            }.max { $0.epoch < $1.epoch })
        let listPage = current.pageCount
        let entries = Array(repeating: UInt64(2), count: FreeList.capacity(pageSize: pageSize))
        var next = current
        next.epoch += 1
        next.freeListHead = listPage
        next.pageCount = listPage + 1
        try data.seek(toOffset: listPage * UInt64(pageSize))
        try data.write(contentsOf: Data(FreeList.encode(entries, into: [listPage], lsn: current.checkpointLSN, pageSize: pageSize)[0]))
        try data.seek(toOffset: (next.epoch % 2) * UInt64(pageSize))
        try data.write(contentsOf: Data(next.encoded()))
        try data.close()
        let info = try await tool(["info", directory])
        #expect(info.status == 1, "\(info.errors)")
        #expect(info.errors.contains("corrupted") && !info.errors.contains("runtime failure"), "\(info.errors)")
    }

    @Test("a reader killed with SIGKILL holds no pin: the writer sees it go and may reuse its pages")
    func killedReaderLeavesNoPin() async throws {
        let directory = try await makeStore()
        let holder = try await PageFileKeyValueStore.open(directory: directory)
        let (process, lines) = try follow(directory)
        defer { process.send(SIGTERM) }
        #expect(await lines.wait(for: 6), "\(lines.text)")
        #expect(try holder.statistics().oldestPinnedCheckpoint != nil, "the follower pins its snapshot")
        await process.kill()
        #expect(try holder.statistics().oldestPinnedCheckpoint == nil)
        try await holder.close()
    }

    @Test("tail beside a writer that checkpoints every 150 ms prints the log as it was, each position once, and exits 0")
    func tailBesideACheckpointingWriter() async throws {
        let directory = try ToolRunner.temporaryDirectory(under: scratch) + "/store"
        var options = PageFileOptions(pageSize: 4096, checkpointThresholdMB: 1)
        options.durability = .none
        let engine = try await PageFileKeyValueStore.open(directory: directory, options: options)
        let store = KeyValueEventStore(backend: engine)
        let payload = Data(String(repeating: "y", count: 300).utf8)
        for batch in 0..<200 {
            let events = (0..<100).map { _ in EventData(type: "Happened", data: payload) }
            _ = try await store.append(events, to: try StreamName("s-\(batch % 10)"), expectedVersion: .any)
        }
        // Appends every few milliseconds and a checkpoint about every 150 ms: a tail of 20,000 events meets several,
        // which its pinned snapshot does not notice.
        let writing = Task {
            var round = 0
            while !Task.isCancelled {
                round += 1
                _ = try await store.append(
                    [EventData(type: "More", data: payload)], to: try StreamName("s-\(round % 10)"), expectedVersion: .any)
                if round % 60 == 0 { try await engine.checkpoint() }
                try await Task.sleep(for: .milliseconds(2))
            }
        }
        let tail = try await tool(["tail", directory, "--json"])
        writing.cancel()
        _ = await writing.result
        try await engine.close()
        #expect(tail.status == 0, "\(tail.errors)")
        let positions = try jsonLines(tail.output).compactMap { $0["position"] as? Int }
        #expect(positions.count >= 20_000)
        // (A tail that printed nothing must fail here, not trap the test process with the range 1...0.)
        let last = positions.last ?? 0
        #expect(positions == (last >= 1 ? Array(1...last) : []), "every position once, in order")
    }

    @Test("read-only commands leave the data file and the WAL byte for byte unchanged, even with WAL to replay")
    func readOnlyCommandsChangeNothing() async throws {
        for checkpointed in [true, false] {
            let directory = try await makeStore(checkpoint: checkpointed)
            let before = try fileBytes(directory)
            let info = try await tool(["info", directory, "--json"])
            let facts = try #require(try jsonLines(info.output).first)
            #expect(facts["events"] as? Int == 6, "WAL records are replayed in memory: \(info.output)")
            if !checkpointed { #expect((facts["pendingWALTransactions"] as? Int ?? 0) > 0) }
            for command in [
                ["verify", directory], ["streams", directory], ["read", directory, "account-1"], ["tail", directory],
                ["metadata", directory, "account-1"],
            ] {
                let result = try await tool(command)
                #expect(result.status == 0, "\(command): \(result.errors)")
            }
            #expect(try fileBytes(directory) == before, "checkpointed: \(checkpointed)")
        }
    }

    @Test("a missing directory or one that is not a store is refused with exit 3 and nothing is created")
    func notAStore() async throws {
        let parent = try ToolRunner.temporaryDirectory(under: scratch)
        let missing = parent + "/missing"
        for command in ["info", "verify", "streams", "tail", "compact", "scavenge"] {
            let result = try await tool([command, missing])
            #expect(result.status == 3, "\(command): \(result.errors)")
            #expect(result.errors.contains("does not exist"))
        }
        #expect(!FileManager.default.fileExists(atPath: missing))
        let empty = parent + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        let result = try await tool(["info", empty])
        #expect(result.status == 3)
        #expect(result.errors.contains("not an EventStore store"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: empty).isEmpty)
        let file = parent + "/file"
        #expect(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
        #expect(try await tool(["verify", file]).status == 3)
    }

    @Test("writing commands are refused with exit 4 while another process writes the store; reading ones and backup run beside it")
    func locked() async throws {
        let directory = try await makeStore()
        let holder = try await PageFileKeyValueStore.open(directory: directory)
        let store = KeyValueEventStore(backend: holder)
        let appended = EventData(type: "Happened", data: Data("{\"n\":7}".utf8))
        _ = try await store.append([appended], to: try StreamName("order-2"), expectedVersion: .noStream)
        for command in [["compact", directory], ["scavenge", directory], ["delete", directory, "order-1"]] {
            let result = try await tool(command)
            #expect(result.status == 4, "\(command): \(result.errors)")
            #expect(result.errors.contains("locked by process \(ProcessInfo.processInfo.processIdentifier)"))
        }
        let facts = try #require(try jsonLines(try await tool(["info", directory, "--json"]).output).first)
        #expect(facts["events"] as? Int == 7, "the writer's acknowledged append, still only in its WAL: \(facts)")
        let read = try jsonLines(try await tool(["read", directory, "order-2", "--json"]).output)
        #expect(read.map { $0["data"] as? String } == ["{\"n\":7}"])
        #expect(try await tool(["verify", directory]).status == 0)
        let copy = try ToolRunner.temporaryDirectory(under: scratch) + "/copy"
        let backup = try await tool(["backup", directory, copy])
        #expect(backup.status == 0, "\(backup.errors)")
        let copied = try #require(try jsonLines(try await tool(["info", copy, "--json"]).output).first)
        #expect(copied["events"] as? Int == 7, "the copy holds the append that was only in the WAL: \(copied)")
        try await holder.close()
    }

    @Test("an unknown stream gets exit 5 for read, metadata and delete, and nothing changes")
    func unknownStream() async throws {
        let directory = try await makeStore()
        let before = try fileBytes(directory)
        for command in [
            ["read", directory, "nobody"], ["metadata", directory, "nobody"],
            ["metadata", directory, "nobody", "--max-count", "3"], ["delete", directory, "nobody"],
        ] {
            let result = try await tool(command)
            #expect(result.status == 5, "\(command): \(result.errors)")
            #expect(result.errors.contains("no stream named nobody"))
        }
        #expect(try fileBytes(directory) == before)
    }

    @Test("bad usage gets exit 2 and a usage line")
    func usage() async throws {
        let directory = try await makeStore()
        let cases: [[String]] = [
            [], ["frobnicate", directory], ["info"], ["info", directory, "extra"], ["read", directory, "account-1", "--limit", "x"],
            ["streams", directory, "--bogus"], ["read", directory, "account-1", "--limit"], ["read", directory, String(repeating: "x", count: 300)],
            ["delete", directory, "$all"],
        ]
        for command in cases {
            let result = try await tool(command)
            #expect(result.status == 2, "\(command): \(result.errors)")
            #expect(result.errors.contains("usage"), "\(command): \(result.errors)")
        }
        #expect(try await tool(["help"]).status == 0)
    }

    @Test("metadata shows and sets retention; scavenge then removes the hidden events")
    func metadataAndScavenge() async throws {
        let directory = try await makeStore()
        let empty = try #require(try jsonLines(try await tool(["metadata", directory, "account-1", "--json"]).output).first)
        #expect(empty["maxCount"] is NSNull && empty["maxAgeSeconds"] is NSNull && empty["truncateBefore"] is NSNull)
        #expect(empty["version"] as? Int == 0, "metadata never set is at version 0")
        let set = try await tool(["metadata", directory, "account-1", "--max-count", "1", "--max-age", "3600"])
        #expect(set.status == 0, "\(set.errors)")
        let shown = try #require(try jsonLines(try await tool(["metadata", directory, "account-1", "--json"]).output).first)
        #expect(shown["maxCount"] as? Int == 1)
        #expect(shown["maxAgeSeconds"] as? Int == 3600)
        #expect(shown["version"] as? Int == 1, "one change, one version")
        #expect(try jsonLines(try await tool(["read", directory, "account-1", "--json"]).output).map {
            $0["version"] as? Int
        } == [3])
        let scavenge = try await tool(["scavenge", directory, "--json"])
        #expect(scavenge.status == 0, "\(scavenge.errors)")
        #expect(scavenge.errors.contains("removing hidden events"))
        let report = try #require(try jsonLines(scavenge.output).first)
        #expect(report["eventsRemoved"] as? Int == 2)
        #expect(try await tool(["verify", directory]).status == 0)
    }

    @Test("delete soft-deletes a stream, --hard deletes it for good")
    func delete() async throws {
        let directory = try await makeStore()
        let soft = try await tool(["delete", directory, "account-2", "--json"])
        #expect(soft.status == 0, "\(soft.errors)")
        let report = try #require(try jsonLines(soft.output).first)
        #expect(report["mode"] as? String == "soft")
        #expect(report["position"] as? Int == 7)
        #expect(try await tool(["read", directory, "account-2"]).status == 5)
        let hard = try await tool(["delete", directory, "order-1", "--hard"])
        #expect(hard.status == 0, "\(hard.errors)")
        #expect(hard.output.contains("hard"))
        #expect(try await tool(["read", directory, "order-1"]).status == 5)
        let streams = try jsonLines(try await tool(["streams", directory, "--json"]).output)
        #expect(streams.compactMap { $0["stream"] as? String }.filter { !$0.hasPrefix("$") } == ["account-1"])
    }

    @Test("backup writes a store that verifies and holds the same events; compact keeps every event")
    func backupAndCompact() async throws {
        let directory = try await makeStore()
        let destination = try ToolRunner.temporaryDirectory(under: scratch) + "/copy"
        let backup = try await tool(["backup", directory, destination])
        #expect(backup.status == 0, "\(backup.errors)")
        #expect(backup.errors.contains("backing up"))
        #expect(try await tool(["verify", destination]).status == 0)
        #expect(try await tool(["tail", destination, "--json"]).output == (try await tool(["tail", directory, "--json"]).output))
        // Its size counts the backup's WAL too (a review found only the data file counted).
        let copied = ["/data", "/wal"].map { (try? FileManager.default.attributesOfItem(atPath: destination + $0)[.size] as? Int) ?? 0 }
        #expect(copied[1] > 0)
        let second = try ToolRunner.temporaryDirectory(under: scratch) + "/copy2"
        let sized = try #require(try jsonLines(try await tool(["backup", directory, second, "--json"]).output).first)
        #expect(sized["bytes"] as? Int == copied[0] + copied[1], "\(sized)")
        let again = try await tool(["backup", directory, destination])
        #expect(again.status == 1)
        #expect(again.errors.contains("already holds a store"))
        let compact = try await tool(["compact", directory, "--json"])
        #expect(compact.status == 0, "\(compact.errors)")
        let report = try #require(try jsonLines(compact.output).first)
        #expect((report["pagesAfter"] as? Int ?? .max) <= (report["pagesBefore"] as? Int ?? 0))
        #expect(try jsonLines(try await tool(["tail", directory, "--json"]).output).count == 6)
    }

    @Test("after an AccountLedger demo, info and verify work and verify exits 0")
    func afterLedgerDemo() async throws {
        let data = try ToolRunner.temporaryDirectory(under: scratch) + "/ledger"
        let demo = try await ToolRunner.run(
            "AccountLedger", ["demo", "--accounts", "5", "--transfers", "30", "--workers", "2", "--seed", "3", "--data", data])
        #expect(demo.status == 0, "\(demo.errors)")
        let info = try await tool(["info", data])
        #expect(info.status == 0, "\(info.errors)")
        #expect(info.output.contains("lastPosition"))
        let verify = try await tool(["verify", data])
        #expect(verify.status == 0, "\(verify.output)\(verify.errors)")
    }
}

/// Collects a child's output lines on a thread of its own; waits for them with a deadline, so a follower that
/// never prints fails the test instead of hanging it.
private final class LineCollector: Sendable {
    private let collected = Locked("")

    init(_ handle: FileHandle) {
        Thread { [collected] in
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { return }
                collected.withLock { $0 += String(decoding: chunk, as: UTF8.self) }
            }
        }.start()
    }

    var text: String { collected.withLock { $0 } }

    /// Whether `count` whole lines arrived within 20 seconds.
    func wait(for count: Int) async -> Bool {
        for _ in 0..<400 {
            if text.split(separator: "\n").count >= count, text.hasSuffix("\n") { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }
}
