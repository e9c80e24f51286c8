// RandomUUID: event ids drawn from the system random generator.
//
// Invariants:
// - The result is a version 4, variant 1 (RFC 9562) UUID with 122 random bits.
// - No file is opened per id: on Linux, Foundation's `UUID()` opens, reads and closes /dev/urandom for every id,
//   which cost a single-event append about a tenth of its CPU.
// - Random bytes come from getentropy(3) (getrandom(2)) 256 bytes at a time: one system call per 16 ids instead of
//   two per id, which were about 5% of a batch append's CPU. Each byte is handed out once, under `RandomPool.state`'s Mutex.
// - A forked child never hands out bytes its parent also hands out: a pthread_atfork child handler bumps
//   `forkGeneration` (an atomic, safe in a child), and a pool filled in another generation is discarded.

import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension UUID {
    /// A random version 4 UUID from the system's cryptographically secure generator.
    @usableFromInline
    static func systemRandom() -> UUID {
        var bytes = RandomPool.next16()
        return withUnsafeMutableBytes(of: &bytes) { raw in
            raw[6] = (raw[6] & 0x0F) | 0x40  // version 4
            raw[8] = (raw[8] & 0x3F) | 0x80  // variant 1
            return UUID(uuid: raw.load(as: uuid_t.self))
        }
    }
}

/// Cryptographically secure random bytes fetched in blocks; see the invariants at the top of this file.
enum RandomPool {
    /// Bytes fetched per refill: getentropy's limit.
    static let blockSize = 256

    struct State {
        var bytes = [UInt8](repeating: 0, count: RandomPool.blockSize)
        /// The next unused byte; `blockSize` when the block is used up.
        var next = RandomPool.blockSize
        /// The fork generation the block was fetched in.
        var generation: UInt64 = 0
    }

    static let state = Mutex(State())

    /// Bumped in a forked child, so the child never reuses its parent's block.
    static let forkGeneration = Atomic<UInt64>(0)

    /// Registers the fork handler once, on first use.
    private static let forkHandlerRegistered: Bool = {
        #if canImport(Glibc)
        return pthread_atfork(nil, nil, { RandomPool.forkGeneration.add(1, ordering: .relaxed) }) == 0
        #else
        return false
        #endif
    }()

    /// Sixteen fresh random bytes.
    static func next16() -> (UInt64, UInt64) {
        #if canImport(Glibc)
        guard forkHandlerRegistered else { return systemGenerator16() }
        return state.withLock { state in
            let generation = forkGeneration.load(ordering: .relaxed)
            if state.next + 16 > blockSize || state.generation != generation {
                guard refill(&state.bytes) else { return systemGenerator16() }
                state.next = 0
                state.generation = generation
            }
            defer { state.next += 16 }
            return state.bytes.withUnsafeBytes { raw in
                (raw.loadUnaligned(fromByteOffset: state.next, as: UInt64.self),
                 raw.loadUnaligned(fromByteOffset: state.next + 8, as: UInt64.self))
            }
        }
        #else
        return systemGenerator16()
        #endif
    }

    /// Fills `bytes` (at most 256) with getentropy(3); false if the system refuses (then ids come from the system
    /// generator).
    private static func refill(_ bytes: inout [UInt8]) -> Bool {
        #if canImport(Glibc)
        bytes.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return false }
            return getentropy(base, raw.count) == 0
        }
        #else
        false
        #endif
    }

    private static func systemGenerator16() -> (UInt64, UInt64) {
        var generator = SystemRandomNumberGenerator()
        return (generator.next(), generator.next())
    }
}
