// ToolExit: the tool's exit statuses and the error that carries one, with the message the operator sees.
//
// Invariant: every failure reaches the operator as one line on stderr and a non-zero status; the mapping from
// EventStoreError to a status lives only here.

import EventStore
import EventStoreKV

/// The tool's exit statuses.
enum ToolExit: Int32 {
    /// The command did what it was asked.
    case success = 0
    /// A check found problems, or the operation failed.
    case failure = 1
    /// The command line was wrong.
    case usage = 2
    /// The directory is not a store.
    case notAStore = 3
    /// Another process holds the store.
    case locked = 4
    /// The stream does not exist (or was deleted).
    case unknownStream = 5
}

/// A failure with the message and exit status the operator gets.
struct ToolError: Error {
    var status: ToolExit
    var message: String

    init(_ status: ToolExit, _ message: String) {
        self.status = status
        self.message = message
    }

    /// The operator-facing form of any error the store can throw.
    static func from(_ error: any Error) -> ToolError {
        if let tool = error as? ToolError { return tool }
        if let store = error as? EventStoreError { return from(store) }
        return ToolError(.failure, "\(error)")
    }

    private static func from(_ error: EventStoreError) -> ToolError {
        switch error {
        case .storeLocked(let path, let pid):
            let holder = pid.map { "process \($0)" } ?? "another process"
            return ToolError(.locked, "the store in \(path) is locked by \(holder); stop it or try again later")
        case .incompatibleStore(let path, let reason):
            return ToolError(.notAStore, "\(path) is not a store this tool can open: \(reason)")
        case .streamNotFound(let stream):
            return ToolError(.unknownStream, "no stream named \(stream)")
        case .streamDeleted(let stream):
            return ToolError(.unknownStream, "the stream \(stream) was deleted")
        case .snapshotExpired(let path):
            return ToolError(
                .failure,
                "\(path) changed under every attempt to read it: the application writing it checkpointed during each "
                    + "of \(OpenStore.snapshotAttempts) reads; try again")
        case .invalidStreamName, .invalidArgument:
            return ToolError(.usage, error.description)
        default:
            return ToolError(.failure, error.description)
        }
    }
}
