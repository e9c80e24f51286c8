// A live subscription that ends (its task cancelled, or its loop left) while a commit rings its doorbell must not
// deadlock the store. The backend's change feed yields to its watchers under the backend's lock, and resuming the
// doorbell's watcher task takes that task's status lock; cancelling that task holds its status lock while the change
// stream's termination handler runs, which took the backend's lock to unregister the watcher. Each thread waited for
// the lock the other held (found by a review, twenty-second session; ChangeFeed.swift's invariants say how it is
// avoided now).

import EventStore
@testable import EventStoreKV
import Foundation
import Testing

/// Turns a deadlocked process into a failure: the test's own time limit needs the cooperative threads, which a
/// deadlock of the store blocks. A plain thread ends the process with a message if `seconds` pass without a
/// `progress()` (or the `disarm()` that ends the watch). It measures progress, not the whole run, so a slow host
/// (the full suite on 2 cores) is not taken for a deadlock: one round takes milliseconds once it runs.
final class HangGuard: Sendable {
    private let beats = DispatchSemaphore(value: 0)
    private let disarmed = Locked(false)

    init(seconds: Int, _ what: String) {
        let (beats, disarmed) = (beats, disarmed)
        Thread {
            while beats.wait(timeout: .now() + .seconds(seconds)) == .success {
                if disarmed.withLock({ $0 }) { return }
            }
            FileHandle.standardError.write(Data("HangGuard: \(what) made no progress in \(seconds) s: deadlocked\n".utf8))
            _exit(86)  // not exit(): its atexit handlers may wait for the deadlocked threads
        }.start()
    }

    /// Another step is done.
    func progress() { beats.signal() }

    func disarm() {
        disarmed.withLock { $0 = true }
        beats.signal()
    }
}

@Suite("Ending live subscriptions while commits ring them")
struct SubscriptionEndDeadlockTests {
    /// Rounds of subscriptions ended during a commit: the deadlock needs the two threads to meet in a short window.
    static let rounds = 1_500

    /// Both embedded backends (etcd's watch is another mechanism, and 1,500 rounds of 16 watches would be slow there).
    @Test(
        "live subscriptions cancelled while a commit rings their doorbells end, and the store goes on",
        arguments: [Backend.inMemory, .pageFile])
    func endingSubscriptionsDuringCommits(backend: Backend) async throws {
        try await Self.endSubscriptionsDuringCommits(backend: backend)
    }

    static func endSubscriptionsDuringCommits(backend: Backend) async throws {
        // Five minutes: a round takes milliseconds, but the first one starts beside every other test of a full run,
        // and on 2 cores with other load (load average 14) it once took over 60 s.
        let guardian = HangGuard(seconds: 300, "ending subscriptions during commits on \(backend.name)")
        defer { guardian.disarm() }
        try await backend.withStore { store in
            let name = try stream("race-1")
            for round in 0..<Self.rounds {
                // Live subscriptions, each caught up and waiting on its doorbell.
                var subscribers: [Task<Void, any Error>] = []
                for _ in 0..<16 {
                    let (ready, signal) = AsyncStream<Void>.makeStream()
                    subscribers.append(Task {
                        // Finished whatever happens, so that an error reaches the test instead of a wait.
                        defer { signal.finish() }
                        var iterator = store.subscribeToAll(from: .end).makeAsyncIterator()
                        _ = try await iterator.next()  // caught up: the doorbell is open
                        signal.finish()
                        while try await iterator.next() != nil {}
                    })
                    for await _ in ready {}
                }
                // A commit rings every doorbell while the subscriptions end.
                async let appended = store.append(samples(1), to: name, expectedVersion: .exact(UInt64(round)))
                for subscriber in subscribers { subscriber.cancel() }
                _ = try await appended
                for subscriber in subscribers { try await subscriber.value }
                guardian.progress()
            }
            #expect(try await store.lastPosition() == UInt64(Self.rounds))
        }
    }
}
