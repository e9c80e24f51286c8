// Event types are identified by their UTF-8 bytes, as stream names are: two canonically equivalent spellings (NFC
// and NFD "Café") are two types, each found by its own index, also when they are appended in one batch.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("Event types that differ only in Unicode normalisation")
struct EventTypeSpellingTests {
    @Test("appended in one batch, each is read by its own type")
    func canonicallyEquivalentTypesInOneBatch() async throws {
        let store = KeyValueEventStore(backend: InMemoryKeyValueStore())
        let nfc = "Caf\u{E9}"
        let nfd = "Cafe\u{301}"
        #expect(nfc == nfd && !nfc.utf8.elementsEqual(nfd.utf8))
        let events = [
            EventData(type: nfc, data: Data([1])), EventData(type: nfd, data: Data([2])),
            EventData(type: nfd, data: Data([3])), EventData(type: nfc, data: Data([4])),
        ]
        let stream = try StreamName("menu-1")
        _ = try await store.append(events, to: stream, expectedVersion: .noStream)
        let read = try await store.read(stream, from: .start, direction: .forward, limit: 10)
        #expect(read.map { Array($0.type.utf8) } == events.map { Array($0.type.utf8) })
        #expect(try await store.readEvents(ofType: nfc, from: 1, limit: 10).map(\.id) == [events[0].id, events[3].id])
        #expect(try await store.readEvents(ofType: nfd, from: 1, limit: 10).map(\.id) == [events[1].id, events[2].id])
    }
}
