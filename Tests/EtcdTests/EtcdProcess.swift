// Runs EtcdNode helper processes and reads their output line by line.
//
// Invariants: nothing here blocks a cooperative thread; reads and waits for the end run on threads of their own.

import EventStore
import Foundation
import ProcessSupport

/// One running EtcdNode process.
final class EtcdNodeProcess: Sendable {
    private let process: ChildProcess
    private let output: FileHandle
    private let pending = Locked(Data())

    init(_ arguments: [String]) throws {
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent("EtcdNode")
        let process = try ChildProcess(executable.path, arguments, standardOutput: .pipe)
        guard let output = process.standardOutput else {
            throw EventStoreError.backend("EtcdNode was started without a pipe for its output")
        }
        self.process = process
        self.output = output
    }

    /// The next line of output, or nil at end of output.
    func nextLine() async -> String? {
        await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                while true {
                    if let line = self.pending.withLock({ buffer -> String? in
                        guard let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
                        let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                        buffer.removeSubrange(buffer.startIndex...newline)
                        return line
                    }) {
                        continuation.resume(returning: line)
                        return
                    }
                    let chunk = self.output.availableData
                    if chunk.isEmpty {
                        continuation.resume(returning: nil)
                        return
                    }
                    self.pending.withLock { $0.append(chunk) }
                }
            }
        }
    }

    /// Every remaining line, until the process ends its output.
    func remainingLines() async -> [String] {
        var lines: [String] = []
        while let line = await nextLine() { lines.append(line) }
        return lines
    }

    /// Kills the process at once (SIGKILL): no close, no lease release.
    func kill() async { await process.kill() }

    /// Waits for the process to end, without blocking a cooperative thread.
    func waitForExit() async throws { _ = try await process.exited() }
}
