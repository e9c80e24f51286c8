// Console: what the ledger prints. Results go to stdout with write(2) and are checked, so a result that cannot be
// written (a full disk, a closed pipe: SIGPIPE is ignored in main.swift) is a failed command (status 1), never
// silently lost and never a trap (FileHandle.write traps on an error). Progress and errors go to stderr.

import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A result the ledger could not write to stdout.
struct OutputError: Error, CustomStringConvertible {
    var errno: Int32
    var description: String { "cannot write the result to standard output: \(String(cString: strerror(errno)))" }
}

/// Writes `text` and a newline to stdout; throws if any of it cannot be written.
func say(_ text: String) throws {
    if let error = writeAll(text + "\n", to: STDOUT_FILENO) { throw OutputError(errno: error) }
}

/// Writes `text` to stderr. A failure is ignored: there is nowhere left to report it.
func complain(_ text: String) {
    _ = writeAll(text, to: STDERR_FILENO)
}

/// Writes all of `text` to `descriptor` with write(2), retrying after a signal; the errno of a failure, or nil.
func writeAll(_ text: String, to descriptor: Int32) -> Int32? {
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
