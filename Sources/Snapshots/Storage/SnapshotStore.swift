// SnapshotStore: per stream, a collection of snapshots keyed by version, on the key-value backend of the events.
// One SnapshotStore value is one named collection (one kind of state); see SnapshotKeys.swift.
//
// Invariants:
// - Every change to a stream's collection (save, delete, prune) is ONE key-value transaction that writes the records
//   and the index together, built by `KeyValueStore.update` from a read of the index and conditioned on the index as
//   read (its modRevision, or its absence). Concurrent writers therefore serialize on the index: none can lose
//   another's entry, and the index always lists exactly the records that exist.
// - A snapshot is saved only at a version readers see (first visible version ... stream version), and records that
//   first visible version. Stream versions never go down, so checking before the transaction is as good as inside.
// - A record is written only together with its index, so a record's modRevision never exceeds that of the index
//   describing it. Reads use this to tell a concurrent change (start again) from corruption.
// - Reads never guess: an index entry without its record, or a malformed value, is EventStoreError.corrupted naming
//   the key's stream and version.

import EventStore
import EventStoreKV
import Foundation

/// Stores snapshots of streams on the same key-value backend as the events of a ``KeyValueEventStore``.
///
/// Each store value is one named collection: snapshots of one kind of state. Stores with different collection
/// names never see each other's snapshots, so several aggregates or projections of one stream can be snapshotted
/// side by side.
public struct SnapshotStore: Sendable {
    /// The event store whose streams are snapshotted; snapshots share its backend.
    public let events: KeyValueEventStore
    /// The name of this collection of snapshots.
    public let collection: String
    private let keys: SnapshotKeys

    /// How many snapshots ``deleteAll(of:)`` removes per transaction at first, so that a large collection never needs
    /// one oversized transaction: below etcd's default `--max-txn-ops` of 128, with room for the index write. A
    /// backend that refuses a batch as too large gets half as many, down to one.
    public static let deletionBatchSize = 100

    /// Creates the snapshot collection named `collection` on the backend of `events`.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` for a name containing U+0000 or longer than 255 UTF-8
    ///   bytes.
    public init(events: KeyValueEventStore, collection: String = "") throws {
        self.events = events
        self.collection = collection
        self.keys = try SnapshotKeys(collection: collection)
    }

    private var backend: any KeyValueStore { events.backend }

    // MARK: Writing

    /// Saves `data` as the snapshot of `stream` at `version`, replacing any snapshot already at that version; with
    /// `keepingLast`, removes all but the newest `keepingLast` snapshots in the same transaction. `data` must be the
    /// state folded from the events readers see, up to `version`. `foldedFrom` is the version of the first event it
    /// folds, recorded with it (``Snapshot/firstVersion``); when nil, the first version readers see now is. The
    /// snapshot stands for every version from there to `version`, and the store cannot check which events `data`
    /// folds: a state that skipped one maxAge hid between visible ones (``LoadedAggregate/skippedVersion``) must not
    /// be saved, or loads from it differ from a replay once that event is visible again.
    /// - Returns: whether the snapshot was kept: false when `keepingLast` newer snapshots exist, so that it was
    ///   removed in the same transaction (nothing of it was written).
    /// - Throws: ``SnapshotError/versionBeyondStream(stream:requested:streamVersion:)`` when the stream has not
    ///   reached `version`; ``SnapshotError/versionNotVisible(stream:version:)`` when readers no longer see
    ///   `version`, or no longer see `foldedFrom` (the state folds events retention has hidden since);
    ///   ``EventStoreError/invalidArgument(_:)`` for version 0, a `foldedFrom` of 0 or after `version`, a
    ///   `keepingLast` below 1 or data of 4 GiB or more.
    ///   Nothing is written when it throws, except when the store cannot know the outcome (``EventStoreError/ioFailure(operation:path:errno:)``
    ///   or a replicated backend's ``EventStoreError/backend(_:)``): the snapshot may then have been saved, and
    ///   saving it again is harmless, since it replaces the one at the same version.
    @discardableResult
    public func save(
        _ data: Data, schemaVersion: UInt32, of stream: StreamName, at version: UInt64, keepingLast: Int? = nil,
        foldedFrom foldStart: UInt64? = nil
    ) async throws -> Bool {
        guard version > 0 else {
            throw EventStoreError.invalidArgument("a snapshot needs a version of at least 1; version 0 is the empty state")
        }
        if let keepingLast, keepingLast < 1 {
            throw EventStoreError.invalidArgument("keepingLast must be at least 1, got \(keepingLast)")
        }
        if let foldStart, foldStart == 0 || foldStart > version {
            throw EventStoreError.invalidArgument(
                "foldedFrom must be a version from 1 to the snapshot's \(version), got \(foldStart)")
        }
        guard data.count <= Int(UInt32.max) else {
            throw EventStoreError.invalidArgument("a snapshot must be smaller than 4 GiB, got \(data.count) bytes")
        }
        // The versions written, deleted ones included: a deleted version is not visible, rather than beyond the stream.
        let streamVersion = try await events.lastWrittenVersion(of: stream)
        guard version <= streamVersion else {
            throw SnapshotError.versionBeyondStream(stream: stream, requested: version, streamVersion: streamVersion)
        }
        guard let firstVisible = try await events.firstVisibleVersion(of: stream), firstVisible <= version else {
            throw SnapshotError.versionNotVisible(stream: stream, version: version)
        }
        // A state built before retention hid more of the stream's start still folds the hidden events: recording the
        // new first visible version would make loads use it and differ from a replay.
        if let foldStart, foldStart < firstVisible {
            throw SnapshotError.versionNotVisible(stream: stream, version: foldStart)
        }
        let firstVersion = foldStart ?? firstVisible
        let keys = self.keys
        let snapshot = Snapshot(
            stream: stream, version: version, schemaVersion: schemaVersion, firstVersion: firstVersion,
            takenAt: Date(), data: data)
        let record = SnapshotRecord.encode(snapshot)
        return try await changeIndex(of: stream) { index in
            index.insert(snapshot.descriptor)
            let pruned = keepingLast.map { index.keepLast($0) } ?? []
            let kept = !pruned.contains(version)
            var writes: [KeyWrite] = []
            if kept { writes.append(.put(keys.record(of: stream, at: version), record)) }
            writes += pruned.map { .delete(keys.record(of: stream, at: $0)) }
            return (writes, kept)
        }
    }

