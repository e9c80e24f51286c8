// Crash tests: a child process appends and acknowledges; it is SIGKILLed at random moments, or kills itself at
// named failpoints; every time, the store must reopen to exactly an acknowledged-including prefix of what was
// attempted. EVENTSTORE_CRASH_ITERATIONS selects a longer run than CI's 50 kills.

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

@Suite("Crash recovery", .serialized)
struct CrashTests {
    @Test("SIGKILL at random moments never loses an acknowledged append nor leaves a partial one")
    func randomKills() async throws {
        let iterations = ProcessInfo.processInfo.environment["EVENTSTORE_CRASH_ITERATIONS"].flatMap(Int.init) ?? 50
        let directory = TemporaryDirectory("crash")
        defer { directory.remove() }
        var random = SeededRandom(seed: UInt64(Date().timeIntervalSince1970))
        var acknowledged = -1
        var kills = 0
        for iteration in 0..<iterations {
            let child = try CrashChildProcess(directory: directory.path, transactions: 1_000_000)
            // Mostly kill mid-stream after some acknowledgements; sometimes at once, inside open and recovery.
            let acks = Int.random(in: 0...9, using: &random) == 0 ? 0 : Int.random(in: 1...40, using: &random)
            let running = await follow(child, acks: acks, highest: &acknowledged)
            await child.kill()
            #expect(running, "the child stopped by itself in iteration \(iteration)")
            kills += 1
            try await checkCrashedStore(directory.path, acknowledged: acknowledged, context: "kill \(iteration)")
        }
        #expect(kills == iterations)
        #expect(acknowledged > iterations, "the children acknowledged too little to test anything")
    }

    @Test(
        "deferred and none durability lose nothing acknowledged when only the process dies",
        arguments: ["deferred", "none"])
    func weakerDurabilitySurvivesProcessCrash(_ durability: String) async throws {
        let directory = TemporaryDirectory("durability")
        defer { directory.remove() }
        var random = SeededRandom(seed: 99)
        var acknowledged = -1
        for iteration in 0..<8 {
            let child = try CrashChildProcess(
                directory: directory.path, transactions: 1_000_000, durability: durability)
            #expect(await follow(child, acks: Int.random(in: 1...60, using: &random), highest: &acknowledged))
            await child.kill()
            try await checkCrashedStore(directory.path, acknowledged: acknowledged, context: "\(durability) \(iteration)")
        }
    }

    @Test(
        "a child killed at a failpoint recovers to a prefix holding every acknowledged append",
        arguments: [
            (Failpoint.beforeWALSync, 10), (Failpoint.afterWALSyncBeforeAck, 10), (Failpoint.midCheckpoint, 2),
            (Failpoint.duringWALTruncation, 2),
        ])
    func failpoint(_ name: String, hit: Int) async throws {
        let directory = TemporaryDirectory("failpoint")
        defer { directory.remove() }
        var acknowledged = -1
        let child = try CrashChildProcess(directory: directory.path, transactions: 5_000, failpoint: "\(name):\(hit)")
        _ = await follow(child, acks: .max, highest: &acknowledged)
        #expect(try await child.waitForSelfKill(), "failpoint \(name) was never reached")
        let stored = try await checkCrashedStore(directory.path, acknowledged: acknowledged, context: name)
        if name == Failpoint.afterWALSyncBeforeAck {
            // The killed commit was durable but never acknowledged: it must be there too.
            #expect(stored == acknowledged + 2, "a durable commit was lost")
        }
        // The store keeps working after recovery.
        let next = try CrashChildProcess(directory: directory.path, transactions: 5)
        _ = await follow(next, acks: .max, highest: &acknowledged)
        #expect(try await next.exited() == .exited(0))
        try await checkCrashedStore(directory.path, acknowledged: acknowledged, context: "\(name), then more appends")
    }

    @Test("a crash during recovery is recovered by the next open")
    func crashDuringRecovery() async throws {
        let directory = TemporaryDirectory("recovery")
        defer { directory.remove() }
        var acknowledged = -1
        let first = try CrashChildProcess(
            directory: directory.path, transactions: 5_000, failpoint: "\(Failpoint.afterWALSyncBeforeAck):20")
        _ = await follow(first, acks: .max, highest: &acknowledged)
        #expect(try await first.waitForSelfKill())
        let second = try CrashChildProcess(
            directory: directory.path, transactions: 5_000, failpoint: Failpoint.duringRecovery)
        var none = -1
        _ = await follow(second, acks: .max, highest: &none)
        #expect(try await second.waitForSelfKill(), "recovery did not reach its failpoint")
        #expect(none == -1, "the child acknowledged an append before recovery finished")
        let stored = try await checkCrashedStore(directory.path, acknowledged: acknowledged, context: "recovery")
        #expect(stored == acknowledged + 2)
    }
}
