// A 3-member etcd cluster of one test's own, started and stopped with scripts/etcd-cluster.sh, for tests that harm
// members (the shared cluster of ETCD_ENDPOINTS must stay whole for every other test).
//
// Invariants:
// - Its ports are free when chosen (every port the script will use is bound once to check) and differ between
//   processes, so that two test runs on one machine (two worktrees, say) do not collide.
// - Its data directories are on tmpfs when there is one, like the shared cluster's: etcd fsyncs every commit.
// - The script runs as a child process whose end is awaited on a thread of its own, never on the cooperative pool,
//   whose few threads every other test needs.

import EventStore
import Foundation
import ProcessSupport
#if canImport(Glibc)
    import Glibc
#endif

struct PrivateEtcdCluster: Sendable {
    let state: String
    let basePort: Int
    /// etcd's watch progress notification interval (`ETCD_PROGRESS_NOTIFY_INTERVAL`), or nil for etcd's default.
    var progressNotifyInterval: String? = nil

    /// Base ports handed out in this process: a cluster just started may not listen yet when the next one looks.
    private static let reserved = Locked<Set<Int>>([])

    /// The members' client URLs, as ETCD_ENDPOINTS lists them.
    var endpoints: String {
        (0..<3).map { "http://127.0.0.1:\(basePort + 10 * $0)" }.joined(separator: ",")
    }

    /// Starts a fresh cluster and waits until every member is healthy. `progressNotifyInterval` (an etcd duration,
    /// such as "500ms") replaces etcd's 10-minute interval between watch progress notifications.
    static func start(label: String, progressNotifyInterval: String? = nil) async throws -> PrivateEtcdCluster {
        let root = FileManager.default.isWritableFile(atPath: "/dev/shm") ? "/dev/shm/" : NSTemporaryDirectory()
        let cluster = PrivateEtcdCluster(
            state: root + "eventstore-etcd-\(label)-\(UUID().uuidString.prefix(8))", basePort: try freeBasePort(),
            progressNotifyInterval: progressNotifyInterval)
        try await cluster.run(["start"])
        return cluster
    }

    /// Stops every member and removes the data directories.
    func stop() async throws { try await run(["stop"]) }

    /// Runs `scripts/etcd-cluster.sh` with `arguments` for this cluster and waits for it to end.
    func run(_ arguments: [String]) async throws {
        var environment = ProcessInfo.processInfo.environment
        environment["ETCD_CLUSTER_STATE"] = state
        environment["ETCD_BASE_PORT"] = String(basePort)
        environment["ETCD_PROGRESS_NOTIFY_INTERVAL"] = progressNotifyInterval
        let script = EtcdTestCluster.repositoryRoot.appendingPathComponent("scripts/etcd-cluster.sh").path
        let process = try ChildProcess(script, arguments, environment: environment, standardOutput: .discard)
        let ending = try await process.exited()
        guard ending == .exited(0) else {
            throw EventStoreError.backend("etcd-cluster.sh \(arguments.joined(separator: " ")) \(ending)")
        }
    }

    /// A base port whose client and peer ports (base + 0, 1, 10, 11, 20, 21) are all free now, below the kernel's
    /// ephemeral range and away from the default clusters' 23790 and 24790.
    private static func freeBasePort() throws -> Int {
        let slots = 150
        let first = Int(getpid()) % slots
        for step in 0..<slots {
            let base = 26_000 + 40 * ((first + step) % slots)
            guard [0, 1, 10, 11, 20, 21].allSatisfy({ isFree(port: base + $0) }) else { continue }
            if reserved.withLock({ $0.insert(base).inserted }) { return base }
        }
        throw EventStoreError.backend("no free ports for a private etcd cluster between 26000 and 32000")
    }

    private static func isFree(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
