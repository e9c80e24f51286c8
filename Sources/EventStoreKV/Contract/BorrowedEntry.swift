// BorrowedEntry: a stored entry lent in place for the length of one visitor call, so hot read paths (reading a
// stream, the global log) decode events straight from a backend's buffers instead of copying every key and value
// into arrays first.
//
// Invariants:
// - The buffers are valid only during the call that lends them: a visitor must copy what it keeps. They are never
//   written through (the lender owns them; for the page file they are bytes of a cached, immutable page).
// - A lent entry is live (not expired) and comes from the same consistent state as its siblings in one call.

/// A key-value entry lent to a visitor in place. Valid only inside the visitor call; copy what you keep.
public struct BorrowedEntry {
    /// The key's bytes.
    public let key: UnsafeRawBufferPointer
    /// The value's bytes.
    public let value: UnsafeRawBufferPointer
    /// Number of writes since the key was created; see ``KeyValueEntry/version``.
    public let version: UInt64
    /// The revision of the transaction that last wrote the key; see ``KeyValueEntry/modRevision``.
    public let modRevision: UInt64

    /// Lends bytes in place; the caller keeps them valid and unchanged for the length of the visit.
    public init(key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, version: UInt64, modRevision: UInt64) {
        self.key = key
        self.value = value
        self.version = version
        self.modRevision = modRevision
    }

    /// Lends a copied entry's buffers to `visit` and returns what it returned.
    static func lend(_ entry: KeyValueEntry, to visit: (BorrowedEntry) throws -> Bool) rethrows -> Bool {
        try entry.key.withUnsafeBytes { key in
            try entry.value.withUnsafeBytes { value in
                try visit(BorrowedEntry(key: key, value: value, version: entry.version, modRevision: entry.modRevision))
            }
        }
    }

    /// A copy of the entry that outlives the visit.
    public func copied() -> KeyValueEntry {
        KeyValueEntry(key: Array(key), value: Array(value), version: version, modRevision: modRevision)
    }
}
