// Keeps EventStoreBench building and working: every workload at a tiny size, with the JSON output checked. Speed is
// never asserted here; it is measured in release builds (docs/PERFORMANCE.md).

import Foundation
import Testing

@Suite("EventStoreBench smoke")
struct BenchmarkSmokeTests {
    @Test("all workloads run at a tiny scale and print one JSON line each")
    func allWorkloads() async throws {
        let directory = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try await ToolRunner.run("EventStoreBench", ["all", "--dir", directory, "--json", "--scale", "0.01"])
        #expect(result.status == 0, "\(result.errors)")
        let lines = result.output.split(separator: "\n")
        #expect(lines.count == 5)
        var workloads: [String] = []
        for line in lines {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            workloads.append(object["workload"] as? String ?? "")
            #expect((object["events"] as? Int ?? 0) > 0)
            #expect(object["seconds"] is Double || object["seconds"] is Int)
            #expect(object["events_per_sec"] is Int)
            #expect(object["peak_rss_mb"] is Int)
        }
        #expect(workloads == ["append-single", "append-batch", "append-concurrent", "read-stream", "read-all"])
    }

    @Test("the read workloads also run through the copying reads, with a chosen cache size")
    func copyingReads() async throws {
        for workload in ["read-stream", "read-all"] {
            let directory = try ToolRunner.temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let result = try await ToolRunner.run(
                "EventStoreBench",
                [workload, "--dir", directory, "--json", "--scale", "0.01", "--copying-reads", "--cache-mb", "2",
                 "--repeat-reads", "2"])
            #expect(result.status == 0, "\(result.errors)")
            #expect(result.output.contains("\"workload\":\"\(workload)\""))
            #expect(result.errors.contains("best of 2 reads"))
        }
    }

    @Test("bad arguments are refused with a usage message")
    func badArguments() async throws {
        let unknown = try await ToolRunner.run("EventStoreBench", ["nope", "--dir", "/tmp"])
        #expect(unknown.status == 2)
        #expect(unknown.errors.contains("unknown workload"))
        let missing = try await ToolRunner.run("EventStoreBench", ["all"])
        #expect(missing.status == 2)
        #expect(missing.errors.contains("--dir is required"))
        let noCache = try await ToolRunner.run("EventStoreBench", ["read-all", "--dir", "/tmp", "--cache-mb", "0"])
        #expect(noCache.status == 2)
        #expect(noCache.errors.contains("--cache-mb needs"))
    }
}
