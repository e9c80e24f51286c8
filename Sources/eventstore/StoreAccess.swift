// StoreAccess: how the tool opens a store directory.
//
// Invariants:
// - A store is never created: the directory must exist and hold a `data` file before the engine is asked to open
//   it, so a typo gets "not a store" (status 3) and leaves nothing behind.
// - Read-only commands open with PageFileOptions.readOnly: the engine then never writes the data file, the WAL or
//   the lock file (no recovery checkpoint, no checkpoint on close; WAL records past the last checkpoint are replayed
//   in memory only), opens every file for reading only and takes no lock, so they run beside each other and beside
//   an application writing the store, each reading one snapshot. When the writer overtakes a snapshot during a
//   command (`snapshotExpired`), the command runs again on a new one; commands print nothing before they have read
//   everything, or keep their place outside the retried body (tail), so a rerun never prints a line twice. Only
//   writing commands take the lock and put this process's pid in `lock`.
// - Every opened store is closed before the command returns, whatever happened.

import EventStore
import EventStoreKV
import Foundation

/// An open store: the page-file engine and the event store on it.
struct OpenStore {
    /// The engine, for statistics, verify, backup and compaction.
    let engine: PageFileKeyValueStore
    /// The event store on it.
    let events: KeyValueEventStore

    /// How often a read-only command starts again on a new snapshot before it gives up.
    static let snapshotAttempts = 5

    /// Opens the store in `directory`, read-only unless `writable`, runs `body` and closes the store. A read-only
    /// `body` runs again on a new snapshot when a writer overtakes the one it reads (see the invariants above).
    static func with<Result>(
        _ directory: String, writable: Bool, _ body: (OpenStore) async throws -> Result
    ) async throws -> Result {
        try checkIsStore(directory)
        var attempt = 1
        while true {
            do {
                return try await once(directory, writable: writable, body)
            } catch EventStoreError.snapshotExpired where !writable && attempt < snapshotAttempts {
                attempt += 1
            }
        }
    }

    private static func once<Result>(
        _ directory: String, writable: Bool, _ body: (OpenStore) async throws -> Result
    ) async throws -> Result {
        var options = PageFileOptions()
        options.readOnly = !writable
        // A store keeps the page size it was created with; open it with that one.
        options.pageSize = try PageFileKeyValueStore.pageSize(ofStoreIn: directory)
        let engine = try await PageFileKeyValueStore.open(directory: directory, options: options)
        let store = OpenStore(engine: engine, events: KeyValueEventStore(backend: engine))
        do {
            let result = try await body(store)
            try await engine.close()
            return result
        } catch {
            try? await engine.close()
            throw error
        }
    }

    /// Throws "not a store" unless `directory` is a directory holding a data file.
    static func checkIsStore(_ directory: String) throws {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) else {
            throw ToolError(.notAStore, "\(directory) does not exist")
        }
        guard isDirectory.boolValue else { throw ToolError(.notAStore, "\(directory) is not a directory") }
        guard FileManager.default.fileExists(atPath: directory + "/data") else {
            throw ToolError(.notAStore, "\(directory) is not an EventStore store (it has no data file)")
        }
    }

    /// The stream named `name`, or a usage error if the name is not valid. System streams (`$...`) are accepted
    /// only where `allowingSystem` (reads); the tool never writes to them.
    static func stream(_ name: String, allowingSystem: Bool = false) throws -> StreamName {
        do {
            return try allowingSystem && name.utf8.first == UInt8(ascii: "$") ? StreamName.system(name) : StreamName(name)
        } catch {
            throw ToolError.from(error)
        }
    }

    /// Throws "unknown stream" unless `stream` has events, or never had any but has metadata (retention may be set
    /// before the first event). A deleted stream (events written, none visible) is refused as deleted, whatever
    /// metadata it keeps, unless `includingDeleted` (a tombstone may be placed on a soft-deleted stream, and its
    /// retention set for when it is written again); a name that never had an event or metadata is unknown either way.
    func requireExisting(_ stream: StreamName, includingDeleted: Bool = false) async throws {
        if try await events.version(of: stream) > 0 { return }
        if try await events.lastWrittenVersion(of: stream) > 0 {
            if includingDeleted { return }
            throw ToolError(.unknownStream, "the stream \(stream) was deleted")
        }
        if try await events.metadata(of: stream) != StreamMetadata() { return }
        throw ToolError(.unknownStream, "no stream named \(stream)")
    }
}
