// The identity of one saga instance, and the names of the streams the saga machinery keeps.
//
// Invariants:
// - A saga id is 1...200 UTF-8 bytes with no control characters and no "/", so that the idempotency keys built
//   from it ("id/step/attempt") split unambiguously and its stream name is always valid.
// - Every stream the sagas write is a system stream ("$saga-...", "$sagas-..."), so user streams never collide.

import EventStore

/// The id of one saga instance, chosen by the caller (an order number, a transfer id) so that starting it twice
/// is harmless.
public struct SagaID: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// The id as text.
    public let rawValue: String

    /// Creates an id.
    /// - Throws: ``EventStoreError/invalidArgument(_:)`` if it is empty, longer than 200 bytes, or contains "/" or
    ///   a control character.
    public init(_ rawValue: String) throws {
        guard !rawValue.isEmpty, rawValue.utf8.count <= 200 else {
            throw EventStoreError.invalidArgument("a saga id must be 1 to 200 UTF-8 bytes, got \"\(rawValue.prefix(64))\"")
        }
        guard !rawValue.contains("/"),
            !rawValue.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw EventStoreError.invalidArgument("a saga id must not contain \"/\" or control characters")
        }
        self.rawValue = rawValue
    }

    public init(from decoder: any Decoder) throws {
        try self.init(try decoder.singleValueContainer().decode(String.self))
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }

    public static func < (lhs: SagaID, rhs: SagaID) -> Bool { lhs.rawValue < rhs.rawValue }

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
