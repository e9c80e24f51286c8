// The directory holding a store is synced on every syncing writable open (FORMAT.md, Recovery on open), which must
// not refuse setups that opened before (found by the fourth-round review of that sync, twenty-fourth session):
// - a store whose holder the process may pass through but not read (a 0711 home or /srv directory of another owner)
//   opens, the holder's sync skipped as SQLite skips a directory it cannot open;
// - a store reached through a symbolic link, whose resolved path is longer than PATH_MAX, opens: the holder is
//   opened as `dir/..`, which the kernel resolves without that limit.

import EventStore
import Foundation
import ProcessSupport
import Testing

@testable import EventStoreKV

@Suite("The directory holding a store, when it is synced")
struct SearchOnlyParentTests {
    @Test("an existing store whose parent is search-only (0711, another owner) still opens writably")
    func searchOnlyParent() async throws {
        let root = TemporaryDirectory("search-only-parent")
        defer { root.remove() }
        let parent = root.file("shared")
        let store = parent + "/store"
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        try await KeyValueEventStore.open(directory: store, options: smallOptions()).close()
        #expect(chmod(root.path, 0o755) == 0)
        // The store's own directory and files belong to the user who opens it; the directory holding it does not,
        // and lets that user through (x) but not list it (r).
        let nobody: uid_t = 65534
        let files = try FileManager.default.contentsOfDirectory(atPath: store).map { store + "/" + $0 }
        for path in [store] + files {
            #expect(chown(path, nobody, gid_t(nobody)) == 0, "\(path)")
        }
        #expect(chmod(parent, 0o711) == 0)

        guard getuid() == 0 else {
            // Not root: the parent is ours, so take its read permission away from ourselves instead.
            #expect(chmod(parent, 0o311) == 0)
            defer { _ = chmod(parent, 0o755) }
            let opened = try KeyValueEventStore.open(directory: store, options: smallOptions())
            try await opened.close()
            return
        }
        // Root reads any directory, so open the store as `nobody`, in the crash child.
        let child = try #require(CrashChildProcess.executable, "CrashChild is not built")
        let process = try ChildProcess(
            "/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups", child, store, "1"],
            standardOutput: .pipe, standardError: .pipe)
        let outputHandle = try #require(process.standardOutput)
        let errorHandle = try #require(process.standardError)
        async let out = Self.drain(outputHandle)
        async let err = Self.drain(errorHandle)
        let (output, errors) = await (out, err)
        let ending = try await process.exited()
        #expect(
            output.contains("done"),
            "the store's owner could not open it: \(ending); stdout: \(output) stderr: \(errors)")
    }

    @Test("a store reached through a symbolic link, whose resolved path is longer than PATH_MAX, still opens")
    func longResolvedPath() async throws {
        let root = TemporaryDirectory("long-resolved")
        defer { root.remove() }
        let segment = String(repeating: "d", count: 250)
        // A deep directory (about 3,300 bytes of path), reached through the short symbolic link root/L.
        let deep = root.path + String(repeating: "/" + segment, count: 13)
        try FileManager.default.createDirectory(atPath: deep, withIntermediateDirectories: true)
        #expect(symlink(deep, root.file("L")) == 0)
        // The store's path as given is about 1,100 bytes; the kernel opens it and every file in it, but resolved it
        // is more than 4,096.
        let holder = root.file("L") + String(repeating: "/" + segment, count: 4)
        try FileManager.default.createDirectory(atPath: holder, withIntermediateDirectories: true)
        let store = holder + "/store"
        let opened = try await PageFileKeyValueStore.open(directory: store, options: smallOptions())
        _ = try await opened.commit(KeyValueTransaction(writes: [.put(Array("k".utf8), [1])]))
        try await opened.close()
        let reopened = try await PageFileKeyValueStore.open(directory: store, options: smallOptions())
        try await reopened.close()
    }

    private static func drain(_ handle: FileHandle) async -> String {
        await withCheckedContinuation { (continuation: CheckedContinuation<String, Never>) in
            Thread {
                let data = handle.readDataToEndOfFile()
                continuation.resume(returning: String(decoding: data, as: UTF8.self))
            }.start()
        }
    }
}
