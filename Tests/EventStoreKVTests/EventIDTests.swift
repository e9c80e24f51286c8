// Default event ids: random version 4 UUIDs drawn without opening a file per id.

import EventStore
import Foundation
import Testing

@Suite("Default event ids")
struct EventIDTests {
    @Test("default ids are version 4, variant 1 and distinct")
    func defaultIDsAreRandomVersion4() {
        let ids = (0..<10_000).map { _ in EventData(type: "T", data: Data()).id }
        #expect(Set(ids).count == ids.count)
        for id in ids {
            let bytes = withUnsafeBytes(of: id.uuid) { Array($0) }
            #expect(bytes[6] >> 4 == 4, "version nibble of \(id)")
            #expect(bytes[8] >> 6 == 0b10, "variant bits of \(id)")
            // Foundation agrees: it prints the version digit in position 14 of the string form.
            #expect(Array(id.uuidString)[14] == "4")
        }
        // Every other bit varies across ten thousand ids (a constant bit would mean a broken generator).
        var seenOne = [UInt8](repeating: 0, count: 16)
        var seenZero = [UInt8](repeating: 0, count: 16)
        for id in ids {
            withUnsafeBytes(of: id.uuid) { raw in
                for index in 0..<16 {
                    seenOne[index] |= raw[index]
                    seenZero[index] |= ~raw[index]
                }
            }
        }
        for index in 0..<16 {
            let fixed: UInt8 = index == 6 ? 0xF0 : index == 8 ? 0xC0 : 0
            #expect(seenOne[index] & seenZero[index] | fixed == 0xFF, "byte \(index) has bits that never change")
        }
    }

    @Test("ids drawn at once by many tasks are all distinct (each takes its own bytes of the shared pool)")
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
    }
}
