// swift-tools-version:6.0
// EventStore: an embedded, crash-safe event store for Swift, with a pluggable key-value backend.
// No package dependencies: only what the Swift toolchain ships.
import PackageDescription

let strict: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "EventStore",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "EventStore", targets: ["EventStore"]),
        .library(name: "EventStoreKV", targets: ["EventStoreKV"]),
        .library(name: "Snapshots", targets: ["Snapshots"]),
        .library(name: "Sagas", targets: ["Sagas"]),
        .executable(name: "AccountLedger", targets: ["AccountLedger"]),
        .executable(name: "eventstore", targets: ["eventstore"]),
    ],
    targets: [
        .target(name: "EventStore", swiftSettings: strict),
        .target(name: "EventStoreKV", dependencies: ["EventStore", "HardwareCRC32C"], swiftSettings: strict),
        // Our own C: the CPU's CRC-32C instruction for page and WAL checksums, chosen at run time (CRC32C.swift).
        .target(name: "HardwareCRC32C"),
        .target(name: "Snapshots", dependencies: ["EventStore", "EventStoreKV"], swiftSettings: strict),
        .target(name: "Sagas", dependencies: ["EventStore"], swiftSettings: strict),
        .executableTarget(
            name: "AccountLedger",
            dependencies: ["EventStore", "EventStoreKV", "Snapshots", "Sagas", "ProcessSupport"],
            path: "Examples/AccountLedger",
            swiftSettings: strict
        ),
        // The admin tool: inspect and maintain a store directory from the command line.
        .executableTarget(name: "eventstore", dependencies: ["EventStore", "EventStoreKV"], swiftSettings: strict),
        .executableTarget(
            name: "EventStoreBench",
            dependencies: ["EventStore", "EventStoreKV"],
            path: "Benchmarks/EventStoreBench",
            swiftSettings: strict
        ),
        // Append throughput on an etcd cluster (docs/ETCD.md); run in release against scripts/etcd-cluster.sh.
        .executableTarget(
            name: "EtcdBench",
            dependencies: ["EventStore", "EventStoreKV"],
            path: "Benchmarks/EtcdBench",
            swiftSettings: strict
        ),
        // One application node of the etcd multi-node tests (EtcdTests), run as a separate process.
        .executableTarget(
            name: "EtcdNode", dependencies: ["EventStore", "EventStoreKV", "ProcessSupport"], swiftSettings: strict),
        // Child processes started with posix_spawn (not Foundation's Process, see ChildProcess.swift), and children
        // that end with their parent: for the tests and the ledger demo's crash test. Not a product.
        .target(name: "ProcessSupport", dependencies: ["EventStore"], swiftSettings: strict),
        // A key-value store that forwards every call, for tests that change one of them (faults, hooks, counters).
        .target(
            name: "KeyValueTestSupport", dependencies: ["EventStore", "EventStoreKV"],
            path: "Tests/Support/KeyValueTestSupport", swiftSettings: strict),
        .testTarget(
            name: "EtcdTests", dependencies: ["EventStore", "EventStoreKV", "EtcdNode", "ProcessSupport"],
            swiftSettings: strict),
        .testTarget(name: "EventStoreKVTests", dependencies: ["EventStoreKV"], swiftSettings: strict),
        .testTarget(
            name: "ConformanceTests", dependencies: ["EventStore", "EventStoreKV", "KeyValueTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "PageFileTests", dependencies: ["EventStore", "EventStoreKV", "ProcessSupport"], swiftSettings: strict),
        .executableTarget(
            name: "CrashChild",
            dependencies: ["EventStore", "EventStoreKV", "ProcessSupport"],
            path: "Tests/Support/CrashChild",
            swiftSettings: strict
        ),
        .testTarget(
            name: "SagasTests", dependencies: ["Sagas", "EventStore", "EventStoreKV", "ProcessSupport"],
            swiftSettings: strict),
        // The child process of the saga crash test (SagasTests/SagaCrashTests): runs sagas on the page-file engine
        // and is SIGKILLed at random points by the parent.
        .executableTarget(
            name: "SagaCrashChild",
            dependencies: ["Sagas", "EventStore", "EventStoreKV", "ProcessSupport"],
            path: "Tests/SagaCrashChild",
            swiftSettings: strict
        ),
        // The child process of the saga lease tests (SagasTests/SagaReviewedEdgeTests): runs a scenario whose leases
        // run in real time away from the test run's other tasks.
        .executableTarget(
            name: "SagaLeaseChild",
            dependencies: ["Sagas", "EventStore", "EventStoreKV", "KeyValueTestSupport", "ProcessSupport"],
            path: "Tests/SagaLeaseChild",
            swiftSettings: strict
        ),
        // Drives the example ledger and the benchmark harness as the user would: through their command lines.
        .testTarget(
            name: "ToolTests",
            dependencies: ["AccountLedger", "EventStoreBench", "eventstore", "EventStore", "EventStoreKV", "ProcessSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "SnapshotsTests", dependencies: ["EventStore", "EventStoreKV", "Snapshots", "KeyValueTestSupport"],
            swiftSettings: strict),
    ]
)
