// SnapshotSchema: how a Codable state is encoded into a snapshot, under which schema version, and how snapshots of
// older schemas are migrated.
//
// Invariants:
// - A snapshot is readable only if its schema version is the current one, or a chain of registered migrations leads
//   from it to the current one. Anything else (an older schema with no migration, a newer schema from newer code) is
//   not readable, and loading skips it in favour of an older readable snapshot or a full replay.
// - Every migration goes from a lower schema version to a higher one, so chains always end (no cycles).
// - Snapshots are kept in a collection named after the state (`name`), so another state type's snapshots of the
//   same stream are never decoded as this one.
// - Decoding never returns a state for the wrong schema: a failed decode or migration is
//   SnapshotError.unreadableSnapshot.

import EventStore
import Foundation

/// The encoding of an aggregate state in snapshots: the current schema version, the coder and the migrations from
/// older schemas.
///
/// Raise ``version`` whenever the state's encoding changes. Snapshots of older schemas are then skipped (loading
/// falls back to an older readable snapshot or to a full replay) unless a migration from their schema is registered.
public struct SnapshotSchema<State: Codable & Sendable>: Sendable {
    /// Rewrites encoded state of one schema version into encoded state of a later one.
    public typealias Migration = @Sendable (Data) throws -> Data

    private struct Step: Sendable {
        var target: UInt32
        var migrate: Migration
    }

    /// The name of the snapshot collection these states are kept in. Snapshots saved under another name are never
    /// read as this state. By default (see ``init(name:version:coder:)``) the state's fully qualified type name, or
    /// for a `private`, `fileprivate` or function-local state type its mangled type name.
    public let name: String
    /// The schema version of states encoded by this code.
    public let version: UInt32
    /// Turns states into bytes and back (JSON by default).
    public let coder: any EventCoder
    private var steps: [UInt32: Step] = [:]

    /// Creates a schema at `version`, encoding with `coder`.
    /// - Parameter name: the snapshot collection's name. By default the state's fully qualified type name
    ///   (`String(reflecting:)`, such as "Banking.Account"). A `private`, `fileprivate` or function-local type has
    ///   no such name (the runtime prints "(unknown context at $…)" with an address that changes on every launch),
    ///   so its default is its mangled type name (`_mangledTypeName`, such as "7Banking7Account33_…LLV"), which is
    ///   the same on every launch and tells apart same-named private types of different files (its private
    ///   discriminator comes from the file's name); should that be unavailable, the reflected name without the
    ///   address ("Banking.(unknown context).Account"). A private type's default therefore changes when its file
    ///   is renamed, as any type's does when it or its module is renamed: give a fixed name to keep snapshots
    ///   readable across such renames.
    public init(name: String? = nil, version: UInt32 = 1, coder: any EventCoder = JSONEventCoder()) {
        self.name = name ?? Self.defaultName
        self.version = version
        self.coder = coder
    }

    /// The default collection name: see ``init(name:version:coder:)``.
    static var defaultName: String {
        let reflected = String(reflecting: State.self)
        guard reflected.contains(unknownContext) else { return reflected }
        if let mangled = _mangledTypeName(State.self), !mangled.isEmpty { return mangled }
        return withoutAddresses(reflected)
    }

    /// How the runtime names the context of a type it has no name for, followed by " $<address>)".
    private static var unknownContext: String { "(unknown context at " }

    /// `reflected` with every "(unknown context at $<address>)" written "(unknown context)".
    static func withoutAddresses(_ reflected: String) -> String {
        var result = ""
        var rest = Substring(reflected)
        while let marker = rest.range(of: unknownContext) {
            result += rest[..<marker.lowerBound]
            result += "(unknown context)"
            let afterMarker = rest[marker.upperBound...]
            guard let close = afterMarker.firstIndex(of: ")") else {
                rest = afterMarker[afterMarker.endIndex...]
                break
            }
            rest = afterMarker[afterMarker.index(after: close)...]
        }
        return result + rest
    }

    /// Registers a migration of encoded state from schema `source` to schema `target`. Migrations chain: `target`
    /// may itself have a migration onward.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` unless `source < target <= version`, or if `source`
    ///   already has a migration (as a second upcaster of an event type is refused), so that none is replaced silently.
    public mutating func registerMigration(
        from source: UInt32, to target: UInt32, _ migrate: @escaping Migration
    ) throws {
        guard source < target, target <= version else {
            throw EventStoreError.invalidArgument(
                "a snapshot migration must go from an older schema to a newer one, at most \(version); "
                    + "got \(source) to \(target)")
        }
        if let registered = steps[source] {
            throw EventStoreError.invalidArgument(
                "snapshot schema \(source) already has a migration (to \(registered.target))")
        }
        steps[source] = Step(target: target, migrate: migrate)
    }

    /// Registers a typed migration: snapshots of schema `source` decode as `Old`, and `convert` makes the current
    /// state from it.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` unless `source` is older than ``version``, or if `source`
    ///   already has a migration.
    public mutating func registerMigration<Old: Decodable & Sendable>(
        from source: UInt32, decoding old: Old.Type, _ convert: @escaping @Sendable (Old) throws -> State
    ) throws {
        let coder = self.coder
        try registerMigration(from: source, to: version) { data in
            try coder.encode(try convert(try coder.decode(Old.self, from: data)))
        }
    }

    /// Whether a snapshot of `schemaVersion` can be read: it is current, or migrations lead to the current version.
    public func canRead(schemaVersion: UInt32) -> Bool {
        var schema = schemaVersion
        while schema != version {
            guard let step = steps[schema] else { return false }
            schema = step.target
        }
        return true
    }

    /// Encodes `state` in the current schema.
    public func encode(_ state: State) throws -> Data {
        do {
            return try coder.encode(state)
        } catch {
            throw EventStoreError.codingFailed(type: "snapshot of \(State.self)", reason: "\(error)")
        }
    }

    /// Decodes the state of `snapshot`, migrating it from an older schema first.
    /// - Throws: ``SnapshotError/unreadableSnapshot(stream:version:schemaVersion:reason:)`` when the schema cannot
    ///   be read or the data does not decode.
    public func decode(_ snapshot: Snapshot) throws -> State {
        let unreadable = { (reason: String) in
            SnapshotError.unreadableSnapshot(
                stream: snapshot.stream, version: snapshot.version, schemaVersion: snapshot.schemaVersion,
                reason: reason)
        }
        var schema = snapshot.schemaVersion
        var data = snapshot.data
        while schema != version {
            guard let step = steps[schema] else {
                throw unreadable("no migration from schema \(schema) to the current schema \(version)")
            }
            do {
                data = try step.migrate(data)
            } catch {
                throw unreadable("the migration from schema \(schema) to \(step.target) failed: \(error)")
            }
            schema = step.target
        }
        do {
            return try coder.decode(State.self, from: data)
        } catch {
            throw unreadable("decoding \(State.self) failed: \(error)")
        }
    }
}
