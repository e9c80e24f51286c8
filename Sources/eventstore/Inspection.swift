// Inspection: the read-only commands (info, verify, streams, read, tail).
//
// Invariant: every command here opens the store read-only (StoreAccess), so it cannot change the data file or the
// WAL, whatever it finds; `verify` checks the last checkpoint as it is on disk.

import EventStore
import EventStoreKV
import Foundation

/// The read-only commands.
enum Inspection {
    /// Rows fetched per round trip when listing.
    static let pageSize = 1_000

    static func info(_ words: [String], _ json: Bool) async throws -> ToolExit {
        let arguments = try Arguments(words, flags: [], options: [], positionals: ["dir"])
        let directory = arguments.positionals[0]
        return try await OpenStore.with(directory, writable: false) { store in
            let statistics = try store.engine.statistics()
            let streams = try await countStreams(store.events)
            let last = try await store.events.lastPosition()
            // Scavenge removes events and leaves positions as they were, so the last position is not the count.
            var events: UInt64 = 0
            try await store.events.readAll(from: 1, limit: .max) { _ in
                events += 1
                return true
            }
            try Output(json: json).report([
                "directory": .text(directory),
                "formatVersion": .number(UInt64(PageFileKeyValueStore.formatVersion)),
                "pageSize": .number(UInt64(statistics.pageSize)),
                "pages": .number(statistics.pageCount),
                // Saturating: the counts come from the store's files, which the tool must not trap on.
                "pagesUsed": .number(statistics.pageCount - min(statistics.pageCount, UInt64(statistics.freePages))),
                "pagesFree": .number(UInt64(statistics.freePages)),
                "walBytes": .number(statistics.walBytes),
                "checkpoints": .number(statistics.checkpoints),
                "oldestPinnedCheckpoint": statistics.oldestPinnedCheckpoint.map { .number($0) } ?? .text("none"),
                "pendingWALTransactions": .number(UInt64(store.engine.recovery.replayedTransactions)),
                "keys": .number(statistics.keys),
                "streams": .number(streams),
                "events": .number(events),
                "lastPosition": .number(last),
                "durability": .text("full (the default; durability is chosen when opening, not stored)"),
            ])
            return .success
        }
    }

    static func verify(_ words: [String], _ json: Bool) async throws -> ToolExit {
        let arguments = try Arguments(words, flags: [], options: [], positionals: ["dir"])
        let directory = arguments.positionals[0]
        Output.progress("verifying \(directory): opening")
        let report: PageFileVerifyReport
        do {
            report = try await OpenStore.with(directory, writable: false) { store in
                Output.progress("verifying \(directory): walking every page")
                return try await store.engine.verify()
            }
        } catch EventStoreError.corrupted(let location, let detail) {
            // Opening itself found damage (both meta pages): that is a verify result, not a crash.
            try Output(json: json).report(["status": .text("corrupted"), "problems": .list(["\(location): \(detail)"])])
            return .failure
        }
        Output.progress("verifying \(directory): done")
        try Output(json: json).report([
            "status": .text(report.isClean ? "ok" : "problems found"),
            "pages": .number(report.pageCount),
            "treePages": .number(UInt64(report.treePages)),
            "overflowPages": .number(UInt64(report.overflowPages)),
            "freePages": .number(UInt64(report.freePages)),
            "freeListPages": .number(UInt64(report.freeListPages)),
            "keys": .number(UInt64(report.keys)),
            "depth": .number(UInt64(report.depth)),
            "problems": .list(report.problems),
        ])
        return report.isClean ? .success : .failure
    }

    static func streams(_ words: [String], _ json: Bool) async throws -> ToolExit {
        let arguments = try Arguments(words, flags: [], options: ["prefix"], positionals: ["dir"])
        let prefix = arguments.values["prefix"] ?? ""
        return try await OpenStore.with(arguments.positionals[0], writable: false) { store in
            var rows: [[Value]] = []
            try await forEachStream(store.events, prefix: prefix) { rows.append([.text($0.stream.rawValue), .number($0.version)]) }
            try Output(json: json).table(["stream", "version"], rows)
            return .success
        }
    }

    static func read(_ words: [String], _ json: Bool) async throws -> ToolExit {
        let arguments = try Arguments(
            words, flags: ["backward"], options: ["from", "limit"], positionals: ["dir", "stream"])
        let stream = try OpenStore.stream(arguments.positionals[1], allowingSystem: true)
        let direction: ReadDirection = arguments.has("backward") ? .backward : .forward
        let start: ReadStart = try arguments.number("from").map { .version($0) } ?? (direction == .forward ? .start : .end)
        let limit = try arguments.number("limit").map { Int(clamping: $0) } ?? Int.max
        return try await OpenStore.with(arguments.positionals[0], writable: false) { store in
            try await store.requireExisting(stream)
            let events = try await store.events.read(stream, from: start, direction: direction, limit: limit)
            try printEvents(events, Output(json: json))
            return .success
        }
    }