    /// Deletes the snapshot of `stream` at `version`, with its index entry.
    /// - Returns: whether there was one.
    @discardableResult
    public func delete(snapshotOf stream: StreamName, at version: UInt64) async throws -> Bool {
        try await changeIndex(of: stream) { index in
            guard index.remove(version) else { return ([], false) }
            return ([.delete(keys.record(of: stream, at: version))], true)
        }
    }

    /// Deletes every snapshot of `stream`, oldest first, ``deletionBatchSize`` per transaction; the index matches
    /// the records after every transaction. A snapshot saved concurrently may survive.
    /// - Returns: how many snapshots were deleted.
    @discardableResult
    public func deleteAll(of stream: StreamName) async throws -> Int {
        var deleted = 0
        var batchSize = Self.deletionBatchSize
        while true {
            try Task.checkCancellation()
            let size = batchSize
            let batch: Int
            do {
                batch = try await changeIndex(of: stream, passingTooLarge: true) { index in
                    let removed = index.removeOldest(size)
                    return (removed.map { .delete(keys.record(of: stream, at: $0)) }, removed.count)
                }
            } catch let error as KeyValueStoreError {
                guard case .transactionTooLarge = error, size > 1 else { throw KeyValueEventStore.translate(error) }
                batchSize = size / 2
                continue
            }
            deleted += batch
            if batch < size { return deleted }
        }
    }

    /// Deletes all but the newest `count` snapshots of `stream`, in one transaction.
    /// - Returns: the versions deleted, oldest first.
    @discardableResult
    public func prune(_ stream: StreamName, keepingLast count: Int) async throws -> [UInt64] {
        guard count >= 1 else { throw EventStoreError.invalidArgument("keepingLast must be at least 1, got \(count)") }
        return try await changeIndex(of: stream) { index in
            let removed = index.keepLast(count)
            return (removed.map { .delete(keys.record(of: stream, at: $0)) }, removed)
        }
    }

    /// Runs `change` on the index of `stream` as it is now and commits the record writes it returns together with
    /// the changed index, in one transaction conditioned on the index being unchanged. `change` may run more than
    /// once (when another writer got there first) and must have no side effects; returning no writes commits nothing.
    /// Changes the index of `stream` and writes the records `change` returns, in one transaction conditioned on the
    /// index as read. With `passingTooLarge`, a backend's `transactionTooLarge` passes through untranslated, for
    /// `deleteAll` to split its batch; every other error is an ``EventStoreError``.
    private func changeIndex<Value: Sendable>(
        of stream: StreamName, passingTooLarge: Bool = false,
        _ change: @escaping @Sendable (inout SnapshotIndex) throws -> (writes: [KeyWrite], value: Value)
    ) async throws -> Value {
        let indexKey = keys.index(of: stream)
        let passes = { (error: KeyValueStoreError) -> Bool in
            guard passingTooLarge, case .transactionTooLarge = error else { return false }
            return true
        }
        let outcome = try await translatingErrors(except: passes) {
            try await backend.update { context -> (transaction: KeyValueTransaction, value: Value) in
                let entry = try await context.get(indexKey)
                var index = try entry.map { try SnapshotIndex.decode($0.value, stream: stream) } ?? SnapshotIndex()
                let (recordWrites, value) = try change(&index)
                guard !recordWrites.isEmpty else { return (KeyValueTransaction(), value) }
                let unchanged: KeyCondition =
                    entry.map { .modRevision(indexKey, equals: $0.modRevision) } ?? .absent(indexKey)
                let indexWrite: KeyWrite = index.isEmpty ? .delete(indexKey) : .put(indexKey, index.encoded())
                return (KeyValueTransaction(conditions: [unchanged], writes: recordWrites + [indexWrite]), value)
            }
        }
        return outcome.value
    }

