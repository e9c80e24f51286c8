// Mutation testing (twenty-fourth session): `verify`'s exit status when opening the store itself finds damage (both
// meta pages). The existing verify test damages only a tree page, so `verify` reporting "corrupted" with exit 0 went
// unnoticed.

import EventStore
@testable import EventStoreKV
import Foundation
import ProcessSupport
import Testing

@Suite("The admin tool: verify fails when both meta pages are damaged", .timeLimit(.minutes(5)))
final class VerifyExitTests {
    private let scratch: String

    init() throws { scratch = try ToolRunner.temporaryDirectory() }

    deinit { try? FileManager.default.removeItem(atPath: scratch) }

    /// A closed store (8192-byte pages) holding one event.
    private func closedStoreOfOneEvent() async throws -> String {
        let directory = try ToolRunner.temporaryDirectory(under: scratch) + "/store"
        let engine = try await PageFileKeyValueStore.open(directory: directory)
        let store = KeyValueEventStore(backend: engine)
        _ = try await store.append(
            [EventData(type: "Happened", data: Data("{}".utf8))], to: try StreamName("account-1"),
            expectedVersion: .any)
        try await engine.close()
        return directory
    }

    @Test("verify exits 1 (not 0) and reports corruption when both meta pages are damaged")
    func verifyWithBothMetaPagesDamaged() async throws {
        let directory = try await closedStoreOfOneEvent()

        // Damage both meta pages (pages 0 and 1 of 8192 bytes): their checksums no longer match.
        let data = try FileHandle(forUpdating: URL(fileURLWithPath: directory + "/data"))
        for page in 0..<2 {
            try data.seek(toOffset: UInt64(page * 8192 + 200))
            data.write(Data(repeating: 0xA5, count: 64))
        }
        try data.close()

        let result = try await ToolRunner.run("eventstore", ["verify", directory, "--json"])
        #expect(result.output.contains("corrupted"), "\(result.output)\(result.errors)")
        #expect(result.status == 1, "verify found damage but exited \(result.status): \(result.output)\(result.errors)")
    }
    /// The magic and page size are outside the checksum's reach of a damaged slot: a store whose two meta pages lost
    /// them was reported as "not a store" (exit 3), sending the operator to look for the store elsewhere.
    @Test("verify exits 1 and names pages 0 and 1 when both meta pages lost their magic")
    func verifyWithBothMagicsDamaged() async throws {
        let directory = try await closedStoreOfOneEvent()

        // Overwrite the magic (bytes 32..<40) of both meta pages of 8192 bytes.
        let data = try FileHandle(forUpdating: URL(fileURLWithPath: directory + "/data"))
        for page in 0..<2 {
            try data.seek(toOffset: UInt64(page * 8192 + 32))
            data.write(Data("XXXXXXXX".utf8))
        }
        try data.close()

        let result = try await ToolRunner.run("eventstore", ["verify", directory])
        #expect(result.status == 1, "exit \(result.status): \(result.output)\(result.errors)")
        #expect((result.output + result.errors).contains("pages 0 and 1"), "\(result.output)\(result.errors)")
    }
}
