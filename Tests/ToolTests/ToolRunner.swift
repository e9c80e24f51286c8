// Runs the package's executables (built next to the test bundle by `swift test`) as child processes and captures
// their output and exit status (ProcessSupport's ChildProcess). Reads and waits happen off the cooperative pool.

import Foundation
import ProcessSupport
import Testing

struct ToolResult {
    var status: Int32
    var output: String
    var errors: String
}

enum ToolRunner {
    /// The built executable named `name`.
    static func executable(_ name: String) throws -> URL {
        let directory = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
        let candidates = [
            directory.appendingPathComponent(name),
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name),
        ]
        return try #require(
            candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) },
            "\(name) is not built next to the tests; run swift build first")
    }

    static func run(_ name: String, _ arguments: [String]) async throws -> ToolResult {
        let process = try ChildProcess(executable(name).path, arguments, standardOutput: .pipe, standardError: .pipe)
        // Drain both pipes while the child runs so that it never blocks on a full pipe.
        let outputHandle = try #require(process.standardOutput)
        let errorHandle = try #require(process.standardError)
        async let out = drain(outputHandle)
        async let err = drain(errorHandle)
        let (stdout, stderr) = await (out, err)
        let ending = try await process.exited()
        guard case .exited(let status) = ending else {
            // A signal is no exit status: -1, with the signal named after stderr.
            return ToolResult(status: -1, output: stdout, errors: stderr + "\n(\(name) \(ending))")
        }
        return ToolResult(status: status, output: stdout, errors: stderr)
    }

    /// Everything `handle` yields until end of file, read on a thread of its own.
    static func drain(_ handle: FileHandle) async -> String {
        await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
            Thread {
                let data = handle.readDataToEndOfFile()
                continuation.resume(returning: String(decoding: data, as: UTF8.self))
            }.start()
        }
    }

    /// Makes a new, empty directory under `parent`, or under the system's temporary directory when `parent` is nil.
    /// The caller removes it.
    static func temporaryDirectory(under parent: String? = nil) throws -> String {
        let name = "tooltest-\(UUID().uuidString)"
        let path = parent.map { $0 + "/" + name }
            ?? FileManager.default.temporaryDirectory.appendingPathComponent(name).path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }
}
