// The `eventstore` admin tool: look inside and maintain a store directory without writing code.
//
// Invariants:
// - The process exits with the status of ToolExit: 0 success, 1 a failed check or operation, 2 bad usage,
//   3 not a store, 4 the store is locked by another process, 5 an unknown or deleted stream.
// - Results go to stdout (a table, or JSON lines with --json); progress and errors go to stderr.

import Foundation

// Paths and names must be UTF-8: an argument that is not would reach the tool repaired (U+FFFD in place of its bad
// bytes) and name some other path, so it is refused as a usage error before anything is opened.
for index in 1..<Int(CommandLine.argc) {
    if let raw = CommandLine.unsafeArgv[index], String(validatingCString: raw) == nil {
        Output.progress("argument \(index) is not valid UTF-8; paths and names must be UTF-8")
        exit(ToolExit.usage.rawValue)
    }
}
// A reader that closes the pipe early (`eventstore tail D | head`) makes the next write fail with EPIPE instead of
// killing the process silently: the command then ends with status 1 and one line on stderr, like any failed write.
signal(SIGPIPE, SIG_IGN)
let status = await Tool.run(Array(CommandLine.arguments.dropFirst()))
exit(status.rawValue)
