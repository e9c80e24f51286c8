// The identity of one saga instance, and the names of the streams the saga machinery keeps.
//
// Invariants:
// - A saga id is 1...200 UTF-8 bytes with no control characters and no "/", so that the idempotency keys built
//   from it ("id/step/attempt") split unambiguously and its stream name is always valid; a new one never starts
//   with "resource-", so a saga's stream ("$saga-id") is never a resource's lock stream ("$saga-resource-name").
// - Every stream the sagas write is a system stream ("$saga-...", "$sagas-..."), so user streams never collide.

import EventStore

/// The id of one saga instance, chosen by the caller (an order number, a transfer id) so that starting it twice
/// is harmless.
public struct SagaID: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The id as text.
    public let rawValue: String

    /// The prefix reserved for resource locks: the stream of a saga with such an id would be a resource's lock
    /// stream ("$saga-resource-alice"), so its runner would wait on itself and contend with every saga using that
    /// resource.
    public static let reservedPrefix = "resource-"

    /// Creates an id.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` if it is empty, longer than 200 bytes, contains "/" or a
    ///   control character, or starts with ``reservedPrefix``.
    public init(_ rawValue: String) throws {
        guard !rawValue.hasPrefix(Self.reservedPrefix) else {
            throw EventStoreError.invalidArgument(
                "a saga id must not start with \"\(Self.reservedPrefix)\", which names resource locks")
        }
        try self.init(stored: rawValue)
    }

    /// An id as stored: the rules of ``init(_:)`` but the reserved prefix, which ids stored before it was reserved
    /// may have, so that those sagas stay readable.
    init(stored rawValue: String) throws {
        guard !rawValue.isEmpty, rawValue.utf8.count <= 200 else {
            throw EventStoreError.invalidArgument(
                "a saga id must be 1 to 200 UTF-8 bytes, got \"\(rawValue.prefix(64))\"")
        }
        guard !rawValue.contains("/"),
            !rawValue.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw EventStoreError.invalidArgument("a saga id must not contain \"/\" or control characters")
        }
        self.rawValue = rawValue
    }

    public init(from decoder: any Decoder) throws {
        try self.init(stored: try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }

    /// Ids are ordered, compared and hashed by their UTF-8 bytes, as their streams are: two canonically equivalent
    /// spellings are two sagas (see ``StreamName``).
    public static func < (lhs: SagaID, rhs: SagaID) -> Bool {
        lhs.rawValue.utf8.lexicographicallyPrecedes(rhs.rawValue.utf8)
    }

    /// Whether the two ids have the same UTF-8 bytes.
    public static func == (lhs: SagaID, rhs: SagaID) -> Bool { lhs.rawValue.hasSameUTF8(as: rhs.rawValue) }

    /// Hashes the id's UTF-8 bytes, consistently with ``==(_:_:)``.
    public func hash(into hasher: inout Hasher) { rawValue.hashUTF8(into: &hasher) }

    /// The stream holding this saga's log.
    var stream: StreamName {
        get throws { try StreamName.system("$saga-\(rawValue)") }
    }
}

/// The system streams of the saga machinery.
enum SagaStreams {
    /// One event per saga start and per saga end: recovery's way to the unfinished sagas.
    static func index() throws -> StreamName { try StreamName.system("$sagas-index") }
    /// Low-water marks of the index: every saga opened before the mark is finished.
    static func checkpoint() throws -> StreamName { try StreamName.system("$sagas-index-checkpoint") }
    /// The lock stream of a resource a step declares.
    static func resource(_ name: String) throws -> StreamName { try StreamName.system("$saga-resource-\(name)") }
}
