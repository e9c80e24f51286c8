// Random event ids without a file per id: Foundation's UUID() on Linux opens, reads and closes /dev/urandom for every
// UUID, which is three system calls and a file descriptor on every append of an event without an explicit id.
//
// Invariants:
// - The ids are RFC 9562 version 4 UUIDs: 122 random bits from the system's cryptographically secure generator
//   (SystemRandomNumberGenerator: getrandom(2) on Linux), with the version nibble 4 and the variant bits 10.
// - Nothing is cached or seeded in-process, so ids stay unpredictable and unique across forks and restarts.

import Foundation

extension UUID {
    /// A random version 4 UUID drawn from the system's secure random generator without opening a file.
    @usableFromInline
    static func randomVersion4() -> UUID {
        var generator = SystemRandomNumberGenerator()
        var bits = (generator.next() as UInt64, generator.next() as UInt64)
        return withUnsafeMutableBytes(of: &bits) { raw in
            raw[6] = (raw[6] & 0x0F) | 0x40  // version 4
            raw[8] = (raw[8] & 0x3F) | 0x80  // variant 10 (RFC 9562)
            return UUID(uuid: raw.loadUnaligned(as: uuid_t.self))
        }
    }
}
