/// Errors of the key-value contract. Backends add their own typed errors (corruption, I/O) beside these.
public enum KeyValueStoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Condition number `index` of the transaction did not hold; nothing was written.
    case conditionFailed(index: Int, condition: KeyCondition)
    /// The store was closed; open it again to continue.
    case closed
    /// A watch asked for changes older than the backend still holds.
    case historyUnavailable(requested: UInt64, oldest: UInt64)
    /// A change watcher fell too far behind and was dropped; re-read the state and watch again.
    case watcherOverflow
    /// A key or value is larger than this backend accepts.
    case tooLarge(what: String, size: Int, limit: Int)
    /// A transaction is larger than this backend can apply atomically.
    case transactionTooLarge(operations: Int, bytes: Int, limit: String)
    /// The backend could not be reached or answered with an error.
    case unavailable(String)

    public var description: String {
        switch self {
        case .conditionFailed(let index, let condition):
            "transaction condition \(index) failed: \(condition); nothing was written"
        case .closed:
            "the key-value store is closed; open it again to continue"
        case .historyUnavailable(let requested, let oldest):
            "changes after revision \(requested) are no longer held (oldest is \(oldest)); re-read and watch again"
        case .watcherOverflow:
            "the change watcher fell too far behind and was dropped; re-read and watch again"
        case .tooLarge(let what, let size, let limit):
            "\(what) of \(size) bytes exceeds this backend's limit of \(limit) bytes"
        case .transactionTooLarge(let operations, let bytes, let limit):
            "a transaction of \(operations) operations and \(bytes) bytes exceeds \(limit); "
                + "split it into smaller transactions (an append: fewer events at once)"
        case .unavailable(let detail):
            "the key-value backend is unavailable: \(detail)"
        }
    }
}
