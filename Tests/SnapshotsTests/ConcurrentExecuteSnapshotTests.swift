// Guards concurrent executes through the snapshotting repository with a policy that snapshots on save: every execute
// lands once, the state it returns is the state at its version, no policy snapshot fails, and loads (through the
// snapshots taken) equal a replay. Kept as a regression test for the fold tracking of LoadedAggregate.skippedVersion
// (concurrent appends to one stream must not leave snapshots refused or wrong); it passed before and after the fix.

import EventStore
import EventStoreKV
import Foundation
import Snapshots
import Testing

@Suite("Snapshots: concurrent executes with snapshots on save")
struct ConcurrentExecuteSnapshotTests {
    @Test("every execute lands once, its returned state is the state at its version, and loads equal a replay",
          arguments: SnapshotBackends.local)
    func concurrentExecutes(backend: SnapshotBackend) async throws {
        try await backend.withStore { store in
            let stream = try Fixtures.stream()
            let repository = try Fixtures.repository(store, policy: .every(3, keepingLast: 4), readBatchSize: 2)
            let saves = try await withThrowingTaskGroup(of: [SavedAggregate<Ledger>].self) { group in
                for task in 0..<6 {
                    group.addTask {
                        var saved: [SavedAggregate<Ledger>] = []
                        for step in 0..<15 {
                            saved.append(try await repository.execute(on: stream, maxAttempts: 10_000) { ledger in
                                [Deposited(amount: task * 100 + step + 1), Withdrawn(amount: ledger.events % 7)]
                            })
                        }
                        return saved
                    }
                }
                var all: [SavedAggregate<Ledger>] = []
                for try await part in group { all += part }
                return all
            }
            #expect(saves.count == 90)
            #expect(Set(saves.map(\.result.version)).count == 90, "every save has its own version")
            let replay = try await repository.load(stream, usingSnapshots: false)
            #expect(replay.version == 180 && replay.state.events == 180)
            #expect(try await repository.load(stream).state == replay.state)
            for saved in saves {
                let atVersion = try await repository.load(stream, asOf: saved.result.version, usingSnapshots: false)
                #expect(saved.aggregate.state == atVersion.state, "the state returned at \(saved.result.version)")
                if case .failed(let error) = saved.snapshot { Issue.record("snapshot failed: \(error)") }
            }
            for version in try await repository.snapshotVersions(of: stream) {
                let viaSnapshot = try await repository.load(stream, asOf: version)
                let viaReplay = try await repository.load(stream, asOf: version, usingSnapshots: false)
                #expect(viaSnapshot.state == viaReplay.state)
            }
        }
    }
}