    /// How long `tail --follow` waits, once it has printed everything, before it looks for new events.
    static let followInterval = Duration.milliseconds(200)

    static func tail(_ words: [String], _ json: Bool) async throws -> ToolExit {
        let arguments = try Arguments(words, flags: ["follow"], options: ["from"], positionals: ["dir"])
        let directory = arguments.positionals[0]
        let output = Output(json: json)
        // Kept outside the store's body, so a rerun on a new snapshot goes on where the last one stopped.
        var position = max(1, try arguments.number("from") ?? 1)
        var header = true
        /// Prints the next page, up to position `end`; whether more may follow.
        func printPage(_ store: OpenStore, through end: UInt64 = .max) async throws -> Bool {
            let events = try await store.events.readAll(from: position, limit: pageSize)
            let shown = events.prefix { $0.position <= end }
            if let last = shown.last {
                try printEvents(Array(shown), output, header: header)
                header = false
                position = last.position + 1
            }
            return events.count == pageSize && shown.count == events.count
        }
        guard arguments.has("follow") else {
            // The log as it was when the command started (later appends are for --follow). A rerun on a new snapshot
            // goes on from where the last one stopped, so only attempts in a row that printed nothing make it give up.
            var end: UInt64?
            while true {
                let before = position
                do {
                    return try await OpenStore.with(directory, writable: false) { store in
                        if end == nil { end = try await store.events.lastPosition() }
                        while try await printPage(store, through: end ?? .max) {}
                        if header { try printEvents([], output) }
                        return .success
                    }
                } catch EventStoreError.snapshotExpired where position > before {
                    continue
                }
            }
        }
        Output.progress("following the global log from position \(position); stop with Ctrl-C")
        // Each pass reads one snapshot and refreshes it with what the writer commits and checkpoints. An unpinned
        // snapshot (ReadOnlySnapshot.swift) can expire under a page read; the next pass opens the store again.
        while true {
            do {
                try await OpenStore.with(directory, writable: false) { store in
                    while true {
                        if try await printPage(store) { continue }
                        try await Task.sleep(for: followInterval)
                        try await store.engine.refresh()
                    }
                }
            } catch EventStoreError.snapshotExpired {
                try await Task.sleep(for: followInterval)
            }
        }
    }

    // MARK: Helpers

    static func countStreams(_ store: KeyValueEventStore) async throws -> UInt64 {
        var count: UInt64 = 0
        try await forEachStream(store, prefix: "") { _ in count += 1 }
        return count
    }

    static func forEachStream(
        _ store: KeyValueEventStore, prefix: String, _ body: (StreamSummary) throws -> Void
    ) async throws {
        var after: StreamName?
        while true {
            try Task.checkCancellation()
            let page = try await store.listStreams(prefix: prefix, after: after, limit: pageSize)
            try page.forEach(body)
            guard page.count == pageSize, let last = page.last else { return }
            after = last.stream
        }
    }

    static let eventColumns = ["position", "stream", "version", "type", "recordedAt", "id", "data"]

    static func printEvents(_ events: [RecordedEvent], _ output: Output, header: Bool = true) throws {
        let dates = ISO8601DateFormatter()  // one per page: making one per event took most of a long tail's time
        let rows = events.map { event -> [Value] in
            [
                .number(event.position), .text(event.stream.rawValue), .number(event.version), .text(event.type),
                .text(dates.string(from: event.recordedAt)), .text(event.id.uuidString),
            ]
        }
        if output.json {
            // UTF-8 data is "data", exactly as stored; other bytes are "dataBase64", so neither passes for the other.
            for (event, row) in zip(events, rows) {
                let data = shown(event.data)
                var fields = Dictionary(uniqueKeysWithValues: zip(eventColumns.dropLast(), row))
                fields[data.isText ? "data" : "dataBase64"] = .text(data.text)
                try output.object(fields)
            }
            return
        }
        let cells = zip(events, rows).map { event, row -> [Value] in
            let data = shown(event.data)
            let text = data.isText ? data.text : "base64:" + data.text
            return row + [.text(text.count <= 60 ? text : String(text.prefix(57)) + "...")]
        }
        if header {
            try output.table(eventColumns, cells)
        } else {
            // A following tail prints its header once; later events continue the same table.
            for row in cells { try output.line(row.map { Output.escaped($0.text) }.joined(separator: "  ")) }
        }
    }

    /// `bytes` as text if they are UTF-8 (kept exactly, a byte order mark too), else as base64.
    static func shown(_ bytes: Data) -> (isText: Bool, text: String) {
        let text = String(decoding: bytes, as: UTF8.self)  // repairs bad bytes, so compare: equal iff valid UTF-8
        return text.utf8.elementsEqual(bytes) ? (true, text) : (false, bytes.base64EncodedString())
    }
}
