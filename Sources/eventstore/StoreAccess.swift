// StoreAccess: how the tool opens a store directory.
//
// Invariants:
// - A store is never created: the directory must exist and hold a `data` file before the engine is asked to open
//   it, so a typo gets "not a store" (status 3) and leaves nothing behind.
// - Read-only commands open with PageFileOptions.readOnly: the engine then never writes the data file or the WAL
//   (no recovery checkpoint, no checkpoint on close; WAL records past the last checkpoint are replayed in memory
//   only), and opens every file for reading only; several read-only commands may run at once. Only writing commands
//   put this process's pid in `lock`.
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

    /// Opens the store in `directory`, read-only unless `writable`, runs `body` and closes the store.
    static func with<Result>(
        _ directory: String, writable: Bool, _ body: (OpenStore) async throws -> Result
    ) async throws -> Result {
        try checkIsStore(directory)
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

    /// Throws "unknown stream" unless `stream` has events or metadata (retention may be set before the first
    /// event).
    func requireExisting(_ stream: StreamName) async throws {
        if try await events.version(of: stream) > 0 { return }
        if try await events.metadata(of: stream) != StreamMetadata() { return }
        throw ToolError(.unknownStream, "no stream named \(stream)")
    }
}