    // MARK: Reading

    /// The index of `stream`'s snapshots: every version with a snapshot and its schema, oldest first.
    public func descriptors(of stream: StreamName) async throws -> [SnapshotDescriptor] {
        try await index(of: stream).entries
    }

    /// The versions of `stream` that have a snapshot, oldest first.
    public func versions(of stream: StreamName) async throws -> [UInt64] {
        try await descriptors(of: stream).map(\.version)
    }

    /// The version of the newest snapshot of `stream`, or nil if it has none.
    public func lastVersion(of stream: StreamName) async throws -> UInt64? {
        try await descriptors(of: stream).last?.version
    }

    /// The snapshot of `stream` at exactly `version`, or nil if there is none.
    public func snapshot(of stream: StreamName, at version: UInt64) async throws -> Snapshot? {
        try await readChosen(of: stream) { $0.entry(at: version) }
    }

    /// The newest snapshot of `stream` at or before `version` (the newest of all when `version` is nil) whose schema
    /// `isUsable` accepts, or nil if there is none.
    public func latestSnapshot(
        of stream: StreamName, atOrBefore version: UInt64? = nil,
        where isUsable: (SnapshotDescriptor) -> Bool = { _ in true }
    ) async throws -> Snapshot? {
        try await readChosen(of: stream) { index in
            index.entries.last { candidate in
                (version.map { candidate.version <= $0 } ?? true) && isUsable(candidate)
            }
        }
    }

    /// Reads the snapshot that `choose` picks from the index, as one consistent pair of index and record.
    ///
    /// The index and the record are two reads, and a writer may delete or replace the record in between. Every
    /// write of a record also writes the index, in the same transaction, so a record whose modRevision is not
    /// above the index's as read is the one that index describes; a newer record, or a missing one while the index
    /// has moved on, means another writer got in between, and the read starts again from the new index. Only a
    /// record missing (or malformed) under an index that has not changed is corruption.
    private func readChosen(
        of stream: StreamName, _ choose: (SnapshotIndex) -> SnapshotDescriptor?
    ) async throws -> Snapshot? {
        let indexKey = keys.index(of: stream)
        var indexEntry = try await translatingErrors { try await backend.get(indexKey) }
        while true {
            try Task.checkCancellation()
            guard let seen = indexEntry else { return nil }
            guard let chosen = choose(try SnapshotIndex.decode(seen.value, stream: stream)) else { return nil }
            let recordKey = keys.record(of: stream, at: chosen.version)
            let record = try await translatingErrors { try await backend.get(recordKey) }
            if let record, record.modRevision <= seen.modRevision {
                return try SnapshotRecord.decode(record.value, stream: stream, expected: chosen)
            }
            indexEntry = try await translatingErrors { try await backend.get(indexKey) }
            if indexEntry?.modRevision == seen.modRevision {
                // Nothing changed the index, so nothing may have changed the record.
                throw EventStoreError.corrupted(
                    location: "snapshot of stream \"\(stream)\" at version \(chosen.version)",
                    detail: record == nil
                        ? "the snapshot index lists this snapshot but its record is missing"
                        : "the record was written after its index, without it")
            }
        }
    }

    private func index(of stream: StreamName) async throws -> SnapshotIndex {
        let key = keys.index(of: stream)
        guard let entry = try await translatingErrors({ try await backend.get(key) }) else { return SnapshotIndex() }
        return try SnapshotIndex.decode(entry.value, stream: stream)
    }
}

/// Runs a backend call, reporting key-value contract errors as ``EventStoreError`` like the event store does.
func translatingErrors<T>(
    except passes: (KeyValueStoreError) -> Bool = { _ in false }, _ body: () async throws -> T
) async throws -> T {
    do {
        return try await body()
    } catch let error as KeyValueStoreError {
        if passes(error) { throw error }
        throw KeyValueEventStore.translate(error)
    }
}

extension KeyValueEventStore {
    /// The first version of `stream` readers see (1 unless a deletion or retention hides the start), or nil when
    /// they see no event.
    func firstVisibleVersion(of stream: StreamName) async throws -> UInt64? {
        try await read(stream, from: .start, direction: .forward, limit: 1).first?.version
    }
}
