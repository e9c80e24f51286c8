// Default event ids: random version 4 UUIDs from the system's secure generator (not a file read per id).

import EventStore
import Foundation
import Testing

@Suite("Default event ids")
struct EventIDTests {
    @Test("events without an explicit id get distinct, well-formed random version 4 UUIDs")
    func defaultIDsAreRandomVersion4() {
        let ids = (0..<10_000).map { _ in EventData(type: "Deposited", data: Data()).id }
        #expect(Set(ids).count == ids.count)
        for id in ids {
            #expect(id.uuid.6 >> 4 == 4, "version nibble of \(id)")
            #expect(id.uuid.8 & 0xC0 == 0x80, "variant bits of \(id)")
        }
        // Every random byte varies: 10,000 ids leave no byte position stuck (the chance of that is nil).
        let firstBytes = Set(ids.map { $0.uuid.0 })
        let lastBytes = Set(ids.map { $0.uuid.15 })
        let versionLowNibbles = Set(ids.map { $0.uuid.6 & 0x0F })
        #expect(firstBytes.count > 200)
        #expect(lastBytes.count > 200)
        #expect(versionLowNibbles.count == 16)
        // The text form parses back to the same id, as Foundation's own UUIDs do.
        #expect(ids.prefix(100).allSatisfy { UUID(uuidString: $0.uuidString) == $0 })
    }
}
