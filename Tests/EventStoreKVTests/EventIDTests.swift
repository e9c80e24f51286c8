// Default event ids: time-ordered version 7 UUIDs, increasing within a process, drawn without opening a file per id.

@testable import EventStore
import Foundation
import Testing

@Suite("Default event ids")
struct EventIDTests {
    private static func bytes(_ id: UUID) -> [UInt8] { withUnsafeBytes(of: id.uuid) { Array($0) } }

    /// The 48-bit millisecond timestamp at the front of a version 7 id.
    private static func milliseconds(_ id: UUID) -> UInt64 {
        bytes(id)[0..<6].reduce(0) { $0 << 8 | UInt64($1) }
    }

    private static func nowMilliseconds() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1_000) }

    @Test("default ids are version 7, variant 1, distinct, increasing, and carry the time they were made")
    func defaultIDsAreTimeOrderedVersion7() {
        let before = Self.nowMilliseconds()
        let ids = (0..<10_000).map { _ in EventData(type: "T", data: Data()).id }
        let after = Self.nowMilliseconds()
        #expect(Set(ids).count == ids.count)
        for id in ids {
            let bytes = Self.bytes(id)
            #expect(bytes[6] >> 4 == 7, "version nibble of \(id)")
            #expect(bytes[8] >> 6 == 0b10, "variant bits of \(id)")
            // Foundation agrees: it prints the version digit in position 14 of the string form.
            #expect(Array(id.uuidString)[14] == "7")
        }
        for (earlier, later) in zip(ids, ids.dropFirst()) {
            #expect(Self.bytes(earlier).lexicographicallyPrecedes(Self.bytes(later)), "\(earlier) then \(later)")
        }
        // The clock read with Date may be a millisecond apart. Ids made faster than one millisecond's sequence allows
        // (at least 2,048) run a few milliseconds ahead of the clock, more so while other tests make ids at the
        // same time; a second is far beyond that and far below a wrong unit.
        #expect(Self.milliseconds(ids[0]) + 1 >= before)
        #expect(Self.milliseconds(ids[ids.count - 1]) <= after + 1_000)
        // Every random bit varies across ten thousand ids (a constant bit would mean a broken generator).
        var seenOne = [UInt8](repeating: 0, count: 16)
        var seenZero = [UInt8](repeating: 0, count: 16)
        for id in ids {
            let bytes = Self.bytes(id)
            for index in 0..<16 {
                seenOne[index] |= bytes[index]
                seenZero[index] |= ~bytes[index]
            }
        }
        #expect(seenOne[8] & seenZero[8] | 0xC0 == 0xFF, "byte 8 has random bits that never change")
        for index in 9..<16 {
            #expect(seenOne[index] & seenZero[index] == 0xFF, "byte \(index) has bits that never change")
        }
    }

    @Test("within one millisecond, with the clock stepping back, and past 4,096 ids a millisecond, ids keep increasing")
    func sequenceKeepsIDsIncreasing() {
        var source = IDSource()
        var ids: [(high: UInt64, low: UInt64)] = []
        // 5,000 ids in one millisecond run the 12-bit sequence out, then a clock that steps back by a second.
        for _ in 0..<5_000 { ids.append(source.next(now: 1_700_000_000_000)) }
        for _ in 0..<10 { ids.append(source.next(now: 1_699_999_999_000)) }
        ids.append(source.next(now: 1_700_000_000_500))
        for (earlier, later) in zip(ids, ids.dropFirst()) {
            #expect(earlier.high < later.high, "the sequence or time must rise: \(earlier.high) then \(later.high)")
        }
        #expect(ids[0].high >> 16 == 1_700_000_000_000)
        #expect(ids[4_999].high >> 16 == 1_700_000_000_001, "the sequence ran out and moved to the next millisecond")
        #expect(ids[5_009].high >> 16 == 1_700_000_000_001, "a clock stepping back does not move ids back")
        #expect(ids[5_010].high >> 16 == 1_700_000_000_500)
        #expect(ids.allSatisfy { $0.high & 0xF000 == 0x7000 && $0.low >> 62 == 0b10 })
    }

    @Test("ids drawn at once by many tasks are all distinct, and each task's ids increase")
    func concurrentIDsAreDistinct() async {
        let batches = await withTaskGroup(of: [UUID].self) { group in
            for _ in 0..<8 { group.addTask { (0..<3_000).map { _ in EventData(type: "T", data: Data()).id } } }
            var batches: [[UUID]] = []
            for await batch in group { batches.append(batch) }
            return batches
        }
        let ids = batches.flatMap { $0 }
        #expect(ids.count == 24_000)
        #expect(Set(ids).count == ids.count)
        for batch in batches {
            let increasing = zip(batch, batch.dropFirst()).allSatisfy {
                Self.bytes($0).lexicographicallyPrecedes(Self.bytes($1))
            }
            #expect(increasing)
        }
    }
}
