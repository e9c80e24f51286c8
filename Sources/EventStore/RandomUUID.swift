// RandomUUID: event ids drawn from the system's random source.
//
// Invariants:
// - The result is a version 4, variant 1 (RFC 9562) UUID with 122 random bits.
// - Every id uses random bytes no other id used: they come from a pool guarded by one Mutex, filled from the kernel
//   (/dev/urandom, kept open) 4 KiB at a time, so a batch of 100 events costs one read(2) per 256 ids instead of two
//   getrandom(2) calls per id (a sixteenth of append-batch's CPU). Where the file cannot be read, each id falls back
//   to SystemRandomNumberGenerator (getrandom).
// - No file is opened per id: Foundation's `UUID()` on Linux opens, reads and closes /dev/urandom for every id.
// - A process that forks without exec would share the pool with its child; Swift code starts child processes
//   with posix_spawn (Foundation's Process), which does not copy memory.

import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Random bytes read from the kernel in blocks.
private struct RandomPool {
    static let blockBytes = 4_096

    var bytes = [UInt8](repeating: 0, count: RandomPool.blockBytes)
    var used = RandomPool.blockBytes
    /// /dev/urandom, opened on first use and kept open; -1 once it failed (then the generator is used instead).
    var descriptor: Int32?

    /// The next 16 random bytes, or nil if the kernel's random file cannot be read.
    mutating func next16() -> (UInt64, UInt64)? {
        if used + 16 > bytes.count {
            guard refill() else { return nil }
        }
        defer { used += 16 }
        return bytes.withUnsafeBytes { raw in
            (raw.loadUnaligned(fromByteOffset: used, as: UInt64.self),
             raw.loadUnaligned(fromByteOffset: used + 8, as: UInt64.self))
        }
    }

    private mutating func refill() -> Bool {
        #if canImport(Glibc)
            if descriptor == nil { descriptor = open("/dev/urandom", O_RDONLY | O_CLOEXEC) }
            guard let descriptor, descriptor >= 0 else { return false }
            var filled = 0
            while filled < bytes.count {
                let count = bytes.withUnsafeMutableBytes { raw in
                    read(descriptor, raw.baseAddress! + filled, raw.count - filled)
                }
                if count < 0 && errno == EINTR { continue }
                guard count > 0 else {
                    close(descriptor)
                    self.descriptor = -1
                    return false
                }
                filled += count
            }
            used = 0
            return true
        #else
            return false
        #endif
    }
}

private let randomPool = Mutex(RandomPool())

extension UUID {
    /// A random version 4 UUID from the system's cryptographically secure random source.
    @usableFromInline
    static func systemRandom() -> UUID {
        var words: (UInt64, UInt64)
        if let pooled = randomPool.withLock({ $0.next16() }) {
            words = pooled
        } else {
            var generator = SystemRandomNumberGenerator()
            words = (generator.next(), generator.next())
        }
        return withUnsafeMutableBytes(of: &words) { raw in
            raw[6] = (raw[6] & 0x0F) | 0x40  // version 4
            raw[8] = (raw[8] & 0x3F) | 0x80  // variant 1
            return UUID(uuid: raw.load(as: uuid_t.self))
        }
    }
}
