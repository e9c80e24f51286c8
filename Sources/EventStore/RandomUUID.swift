// RandomUUID: event ids drawn from the system random generator.
//
// Invariants:
// - The result is a version 4, variant 1 (RFC 9562) UUID with 122 random bits.
// - No file is opened per id: on Linux, Foundation's `UUID()` opens, reads and closes /dev/urandom for every id,
//   which cost a single-event append about a tenth of its CPU. SystemRandomNumberGenerator uses getrandom(2).

import Foundation

extension UUID {
    /// A random version 4 UUID from the system's cryptographically secure generator.
    @usableFromInline
    static func systemRandom() -> UUID {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next()
        let low = generator.next()
        var bytes = (high, low)
        return withUnsafeMutableBytes(of: &bytes) { raw in
            raw[6] = (raw[6] & 0x0F) | 0x40  // version 4
            raw[8] = (raw[8] & 0x3F) | 0x80  // variant 1
            return UUID(uuid: raw.load(as: uuid_t.self))
        }
    }
}
