// Mutation testing (twenty-fourth session): scavenge commits each batch "on the condition that the stream's metadata is
// still the one it was computed from; a change makes it recompute" (Scavenger.swift). No test changed the metadata
// between the plan and the commit, so a scavenge dropping that condition (and removing events a metadata change had
// just made visible again: acknowledged events lost) went unnoticed.
import EventStore
@testable import EventStoreKV
import Foundation
import KeyValueTestSupport
import Testing

@Suite("A metadata change under a scavenge batch makes it recompute")
struct ScavengeMetadataRaceTests {
    @Test("events made visible again while scavenge plans their removal are not removed")
    func metadataWidenedUnderScavenge() async throws {
        let backend = ScanHookedStore()
        let store = KeyValueEventStore(backend: backend)
        let stream = try StreamName("widened-1")
        _ = try await store.append(makeEvents(5), to: stream, expectedVersion: .noStream)
        try await store.setMetadata(StreamMetadata(maxCount: 2), for: stream)
        #expect(try await store.read(stream).map(\.version) == [4, 5])
        // Scavenge has read the metadata (maxCount 2); as it scans the stream index, an operator removes the limit.
        backend.arm(atScan: 1) {
            try await store.setMetadata(StreamMetadata(), for: stream)
        }
        try await store.scavenge()
        #expect(try await store.read(stream).map(\.version) == [1, 2, 3, 4, 5], "visible events were scavenged")
    }
}
