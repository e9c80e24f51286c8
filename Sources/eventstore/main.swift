// The `eventstore` admin tool: look inside and maintain a store directory without writing code.
//
// Invariants:
// - The process exits with the status of ToolExit: 0 success, 1 a failed check or operation, 2 bad usage,
//   3 not a store, 4 the store is locked by another process, 5 an unknown or deleted stream.
// - Results go to stdout (a table, or JSON lines with --json); progress and errors go to stderr.

import Foundation

let status = await Tool.run(Array(CommandLine.arguments.dropFirst()))
exit(status.rawValue)
