// `eventstore` defects found in the eighth session's review, each of which failed before its fix:
// - `info` reported the last global position as the number of events, wrong after a scavenge;
// - `metadata` with a refused value opened the store for writing first, whose open wrote a checkpoint: a usage
//   error rewrote the data file and the WAL;
// - a stream with metadata and no events yet was "unknown" to `metadata`, although requireExisting said otherwise;
// - `backup` to a destination that is a file exited 3 ("not a store"), and one holding other files was written into;
// - a stream whose name starts with `--` could not be named (no `--` to end the options);
// - an argument that is not UTF-8 reached the tool repaired, so a store in such a directory was "bad\u{FFFD}name does
//   not exist".

import EventStore
import EventStoreKV
import Foundation
import ProcessSupport
import Testing

@Suite("eventstore: info counts, refused metadata, streams with only metadata, backup destinations")
final class AdminToolReviewedEdgeTests {
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

    /// A store with account-1 (3 events), account-2 (2) and order-1 (1).
    private func makeStore() async throws -> String {
        let directory = try ToolRunner.temporaryDirectory(under: scratch) + "/store"
        let store = try KeyValueEventStore.open(directory: directory)
        for (name, count) in [("account-1", 3), ("account-2", 2), ("order-1", 1)] {
            let events = (1...count).map { EventData(type: "Happened", data: Data("{\"n\":\($0)}".utf8)) }
            _ = try await store.append(events, to: try StreamName(name), expectedVersion: .any)
        }
        try await store.close()
        return directory
    }

    private func json(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    @Test("info counts the events stored, not the last position, after a scavenge")
    func infoCountsEvents() async throws {
        let directory = try await makeStore()
        #expect(try await tool(["metadata", directory, "account-1", "--max-count", "1"]).status == 0)
        #expect(try json(try await tool(["scavenge", directory, "--json"]).output).first?["eventsRemoved"] as? Int == 2)
        let info = try #require(try json(try await tool(["info", directory, "--json"]).output).first)
        #expect(info["events"] as? Int == 4)
        #expect(info["lastPosition"] as? Int == 6)
    }

    @Test("a refused metadata value is a usage error that changes no byte of the store")
    func refusedMetadataTouchesNothing() async throws {
        let directory = try await makeStore()
        let files = { try ["data", "wal"].map { try Data(contentsOf: URL(fileURLWithPath: directory + "/" + $0)) } }
        let before = try files()
        for option in [["--max-count", "0"], ["--max-age", "0"], ["--max-age", "18446744073709551615"]] {
            let result = try await tool(["metadata", directory, "account-1"] + option)
            #expect(result.status == 2, "\(option): \(result.errors)")
        }
        #expect(try files() == before, "a refused invocation rewrote the data file or the WAL")
    }

    @Test("a stream with metadata and no events yet can be shown and changed")
    func streamWithOnlyMetadata() async throws {
        let directory = try await makeStore()
        do {
            let store = try KeyValueEventStore.open(directory: directory)
            try await store.setMetadata(StreamMetadata(maxCount: 5), for: try StreamName("audit-1"))
            try await store.close()
        }
        let shown = try await tool(["metadata", directory, "audit-1", "--json"])
        #expect(shown.status == 0, "\(shown.errors)")
        #expect(try json(shown.output).first?["maxCount"] as? Int == 5)
        #expect(try await tool(["metadata", directory, "audit-1", "--max-count", "7"]).status == 0)
        #expect(try await tool(["metadata", directory, "audit-2"]).status == 5)
    }

    @Test("after --, a stream whose name starts with -- can be read and given metadata")
    func doubleDashEndsOptions() async throws {
        let directory = try await makeStore()
        do {
            let store = try KeyValueEventStore.open(directory: directory)
            _ = try await store.append(
                [EventData(type: "Happened", data: Data("{}".utf8))], to: try StreamName("--json"), expectedVersion: .any)
            try await store.close()
        }
        let read = try await tool(["read", "--json", directory, "--", "--json"])
        #expect(read.status == 0, "\(read.errors)")
        #expect(try json(read.output).count == 1)
        #expect(try await tool(["metadata", directory, "--max-count", "3", "--", "--json"]).status == 0)
        #expect(try await tool(["read", directory, "--json"]).status == 2, "without --, --json is the flag")
    }

    @Test("an argument that is not valid UTF-8 is a usage error naming it, whatever the command")
    func nonUTF8Argument() async throws {
        let scratch = try ToolRunner.temporaryDirectory(under: self.scratch)
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let tool = try ToolRunner.executable("eventstore").path
        // printf makes the raw byte 0xFF, which Swift's [String] arguments cannot carry.
        let process = try ChildProcess(
            "/bin/sh", ["-c", #"exec "$0" info "$1/$(printf 'bad\377name')""#, tool, scratch],
            standardOutput: .discard, standardError: .file(scratch + "/stderr"))
        let ending = try await process.exited()
        let message = (try? String(contentsOfFile: scratch + "/stderr", encoding: .utf8)) ?? ""
        #expect(ending == .exited(2), "\(message)")
        #expect(message.contains("argument 2 is not valid UTF-8"), "\(message)")
    }

    @Test("backup refuses a file or a non-empty directory as its destination, with a failure naming it")
    func backupDestinations() async throws {
        let directory = try await makeStore()
        let scratch = try ToolRunner.temporaryDirectory(under: self.scratch)
        let file = scratch + "/file"
        #expect(FileManager.default.createFile(atPath: file, contents: Data("x".utf8)))
        let toFile = try await tool(["backup", directory, file])
        #expect(toFile.status == 1 && toFile.errors.contains("\(file) is a file"), "\(toFile.status): \(toFile.errors)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: file)) == Data("x".utf8))

        let occupied = scratch + "/occupied"
        try FileManager.default.createDirectory(atPath: occupied, withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: occupied + "/wal", contents: Data("mine".utf8)))
        let toOccupied = try await tool(["backup", directory, occupied])
        #expect(toOccupied.status == 1 && toOccupied.errors.contains("is not empty"), "\(toOccupied.errors)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: occupied + "/wal")) == Data("mine".utf8))

        let empty = scratch + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        #expect(try await tool(["backup", directory, empty]).status == 0)
        #expect(try await tool(["backup", directory, scratch + "/new"]).status == 0)
    }
}
