// Output: what the commands print. A human table by default; with --json, one JSON object per line.
//
// Invariants:
// - Every line is written to stdout and flushed at once, so a following reader (tail --follow | ...) sees each
//   event as it arrives.
// - JSON objects have sorted keys, so output is stable for scripts and tests.
// - Progress and diagnostics go to stderr only.
// - A result that cannot be written (a full disk, a closed pipe: SIGPIPE is ignored, see main.swift) throws a
//   ToolError, so the command ends with status 1 and a message on stderr instead of a trap or a silent loss.
// - Table cells show control characters escaped, so one row is one line; --json shows values exactly.

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

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
        let cells = [columns] + rows.map { $0.map { Self.escaped($0.text) } }
        let widths = columns.indices.map { column in cells.map { $0[column].count }.max() ?? 0 }
        for row in cells {
            let padded = row.enumerated().map { column, text in
                column == row.count - 1 ? text : text.padding(toLength: widths[column], withPad: " ", startingAt: 0)
            }
            try line(padded.joined(separator: "  "))
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
                try line(label + items.map(Self.escaped).joined(separator: "\n" + indent))
            } else {
                try line(label + Self.escaped(value.text))
            }
        }
    }

    /// Prints one JSON object on its own line.
    func object(_ fields: [String: Value]) throws {
        let data = try JSONSerialization.data(
            withJSONObject: fields.mapValues(\.json), options: [.sortedKeys, .withoutEscapingSlashes])
        try line(Self.escapingByteOrderMarks(String(decoding: data, as: UTF8.self)))
    }

    /// `json` with each U+FEFF (found only inside strings) written as the escape \ufeff. JSON allows it raw, but
    /// some decoders drop a raw one at the start of a string (Foundation's on Linux does); the escape is kept by all.
    static func escapingByteOrderMarks(_ json: String) -> String {
        guard json.unicodeScalars.contains("\u{FEFF}") else { return json }
        var result = ""
        for scalar in json.unicodeScalars {
            if scalar == "\u{FEFF}" { result += "\\ufeff" } else { result.unicodeScalars.append(scalar) }
        }
        return result
    }

    /// Writes `text` and a newline to stdout, unbuffered; throws (status 1) if it cannot be written.
    func line(_ text: String) throws {
        if let error = Self.writeAll(text + "\n", to: STDOUT_FILENO) {
            throw ToolError(.failure, "cannot write the result to standard output: \(String(cString: strerror(error)))")
        }
    }

    /// Writes a progress or diagnostic line to stderr. A failure is ignored: there is nowhere left to report it.
    static func progress(_ text: String) {
        _ = writeAll("eventstore: " + text + "\n", to: STDERR_FILENO)
    }

    /// Writes all of `text` to `descriptor` with write(2), retrying after a signal; the errno of a failure, or nil.
    /// (FileHandle.write traps on an error.)
    static func writeAll(_ text: String, to descriptor: Int32) -> Int32? {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                return errno
            }
            bytes = bytes.dropFirst(written)
        }
        return nil
    }

    /// `text` with its control characters escaped (\n, \r, \t, others as \u{…}), so a table cell stays on one
    /// line. Backslashes are left as they are: the table is for reading, --json for the exact value.
    static func escaped(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: isControl) else { return text }
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where isControl(scalar): result += "\\u{" + String(scalar.value, radix: 16) + "}"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool { scalar.properties.generalCategory == .control }
}

/// One printed value: its table text and its JSON form.
enum Value {
    case text(String)
    case number(UInt64)
    case decimal(Double)
    /// A decimal number given as its exact digits ("0.5", "12"): JSON gets it without a trip through a Double.
    case exact(String)
    case flag(Bool)
    case list([String])
    case none

    var text: String {
        switch self {
        case .text(let text): text
        case .number(let number): String(number)
        case .decimal(let decimal): String(format: "%.3f", decimal)
        case .exact(let digits): digits
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
        case .exact(let digits): NSDecimalNumber(string: digits)
        case .flag(let flag): NSNumber(value: flag)
        case .list(let items): items
        case .none: NSNull()
        }
    }
}
