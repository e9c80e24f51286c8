// The admin tool on stores created with a page size other than the default.

import EventStore
@testable import EventStoreKV
import Foundation
import ProcessSupport
import Testing

@Suite("eventstore admin tool: page sizes", .timeLimit(.minutes(5)))
struct AdminToolPageSizeTests {
    @Test("info and verify open a store whose page size is not the default", arguments: [4096, 65536])
    func nonDefaultPageSize(pageSize: Int) async throws {
        let parent = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: parent) }
        let directory = parent + "/store"
        let options = PageFileOptions(pageSize: pageSize, cacheSizeMB: 4, checkpointThresholdMB: 64)
        let store = try KeyValueEventStore.open(directory: directory, options: options)
        _ = try await store.append([EventData(type: "Happened", data: Data("{}".utf8))],
                                   to: try StreamName("account-1"), expectedVersion: .any)
        try await store.close()

        let info = try await ToolRunner.run("eventstore", ["info", directory])
        #expect(info.status == 0, "\(info.errors)")
        #expect(info.output.contains("pageSize                \(pageSize)"))
        let verify = try await ToolRunner.run("eventstore", ["verify", directory])
        #expect(verify.status == 0, "\(verify.errors)")
    }
}
