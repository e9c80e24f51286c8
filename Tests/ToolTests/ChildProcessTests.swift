// ProcessSupport's ChildProcess (posix_spawn in place of Foundation's Process) and ParentWatch: what a child gets,
// how its end is reported, and that a child whose parent has gone ends too.

import Foundation
import ProcessSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

@Suite("Child processes: posix_spawn, descriptors, ends, and orphans", .timeLimit(.minutes(2)))
struct ChildProcessTests {
    /// Runs `/bin/sh -c script` and returns how it ended, its stdout and its stderr.
    private func shell(_ script: String) async throws -> (ChildProcess.Termination, String, String) {
        let child = try ChildProcess("/bin/sh", ["-c", script], standardOutput: .pipe, standardError: .pipe)
        let output = try #require(child.standardOutput)
        let errors = try #require(child.standardError)
        async let out = Self.read(output)
        async let err = Self.read(errors)
        let (stdout, stderr) = await (out, err)
        return (try await child.exited(), stdout, stderr)
    }

    private static func read(_ handle: FileHandle) async -> String {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: String(decoding: handle.readDataToEndOfFile(), as: UTF8.self)) }
                .start()
        }
    }

    @Test("an exit status, a signal, and stdout and stderr apart")
    func endsAndOutput() async throws {
        let (exited, out, err) = try await shell("echo out; echo err >&2; exit 3")
        #expect(exited == .exited(3))
        #expect(out == "out\n" && err == "err\n", "stdout \(out.debugDescription), stderr \(err.debugDescription)")
        let (killed, _, _) = try await shell("kill -9 $$")
        #expect(killed == .signalled(SIGKILL))
    }

    @Test("a child gets /dev/null as stdin, the lifeline as 3, and no other descriptor of the parent's")
    func descriptors() async throws {
        // Opened without O_CLOEXEC, as Foundation's FileHandle(forWritingAtPath:) and C libraries often do.
        let leaky = open("/dev/null", O_RDONLY)
        try #require(leaky > 2)
        defer { close(leaky) }
        let (ending, out, err) = try await shell(
            "readlink /proc/$$/fd/0; readlink /proc/$$/fd/3; if test -e /proc/$$/fd/\(leaky); then echo leaked; fi")
        #expect(ending == .exited(0), "\(err)")
        let lines = out.split(separator: "\n")
        #expect(lines.first == "/dev/null", "the child's stdin: \(out)")
        #expect(lines.dropFirst().first?.hasPrefix("pipe:") == true, "descriptor 3, the lifeline: \(out)")
        #expect(lines.count == 2, "descriptor \(leaky) reached the child: \(out)")
    }

    @Test("stdout and stderr can share one file; nothing is lost to the other's writes")
    func sharedFile() async throws {
        let path = NSTemporaryDirectory() + "child-output-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try Data("left over from before\n".utf8).write(to: URL(fileURLWithPath: path))
        let child = try ChildProcess(
            "/bin/sh", ["-c", "echo one; echo two >&2; echo three"], standardOutput: .file(path),
            standardError: .file(path))
        #expect(try await child.exited() == .exited(0))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "one\ntwo\nthree\n")
    }

    @Test("a missing executable is an error naming it and its errno")
    func missingExecutable() throws {
        let path = "/nonexistent/child-\(UUID().uuidString)"
        #expect { try ChildProcess(path, []) } throws: { error in
            guard let error = error as? ChildProcessError else { return false }
            return error.code == ENOENT && error.executable == path && "\(error)".contains(path)
        }
    }

    @Test("an output file that cannot be opened is an error naming that file, not the executable")
    func unopenableOutputFile() throws {
        let path = "/nonexistent-\(UUID().uuidString)/out"
        #expect { try ChildProcess("/bin/true", [], standardOutput: .file(path)) } throws: { error in
            guard let error = error as? ChildProcessError else { return false }
            return error.code == ENOENT && "\(error)".contains(path)
        }
    }

    @Test("a cancelled wait throws and leaves the child running; kill ends it, and a second kill is harmless")
    func cancelledWait() async throws {
        let child = try ChildProcess("/bin/sleep", ["60"])
        let waiter = Task { try await child.exited() }
        try await Task.sleep(for: .milliseconds(50))
        waiter.cancel()
        await #expect(throws: CancellationError.self) { try await waiter.value }
        #expect(child.isRunning)
        #expect(await child.kill() == .signalled(SIGKILL))
        #expect(!child.isRunning && child.termination == .signalled(SIGKILL))
        #expect(await child.kill() == .signalled(SIGKILL), "a child already reaped is not signalled again")
        #expect(child.waitUntilExit() == .signalled(SIGKILL))
    }

    @Test("a crash-test child whose parent died ends by itself instead of running on")
    func orphanEnds() async throws {
        let scratch = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let ledger = try ToolRunner.executable("AccountLedger").path
        // The shell starts the demo's crash-test child, waits for it to finish a transfer, prints its pid and
        // exits: the child is an orphan from then on.
        let script = """
            "$0" demo --child --data "$1/ledger" --accounts 2 --workers 1 --transfers 10000000 >"$1/out" 2>&1 &
            child=$!
            while ! grep -q running "$1/out"; do kill -0 $child || exit 1; sleep 0.05; done
            echo $child
            """
        let child = try ChildProcess("/bin/sh", ["-c", script, ledger, scratch], standardOutput: .pipe)
        let output = await Self.read(try #require(child.standardOutput))
        #expect(try await child.exited() == .exited(0))
        let orphan = try #require(pid_t(output.trimmingCharacters(in: .whitespacesAndNewlines)), "\(output)")
        let ended = await Self.ends(orphan)
        #expect(ended, "the child \(orphan) still ran 10 s after its parent exited")
    }

    @Test("a child ends once the process that started it is killed, even if that was before the child's main ran")
    func childOfKilledParentEnds() async throws {
        let scratch = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        // The crash test's parent starts its children through ChildProcess, and kills each one only 300 ms or more
        // after it has finished a transfer: a kill of the parent as soon as its child exists comes first, most
        // often before the child's main has run. It is asked for many kills, so that it still runs, starting child
        // after child, when this task is scheduled late on a loaded machine (with 3, the whole crash test once ended
        // in CI before this loop saw any child).
        let parent = try ChildProcess(
            ToolRunner.executable("AccountLedger").path,
            ["demo", "--crash-test", "200", "--accounts", "2", "--workers", "1", "--data", scratch + "/ledger"],
            standardOutput: .file(scratch + "/parent.out"), standardError: .file(scratch + "/parent.out"))
        var child: pid_t?
        for _ in 0..<3_000 where child == nil && parent.isRunning {
            child = Self.children(of: parent.pid).first
            if child == nil { try? await Task.sleep(for: .milliseconds(10)) }
        }
        let ending = await parent.kill()
        let printed = (try? String(contentsOfFile: scratch + "/parent.out", encoding: .utf8)) ?? ""
        let orphan = try #require(child, "the crash test (\(ending)) started no child: \(printed)")
        let ended = await Self.ends(orphan)
        #expect(ended, "the child \(orphan) still ran 10 s after the process that started it was killed")
    }

    @Test("a child whose lifeline has no writer left when it starts (its starter died first) ends at once")
    func lifelineGoneBeforeMain() async throws {
        let scratch = try ToolRunner.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        // Descriptor 3 becomes a FIFO whose only writer is closed before the exec: what a child sees when the
        // process that started it died before the child's main ran. The shell execs, so the child's parent is
        // this test process, alive throughout: only the lifeline can end it.
        let script = """
            mkfifo "$1/lifeline" && exec 4<>"$1/lifeline" 3<"$1/lifeline" && exec 4>&-
            export PROCESS_SUPPORT_LIFELINE="3:$(stat -c %i "$1/lifeline")"
            exec "$0" demo --child --data "$1/ledger" --accounts 2 --workers 1 --transfers 10000000
            """
        let child = try ChildProcess(
            "/bin/sh", ["-c", script, ToolRunner.executable("AccountLedger").path, scratch],
            standardOutput: .discard, standardError: .discard)
        let watchdog = Task {
            try await Task.sleep(for: .seconds(30))
            child.send(SIGKILL)
        }
        let ending = try await child.exited()
        watchdog.cancel()
        #expect(ending == .exited(ParentWatch.orphanedStatus), "\(ending)")
    }

    /// The pids whose parent is `pid`.
    /// Whether `orphan` ends within about 10 s; if not, it is killed, so that a watch that failed does not leave it
    /// running (it is not this process's child, so nothing would reap it).
    private static func ends(_ orphan: pid_t) async -> Bool {
        for _ in 0..<200 {
            if !isAlive(orphan) { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        kill(orphan, SIGKILL)
        return false
    }

    private static func children(of pid: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { pid_t($0) }.filter { candidate in
            guard let stat = try? String(contentsOfFile: "/proc/\(candidate)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return false }
            // After the name: state, then the parent's pid.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            return fields.count > 1 && pid_t(fields[1]) == pid
        }
    }

    /// Whether `pid` runs: neither gone nor a zombie no one has reaped yet.
    private static func isAlive(_ pid: pid_t) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return false }
        return stat[stat.index(after: close)...].trimmingCharacters(in: .whitespaces).first != "Z"
    }
}
