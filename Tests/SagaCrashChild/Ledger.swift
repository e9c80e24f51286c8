// The external side-effect ledger of the crash test: one line per effect, appended and fsynced before the action
// returns, so it records every effect a SIGKILL could interrupt the saga log after.
//
// Invariants:
// - Each line is written with one write(2) on an O_APPEND descriptor and fsynced; a kill leaves whole lines only
//   (a line without its trailing newline is ignored by the reader).
// - Line format: "<do|undo> <sagaID> <step> <idempotencyKey>".

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

struct Ledger: Sendable {
    let path: String

    func record(_ kind: String, saga: String, step: String, key: String) throws {
        let line = Array("\(kind) \(saga) \(step) \(key)\n".utf8)
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT, 0o644)
        guard fd >= 0 else { throw LedgerError(operation: "open", errno: errno) }
        defer { _ = close(fd) }
        let written = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard written == line.count else { throw LedgerError(operation: "write", errno: errno) }
        // Never retry fsync after a failure: report it.
        guard fsync(fd) == 0 else { throw LedgerError(operation: "fsync", errno: errno) }
    }
}

struct LedgerError: Error, CustomStringConvertible {
    var operation: String
    var errno: Int32
    var description: String { "ledger \(operation) failed with errno \(errno)" }
}
