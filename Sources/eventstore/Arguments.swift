// Arguments: the command line split into positionals, flags and valued options, checked against what the
// command accepts.
//
// Invariants:
// - An option the command does not know, a missing value, a value that is not a number where one is needed, or
//   the wrong number of positionals is a usage error (status 2) before the store is touched.
// - `--name=value` and `--name value` mean the same; `--` ends the options, so later words are positionals.
// - A valued option given twice is a usage error (which value was meant?), never the last one silently, as in the
//   ledger example; a flag given twice is the same flag.

/// A parsed command line for one command.
struct Arguments {
    /// The positional arguments after the command name.
    var positionals: [String]
    /// Flags given (such as `--json`).
    var flags: Set<String>
    /// Valued options given, by name.
    var values: [String: String]

    /// Parses `words` for a command accepting `flags` and `options` (names without dashes) and exactly
    /// `positionals` positional arguments.
    init(_ words: [String], flags allowedFlags: Set<String>, options: Set<String>, positionals names: [String]) throws {
        positionals = []
        flags = []
        values = [:]
        var index = 0
        while index < words.count {
            let word = words[index]
            index += 1
            // `--` ends the options: what follows is positional even if it starts with `--` (a stream so named).
            if word == "--" {
                positionals.append(contentsOf: words[index...])
                break
            }
            guard word.hasPrefix("--"), word.count > 2 else {
                positionals.append(word)
                continue
            }
            var name = String(word.dropFirst(2))
            var inline: String?
            if let equals = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: equals)...])
                name = String(name[..<equals])
            }
            if allowedFlags.contains(name) {
                guard inline == nil else { throw ToolError(.usage, "--\(name) takes no value") }
                flags.insert(name)
            } else if options.contains(name) {
                guard values[name] == nil else { throw ToolError(.usage, "--\(name) is given more than once") }
                if let inline {
                    values[name] = inline
                } else {
                    guard index < words.count else { throw ToolError(.usage, "--\(name) needs a value") }
                    values[name] = words[index]
                    index += 1
                }
            } else {
                throw ToolError(.usage, "unknown option --\(name)")
            }
        }
        guard positionals.count == names.count else {
            let expected = names.map { "<\($0)>" }.joined(separator: " ")
            throw ToolError(.usage, "expected \(expected), got \(positionals.count) argument(s)")
        }
    }

    /// Whether `--name` was given.
    func has(_ name: String) -> Bool { flags.contains(name) }

    /// The value of `--name` as a non-negative integer, or nil if absent.
    func number(_ name: String) throws -> UInt64? {
        guard let text = values[name] else { return nil }
        guard let value = UInt64(text) else {
            throw ToolError(.usage, "--\(name) needs a non-negative whole number, got \"\(text)\"")
        }
        return value
    }
}
