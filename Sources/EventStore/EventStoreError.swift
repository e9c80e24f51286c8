import Foundation

/// Every error the event store and its backends report. Each description says what happened and what to do.
public enum EventStoreError: Error, Sendable, CustomStringConvertible {
    // MARK: Input

    /// A stream name broke a naming rule; nothing was written.
    case invalidStreamName(String, rule: StreamNameRule)
    /// An event's type name is empty or too long; nothing was written.
    case invalidEventType(String, reason: String)
    /// An event is larger than the configured maximum; nothing was written.
    case eventTooLarge(eventID: UUID, size: Int, limit: Int)
    /// An argument is out of range (a limit, a timeout, a size).
    case invalidArgument(String)

    // MARK: Concurrency and idempotency

    /// The stream's version did not match the expected version; nothing was written.
    case wrongExpectedVersion(stream: StreamName, expected: ExpectedVersion, actual: UInt64)
    /// The stream's metadata version (how many times its metadata was set) did not match the expected one; nothing
    /// was written.
    case wrongExpectedMetadataVersion(stream: StreamName, expected: ExpectedVersion, actual: UInt64)
    /// An event id in the append is already recorded, outside an idempotent retry; nothing was written.
    case duplicateEventID(UUID, stream: StreamName, version: UInt64)
    /// The stream is held by a session of another writer until its lease ends.
    case streamLocked(stream: StreamName, holder: String, leaseExpiresAt: Date)
    /// The session's lease ended (or was taken over); it can no longer write.
    case sessionExpired(stream: StreamName, sessionID: UUID)
    /// The session was closed.
    case sessionClosed(stream: StreamName, sessionID: UUID)
    /// The stream was hard-deleted; it can never be written again.
    case streamDeleted(StreamName)
    /// The stream does not exist (or was soft-deleted).
    case streamNotFound(StreamName)
    /// A replay (an aggregate load) could not fold the stream's events as of one moment: a truncation, deletion or
    /// scavenge hid events it had folded, each time it tried. Nothing is wrong with the stream; load it again.
    case replayInterrupted(stream: StreamName, reason: String)

    // MARK: Typed events

    /// No Swift type is registered for an event type name. `location` names the event that has it: its version,
    /// stream and (once recorded) global position.
    case unknownEventType(type: String, location: String)
    /// An event's payload could not be encoded or decoded.
    case codingFailed(type: String, reason: String)

    // MARK: Storage

    /// Stored data failed a check (checksum, structure). `location` names where: a file and page, a key, a position.
    case corrupted(location: String, detail: String)
    /// A system call failed. Thrown by an append (or commit), the outcome is unknown: its records were written to
    /// the write-ahead log, but writing or syncing them failed, so they may be in the store after reopening. After
    /// reopening, re-send the same events (same ids), which is idempotent, to find out. The store is in its failed
    /// state from then on (``storeFailed(reason:)``).
    case ioFailure(operation: String, path: String, errno: Int32)
    /// An earlier failure (an I/O error, or damage found while writing) put the store into a failed state; it refuses
    /// writes until reopened. Nothing was written by the append (or commit) that throws it.
    case storeFailed(reason: String)
    /// Another writer holds the store's directory (`holderPID` is its pid, when its lock file names it), or the data
    /// file or WAL that one of the directory's names reaches (`path` names that file). Read-only openers never hold
    /// either.
    case storeLocked(path: String, holderPID: Int32?)
    /// A read-only store's snapshot is gone: it could not be pinned (or the writer did not honour the pin), and a
    /// writer has checkpointed (or compacted the store) since it was opened, so the pages it would read from disk
    /// may have been reused. Nothing is wrong with the store; refresh it or open it again to read its current state.
    case snapshotExpired(path: String)
    /// The path is not a store this version can open (another format, a newer version, another page size).
    case incompatibleStore(path: String, reason: String)
    /// The store was closed.
    case storeClosed
    /// The key-value backend reported an error.
    case backend(String)

    public var description: String {
        switch self {
        case .invalidStreamName(let name, let rule):
            "invalid stream name \"\(name.debugDescription.dropFirst().dropLast())\": \(rule)"
        case .invalidEventType(let type, let reason):
            "invalid event type \"\(type)\": \(reason)"
        case .eventTooLarge(let id, let size, let limit):
            "event \(id) is \(size) bytes, over the \(limit)-byte limit; store large payloads elsewhere and append a reference"
        case .invalidArgument(let detail):
            "invalid argument: \(detail)"
        case .wrongExpectedVersion(let stream, let expected, let actual):
            "stream \"\(stream)\" is at version \(actual), expected \(expected); reload the stream and decide again"
        case .wrongExpectedMetadataVersion(let stream, let expected, let actual):
            "the metadata of stream \"\(stream)\" is at version \(actual), expected "
                + "\(Self.metadataExpectation(expected)); read it again and decide again"
        case .duplicateEventID(let id, let stream, let version):
            "event id \(id) is already recorded as version \(version) of \"\(stream)\"; use a new id, or re-send the original batch unchanged"
        case .streamLocked(let stream, let holder, let expiresAt):
            "stream \"\(stream)\" is locked by \(holder) until \(expiresAt); wait, or retry after the lease ends"
        case .sessionExpired(let stream, let id):
            "session \(id) on \"\(stream)\" has expired and lost its lock; open a new session and reload the stream"
        case .sessionClosed(let stream, let id):
            "session \(id) on \"\(stream)\" is closed; open a new session"
        case .streamDeleted(let stream):
            "stream \"\(stream)\" was hard-deleted and can never be written again"
        case .streamNotFound(let stream):
            "stream \"\(stream)\" does not exist"
        case .replayInterrupted(let stream, let reason):
            "the replay of stream \"\(stream)\" was interrupted: \(reason)"
        case .unknownEventType(let type, let location):
            "no Swift type is registered for event type \"\(type)\" (\(location)); register it (or an upcaster) "
                + "with the event registry"
        case .codingFailed(let type, let reason):
            "could not code event type \"\(type)\": \(reason)"
        case .corrupted(let location, let detail):
            "corrupted data at \(location): \(detail); restore from a backup or run verify for a full report"
        case .ioFailure(let operation, let path, let errno):
            "\(operation) failed on \(path): \(String(cString: strerror(errno))) (errno \(errno))"
        case .storeFailed(let reason):
            "the store has failed and refuses writes: \(reason); close it and open it again to recover"
        case .storeLocked(let path, let pid):
            "the store at \(path) is in use by another writer\(pid.map { " (pid \($0))" } ?? ""); close that writer or use another directory"
        case .snapshotExpired(let path):
            "the read-only snapshot of \(path) expired: a writer has checkpointed past it; refresh or open the store again"
        case .incompatibleStore(let path, let reason):
            "\(path) cannot be opened as a store: \(reason); nothing was changed"
        case .storeClosed:
            "the store is closed; open it again to continue"
        case .backend(let detail):
            "the storage backend failed: \(detail)"
        }
    }

    /// An expected version as it reads for metadata, which is never a stream.
    private static func metadataExpectation(_ expected: ExpectedVersion) -> String {
        switch expected {
        case .noStream: "never set"
        case .streamExists: "set at least once"
        default: expected.description
        }
    }
}
