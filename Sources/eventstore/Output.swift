// Output: what the commands print. A human table by default; with --json, one JSON object per line.
//
// Invariants:
// - Every line is written to stdout and flushed at once, so a following reader (tail --follow | ...) sees each
//   event as it arrives.
// - JSON objects have sorted keys, so output is stable for scripts and tests.
// - Progress and diagnostics go to stderr only.

import Foundation

/// Where a command writes its results.
struct Output {
    /// Whether results are JSON lines instead of a table.
    var json: Bool

    /// Prints `rows` under `columns` as an aligned table, or each row as a JSON object.
    func table(_ columns: [String], _ rows: [[Value]]) throws {
        if json {
            for row in rows { try object(Dictionary(uniqueKeysWithValues: zip(columns, row))) }
            return
        }
        let cells = [columns] + rows.map { $0.map(\.text) }
        let widths = columns.indices.map { column in cells.map { $0[column].count }.max() ?? 0 }
        for row in cells {
            let padded = row.enumerated().map { column, text in
                column == row.count - 1 ? text : text.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }
            line(padded.joined(separator: "  "))
        }
    }

    /// Prints one report: `name: value` lines, or one JSON object.
    func report(_ fields: KeyValuePairs<String, Value>) throws {
        if json {
            try object(Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { first, _ in first }))
            return
        }
        let width = fields.map(\.key.count).max() ?? 0
        for (key, value) in fields {
            let label = key.padding(toLength: width, withPad: " ", startingAt: 0) + "  "
            if case .list(let items) = value, items.count > 1 {
                // One item per line, aligned under the first, so each problem of a report reads on its own.
                let indent = String(repeating: " ", count: label.count)
                line(label + items.joined(separator: "\n" + indent))
            } else {
                line(label + value.text)
            }
        }
    }

    /// Prints one JSON object on its own line.
    func object(_ fields: [String: Value]) throws {
        let data = try JSONSerialization.data(
            withJSONObject: fields.mapValues(\.json), options: [.sortedKeys, .withoutEscapingSlashes])
        line(String(decoding: data, as: UTF8.self))
    }

    /// Writes `text` and a newline to stdout and flushes it.
    func line(_ text: String) {
        FileHandle.standardOutput.write(Data((text + "\n").utf8))
    }

    /// Writes a progress or diagnostic line to stderr.
    static func progress(_ text: String) {
        FileHandle.standardError.write(Data(("eventstore: " + text + "\n").utf8))
    }
}

/// One printed value: its table text and its JSON form.
enum Value {
    case text(String)
    case number(UInt64)
    case decimal(Double)
    case flag(Bool)
    case list([String])
    case none

    var text: String {
        switch self {
        case .text(let text): text
        case .number(let number): String(number)
        case .decimal(let decimal): String(format: "%.3f", decimal)
        case .flag(let flag): flag ? "yes" : "no"
        case .list(let items): items.isEmpty ? "none" : items.joined(separator: "; ")
        case .none: "-"
        }
    }

    var json: Any {
        switch self {
        case .text(let text): text
        case .number(let number): NSNumber(value: number)
        case .decimal(let decimal): NSNumber(value: decimal)
        case .flag(let flag): NSNumber(value: flag)
        case .list(let items): items
        case .none: NSNull()
        }
    }
}
