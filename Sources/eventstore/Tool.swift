// Tool: the command table, usage text and dispatch.
//
// Invariant: a command either completes and returns its status, or throws a ToolError that run(_:) prints as one
// line on stderr; nothing else ends the process.

import Foundation

/// The `eventstore` command line.
enum Tool {
    /// One command: its usage line and what it runs.
    struct Command: Sendable {
        var usage: String
        var summary: String
        var run: @Sendable ([String], Bool) async throws -> ToolExit
    }

    static let commands: [(String, Command)] = [
        ("info", Command(usage: "info <dir>", summary: "format, sizes, streams, events, last position", run: Inspection.info)),
        ("verify", Command(usage: "verify <dir>", summary: "check every page; exit 1 if anything is wrong", run: Inspection.verify)),
        ("streams", Command(usage: "streams <dir> [--prefix P]", summary: "streams and their versions", run: Inspection.streams)),
        ("read", Command(
            usage: "read <dir> <stream> [--from N] [--backward] [--limit N]", summary: "events of a stream",
            run: Inspection.read)),
        ("tail", Command(usage: "tail <dir> [--from P] [--follow]", summary: "the global log", run: Inspection.tail)),
        ("backup", Command(usage: "backup <dir> <dest>", summary: "a consistent copy of the store", run: Maintenance.backup)),
        ("compact", Command(usage: "compact <dir>", summary: "return free pages to the file system", run: Maintenance.compact)),
        ("metadata", Command(
            usage: "metadata <dir> <stream> [--max-count N] [--max-age S] [--truncate-before V]",
            summary: "show or set a stream's retention", run: Maintenance.metadata)),
        ("delete", Command(usage: "delete <dir> <stream> [--hard]", summary: "delete a stream", run: Maintenance.delete)),
        ("scavenge", Command(usage: "scavenge <dir>", summary: "remove hidden events and reclaim space", run: Maintenance.scavenge)),
    ]

    /// Runs the command line `words` and returns the exit status.
    static func run(_ words: [String]) async -> ToolExit {
        guard let name = words.first, !["help", "--help", "-h"].contains(name) else {
            _ = Output.writeAll(usage, to: STDERR_FILENO)
            return words.isEmpty ? .usage : .success
        }
        guard let command = commands.first(where: { $0.0 == name })?.1 else {
            Output.progress("unknown command \"\(name)\"")
            _ = Output.writeAll(usage, to: STDERR_FILENO)
            return .usage
        }
        var rest = Array(words.dropFirst())
        // --json may come anywhere before a `--` (after it, a word is a positional, even "--json").
        let optionsEnd = rest.firstIndex(of: "--") ?? rest.endIndex
        let json = rest[..<optionsEnd].contains("--json")
        rest = rest[..<optionsEnd].filter { $0 != "--json" } + rest[optionsEnd...]
        do {
            return try await command.run(rest, json)
        } catch {
            let failure = ToolError.from(error)
            Output.progress(failure.message)
            if failure.status == .usage { Output.progress("usage: eventstore \(command.usage) [--json]") }
            return failure.status
        }
    }

    static var usage: String {
        let lines = commands.map { "  eventstore \($0.1.usage)\n      \($0.1.summary)" }
        return """
            usage: eventstore <command> <dir> [arguments] [--json]
            \(lines.joined(separator: "\n"))
            Read-only commands (info, verify, streams, read, tail, metadata without options) never change the store;
            they and backup run beside an application that has it open, and the others are refused (exit 4) while it
            does.
            Exit status: 0 ok, 1 check or operation failed, 2 usage, 3 not a store, 4 store locked, 5 unknown or
            deleted stream.

            """
    }
}
