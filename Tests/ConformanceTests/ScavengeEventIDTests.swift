// Mutation testing (twenty-fourth session): scavenge removes an event "in one transaction with everything that points
// to it", its event-id entry (`I`) included (Scavenger.swift). No test looked at the event-id entries after a scavenge,
// so a scavenge leaving them behind (pointing at removed positions, and never reclaimed) went unnoticed.
import EventStore
@testable import EventStoreKV
import Foundation
import KeyValueTestSupport
import Testing

@Suite("Scavenge removes the event-id entries of the events it removes")
struct ScavengeEventIDTests {
    @Test("after a scavenge, no event-id entry names a removed event", arguments: Backends.all)
    func scavengeRemovesEventIDs(backend: Backend) async throws {
        try await backend.withStore { store in
            let (gone, kept) = (try StreamName("gone-1"), try StreamName("kept-1"))
            let goneEvents = makeEvents(3, label: "g")
            let keptEvents = makeEvents(2, label: "k")
            _ = try await store.append(goneEvents, to: gone, expectedVersion: .noStream)
            _ = try await store.append(keptEvents, to: kept, expectedVersion: .noStream)
            _ = try await store.delete(gone, expectedVersion: .exact(3), mode: .soft)
            for event in goneEvents {
                #expect(try await store.backend.get(KeyLayout.eventID(event.id)) != nil, "indexed before scavenge")
            }

            let report = try await store.scavenge()
            #expect(report.eventsRemoved == 3)
            for event in goneEvents {
                let entry = try await store.backend.get(KeyLayout.eventID(event.id))
                #expect(entry == nil, "the event-id entry of scavenged event \(event.id) is still stored")
            }
            for event in keptEvents {
                #expect(try await store.backend.get(KeyLayout.eventID(event.id)) != nil, "a live event keeps its entry")
            }
        }
    }
}
