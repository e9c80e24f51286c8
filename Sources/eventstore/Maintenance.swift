// Maintenance: the commands that change a store (backup writes only its destination; compact, metadata with
// options, delete and scavenge change the store itself).
//
// Invariants:
// - `backup` opens the source read-only and copies its snapshot, so it runs beside an application writing the store;
//   the copy is fsynced before it is reported done.
// - The others open the store writable with full durability, so what they report done is durable when they exit.
// - A stream command on a stream that does not exist fails with status 5 and changes nothing: the stream is looked
//   up with a read-only open first, so not even a checkpoint is written.
// - `metadata` without options only reads, and opens the store read-only.

import EventStore
import EventStoreKV
import Foundation

/// The commands that change a store.
enum Maintenance {
    static func backup(_ words: [String], _ json: Bool) async throws -> ToolExit {
        let arguments = try Arguments(words, flags: [], options: [], positionals: ["dir", "dest"])
        let (directory, destination) = (arguments.positionals[0], arguments.positionals[1])
        // The destination is a new directory or an empty one: never a file, never one with files a backup would
        // overwrite or leave beside it.
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: destination, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else {
                throw ToolError(.failure, "backup destination \(destination) is a file; choose a new or empty directory")
            }
            if FileManager.default.fileExists(atPath: destination + "/data") {
                throw ToolError(.failure, "\(destination) already holds a store; choose an empty destination")
            }
            guard (try? FileManager.default.contentsOfDirectory(atPath: destination))?.isEmpty ?? false else {
                throw ToolError(.failure, "backup destination \(destination) is not empty; choose a new or empty directory")
            }
        }
        // Read-only: the copy is a snapshot, taken beside the application that may be writing the store.
        return try await OpenStore.with(directory, writable: false) { store in
            Output.progress("backing up \(directory) to \(destination)")
            try await store.engine.backup(to: destination)
            Output.progress("backup written and synced")
            // The backup's files, its WAL included: a read-only store's copy carries its snapshot's records there.
            let size = ["/data", "/wal"].reduce(UInt64(0)) { total, name in
                total + ((try? FileManager.default.attributesOfItem(atPath: destination + name)[.size] as? UInt64) ?? 0)
            }
            try Output(json: json).report([
                "status": .text("ok"), "source": .text(directory), "destination": .text(destination),
                "bytes": .number(size),
            ])
            return .success
        }
    }

    static func compact(_ words: [String], _ json: Bool) async throws -> ToolExit {
        let arguments = try Arguments(words, flags: [], options: [], positionals: ["dir"])
        let directory = arguments.positionals[0]
        return try await OpenStore.with(directory, writable: true) { store in
            Output.progress("compacting \(directory)")
            let report = try await store.engine.compact()
            Output.progress("compaction done")
            try Output(json: json).report([
                "status": .text("ok"), "pagesBefore": .number(report.pagesBefore), "pagesAfter": .number(report.pagesAfter),
            ])
            return .success
        }
    }

    static func metadata(_ words: [String], _ json: Bool) async throws -> ToolExit {
        let arguments = try Arguments(
            words, flags: [], options: ["max-count", "max-age", "truncate-before"], positionals: ["dir", "stream"])
        let stream = try OpenStore.stream(arguments.positionals[1])
        let changes = try (
            maxCount: arguments.number("max-count"), maxAge: arguments.number("max-age"),
            truncateBefore: arguments.number("truncate-before"))
        let setting = changes.maxCount != nil || changes.maxAge != nil || changes.truncateBefore != nil
        if setting {
            // Refused values are usage errors found before the store is opened for writing (an open writes a
            // recovery checkpoint), so a rejected invocation changes no byte.
            do {
                try StreamMetadata(
                    maxCount: changes.maxCount, maxAge: changes.maxAge.map { .seconds(Int64(clamping: $0)) },
                    truncateBefore: changes.truncateBefore
                ).validate()
            } catch {
                throw ToolError.from(error)
            }
            try await requireExisting(stream, in: arguments.positionals[0], includingDeleted: true)
        }
        // A soft-deleted stream's retention may be read and set (it applies when the stream is written again); a
        // hard-deleted one's is shown, and a change to it is refused by the store (exit 5).
        return try await OpenStore.with(arguments.positionals[0], writable: setting) { store in
            try await store.requireExisting(stream, includingDeleted: true)
            let stored = try await store.events.versionedMetadata(of: stream)
            var (metadata, version) = (stored.metadata, stored.version)
            if setting {
                if let maxCount = changes.maxCount { metadata.maxCount = maxCount }
                if let maxAge = changes.maxAge { metadata.maxAge = .seconds(Int64(clamping: maxAge)) }
                if let truncateBefore = changes.truncateBefore { metadata.truncateBefore = truncateBefore }
                try metadata.validate()
                version = try await store.events.setMetadata(metadata, for: stream, expectedVersion: .exact(version))
            }
            try Output(json: json).report([
                "stream": .text(stream.rawValue),
                "version": .number(version),
                "maxCount": metadata.maxCount.map { .number($0) } ?? .none,
                "maxAgeSeconds": metadata.maxAge.map { .exact(seconds($0)) } ?? .none,
                "truncateBefore": metadata.truncateBefore.map { .number($0) } ?? .none,
            ])
            return .success
        }
    }

    static func delete(_ words: [String], _ json: Bool) async throws -> ToolExit {
        let arguments = try Arguments(words, flags: ["hard"], options: [], positionals: ["dir", "stream"])
        let stream = try OpenStore.stream(arguments.positionals[1])
        let mode: DeletionMode = arguments.has("hard") ? .hard : .soft
        // A hard delete may tombstone a soft-deleted stream, as the store allows; the store refuses a second tombstone.
        let includingDeleted = mode == .hard
        try await requireExisting(stream, in: arguments.positionals[0], includingDeleted: includingDeleted)
        return try await OpenStore.with(arguments.positionals[0], writable: true) { store in
            try await store.requireExisting(stream, includingDeleted: includingDeleted)
            let position = try await store.events.delete(stream, expectedVersion: .any, mode: mode)
            try Output(json: json).report([
                "status": .text("deleted"), "stream": .text(stream.rawValue), "mode": .text(mode.rawValue),
                "position": .number(position),
            ])
            return .success
        }
    }

    static func scavenge(_ words: [String], _ json: Bool) async throws -> ToolExit {
        let arguments = try Arguments(words, flags: [], options: [], positionals: ["dir"])
        let directory = arguments.positionals[0]
        return try await OpenStore.with(directory, writable: true) { store in
            Output.progress("scavenging \(directory): removing hidden events")
            let report = try await store.events.scavenge()
            Output.progress("scavenging \(directory): removed \(report.eventsRemoved) events; compacting")
            let compaction = try await store.engine.compact()
            Output.progress("scavenging \(directory): done")
            try Output(json: json).report([
                "status": .text("ok"), "streamsScanned": .number(UInt64(report.streamsScanned)),
                "eventsRemoved": .number(UInt64(report.eventsRemoved)), "pagesBefore": .number(compaction.pagesBefore),
                "pagesAfter": .number(compaction.pagesAfter),
            ])
            return .success
        }
    }

    /// `duration` in seconds, exactly: "0.5" for 500 ms, "90" for 90 s. Built from its integer components, with the
    /// fraction's trailing zeros trimmed.
    static func seconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components  // both have the duration's sign
        let sign = seconds < 0 || attoseconds < 0 ? "-" : ""
        guard attoseconds != 0 else { return sign + String(seconds.magnitude) }
        let digits = String(attoseconds.magnitude)
        var fraction = String(repeating: "0", count: max(0, 18 - digits.count)) + digits
        while fraction.last == "0" { fraction.removeLast() }
        return sign + String(seconds.magnitude) + "." + fraction
    }

    /// Throws "unknown stream" unless `stream` exists, looking with a read-only open so a mistyped name changes
    /// nothing at all.
    private static func requireExisting(
        _ stream: StreamName, in directory: String, includingDeleted: Bool = false
    ) async throws {
        try await OpenStore.with(directory, writable: false) {
            try await $0.requireExisting(stream, includingDeleted: includingDeleted)
        }
    }
}
