// A private state type named like the one in DefaultCollectionNameTests.swift, in another file: their default
// snapshot collections must differ (DefaultCollectionNameTests.samePrivateNameInTwoFiles), as the reflected name with
// its per-launch address, which the fix replaced, told them apart.

import EventStore
import Snapshots

private struct PrivateLedger: Aggregate, Codable {
    init() {}
    mutating func apply(_ event: any DomainEvent) {}
}

/// The default collection name of this file's `private struct PrivateLedger`.
func privateLedgerCollectionNameOfOtherFile() -> String { SnapshotSchema<PrivateLedger>().name }
