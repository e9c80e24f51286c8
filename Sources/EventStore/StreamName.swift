import Foundation

/// The name of an event stream: non-empty, at most 255 UTF-8 bytes, with no control characters. Names that start
/// with `$` belong to system streams and are made only with ``system(_:)``.
///
/// Names are compared, hashed and ordered by their UTF-8 bytes, as the store keys streams: two canonically
/// equivalent spellings (an "é" precomposed or as "e" and a combining accent) are two different streams and two
/// different names, although Swift's `String` calls them equal.
public struct StreamName: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The most UTF-8 bytes a name may have.
    public static let maximumLength = 255

    /// The name as text.
    public let rawValue: String

    /// Creates a user stream name, checking every naming rule.
    /// - Throws: ``EventStoreError/invalidStreamName(_:rule:)`` naming the rule the name broke.
    public init(_ rawValue: String) throws {
        try Self.validate(rawValue, allowSystem: false)
        self.rawValue = rawValue
    }

    private init(unchecked rawValue: String) { self.rawValue = rawValue }

    /// Creates a system stream name; it must start with `$`.
    public static func system(_ rawValue: String) throws -> StreamName {
        try validate(rawValue, allowSystem: true)
        guard startsWithDollar(rawValue) else {
            throw EventStoreError.invalidStreamName(rawValue, rule: .systemPrefix)
        }
        return StreamName(unchecked: rawValue)
    }

    /// Validates a name that was stored by this store (user or system), for decoding.
    public static func stored(_ rawValue: String) throws -> StreamName {
        try validate(rawValue, allowSystem: true)
        return StreamName(unchecked: rawValue)
    }

    /// The system stream where every deletion is recorded as a ``StreamDeletion`` event, so that readers of the
    /// global log see deletions.
    public static let deletedStreams = StreamName(unchecked: "$deleted")

    /// Whether this is a system stream (its name starts with `$`).
    public var isSystem: Bool { Self.startsWithDollar(rawValue) }

    /// Whether `name`'s first byte is `$`. Not `hasPrefix("$")`, which compares characters: "$" followed by a
    /// combining mark is one character that is not "$", though its bytes start the system key space.
    private static func startsWithDollar(_ name: String) -> Bool { name.utf8.first == UInt8(ascii: "$") }

    /// The category: the part of the name before the first `-` character, or the whole name if it has none. A `-`
    /// that a combining mark modifies (`"a-\u{301}b"`) is a different character, not a `-`.
    public var category: String {
        // In ASCII every byte is a character, so the first "-" byte is the first "-" character: found without the
        // character-by-character walk (grapheme breaking) that a search of the String itself does. Stored category
        // index entries are keyed by this, so it must not change for existing names.
        let utf8 = rawValue.utf8
        if utf8.allSatisfy({ $0 < 0x80 }) {
            guard let dash = utf8.firstIndex(of: UInt8(ascii: "-")) else { return rawValue }
            return String(rawValue[..<dash])
        }
        guard let dash = rawValue.firstIndex(of: "-") else { return rawValue }
        return String(rawValue[..<dash])
    }

    public var description: String { rawValue }

    public static func < (lhs: StreamName, rhs: StreamName) -> Bool {
        lhs.rawValue.utf8.lexicographicallyPrecedes(rhs.rawValue.utf8)
    }

    /// Whether the two names have the same UTF-8 bytes (not `String`'s canonical equivalence).
    public static func == (lhs: StreamName, rhs: StreamName) -> Bool { lhs.rawValue.hasSameUTF8(as: rhs.rawValue) }

    /// Hashes the name's UTF-8 bytes, consistently with ``==(_:_:)``.
    public func hash(into hasher: inout Hasher) { rawValue.hashUTF8(into: &hasher) }

    private static func validate(_ name: String, allowSystem: Bool) throws {
        if name.isEmpty { throw EventStoreError.invalidStreamName(name, rule: .empty) }
        if name.utf8.count > maximumLength { throw EventStoreError.invalidStreamName(name, rule: .tooLong) }
        if name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            throw EventStoreError.invalidStreamName(name, rule: .controlCharacter)
        }
        if !allowSystem && startsWithDollar(name) {
            throw EventStoreError.invalidStreamName(name, rule: .reservedPrefix)
        }
    }
}

/// The naming rule a stream name broke.
public enum StreamNameRule: Sendable, Hashable, CustomStringConvertible {
    /// The name is empty.
    case empty
    /// The name is longer than ``StreamName/maximumLength`` UTF-8 bytes.
    case tooLong
    /// The name contains a control character.
    case controlCharacter
    /// The name starts with `$`, which is reserved for system streams.
    case reservedPrefix
    /// A system stream name must start with `$`.
    case systemPrefix

    public var description: String {
        switch self {
        case .empty: "a stream name must not be empty"
        case .tooLong: "a stream name must be at most \(StreamName.maximumLength) UTF-8 bytes"
        case .controlCharacter: "a stream name must not contain control characters"
        case .reservedPrefix: "names starting with '$' are reserved for system streams"
        case .systemPrefix: "a system stream name must start with '$'"
        }
    }
}

extension String {
    /// Whether the two strings have the same UTF-8 bytes (not `String`'s canonical equivalence): the identity of
    /// names the store keys by their bytes.
    package func hasSameUTF8(as other: String) -> Bool {
        guard utf8.count == other.utf8.count else { return false }
        // Native strings lend their bytes in place: one memcmp, or none when both share them (reads hand out one
        // name per stream).
        let compared = utf8.withContiguousStorageIfAvailable { left in
            other.utf8.withContiguousStorageIfAvailable { right in
                left.baseAddress == right.baseAddress
                    || memcmp(UnsafeRawPointer(left.baseAddress!), UnsafeRawPointer(right.baseAddress!), left.count) == 0
            }
        }
        return (compared ?? nil) ?? utf8.elementsEqual(other.utf8)
    }

    /// Hashes the string's UTF-8 bytes, consistently with ``hasSameUTF8(as:)``.
    package func hashUTF8(into hasher: inout Hasher) {
        // The same bytes go in whether the string lends them in place or not.
        if utf8.withContiguousStorageIfAvailable({ hasher.combine(bytes: UnsafeRawBufferPointer($0)) }) == nil {
            Array(utf8).withUnsafeBytes { hasher.combine(bytes: $0) }
        }
    }
}
