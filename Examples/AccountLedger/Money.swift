// Amounts in the ledger are integers in minor units (cents). Never floating point: parsing accepts digits only,
// and display formats with integer division.

/// An amount of money in cents.
struct Cents: Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    var value: Int64

    init(_ value: Int64) { self.value = value }

    /// Parses a user-typed amount of cents: digits only, at least 1, at most 10^15 (ten trillion units).
    static func parse(_ text: String, what: String = "amount") throws -> Cents {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else {
            if text.hasPrefix("-") { throw LedgerError.invalidInput("\(what) must be positive, got \(text)") }
            throw LedgerError.invalidInput(
                "\(what) must be a whole number of cents (digits only, e.g. 1250 for 12.50), got \"\(text)\"")
        }
        // Leading zeros change nothing; the length check keeps Int64's parse from overflowing.
        let digits = text.drop { $0 == "0" }
        guard digits.utf8.count <= 16, let value = Int64(digits.isEmpty ? "0" : String(digits)),
            value <= Self.maximum.value
        else {
            throw LedgerError.invalidInput("\(what) \(text) is larger than the maximum \(Self.maximum.value) cents")
        }
        guard value > 0 else { throw LedgerError.invalidInput("\(what) must be positive, got \(text)") }
        return Cents(value)
    }

    static let maximum = Cents(1_000_000_000_000_000)
    static let zero = Cents(0)

    static func < (lhs: Cents, rhs: Cents) -> Bool { lhs.value < rhs.value }

    /// "12.50" for 1250 cents; "-0.05" for -5.
    var description: String { Self.format(Int128(value)) }

    /// `cents` as units and two decimals, exactly.
    static func format(_ cents: Int128) -> String {
        let sign = cents < 0 ? "-" : ""
        let magnitude = cents.magnitude
        let fraction = magnitude % 100
        return "\(sign)\(magnitude / 100).\(fraction < 10 ? "0" : "")\(fraction)"
    }

    /// Any Int64 decodes: stored amounts are checked where they are folded (Account.apply), with checked arithmetic.
    init(from decoder: any Decoder) throws { value = try decoder.singleValueContainer().decode(Int64.self) }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(value)
    }
}

/// A sum of amounts across accounts. Each account's balance and running totals fit an Int64 (Account.requireRoom),
/// but their sum over many accounts may not, so sums are 128-bit: exact, and never a trap.
struct CentsTotal: Hashable, Sendable, CustomStringConvertible {
    var value: Int128 = 0

    static let zero = CentsTotal()

    static func + (lhs: CentsTotal, rhs: Cents) -> CentsTotal { CentsTotal(value: lhs.value + Int128(rhs.value)) }
    static func - (lhs: CentsTotal, rhs: CentsTotal) -> CentsTotal { CentsTotal(value: lhs.value - rhs.value) }

    var description: String { Cents.format(value) }
}
