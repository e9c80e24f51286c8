// `AggregateRepository.execute`'s attempt limit, from the third mutation round (twenty-fifth session): each test fails
// on a mutant of the guard it names (Aggregate.swift) and passes on the code as it is.

import EventStore
import EventStoreKV
import Foundation
import Synchronization
import Testing

@Suite("Aggregates: execute's attempt limit")
struct AggregateExecuteAttemptTests {
    // Aggregate.swift `where attempt < maxAttempts`: execute makes maxAttempts attempts in all, then throws the
    // conflict.
    @Test("execute gives up after maxAttempts conflicting saves, with wrongExpectedVersion", arguments: [1, 3])
    func executeStopsAtMaxAttempts(maxAttempts: Int) async throws {
        let base = KeyValueEventStore.inMemory()
        let appends = Mutex(0)
        // A competing writer appends to the stream just before every save, so each one conflicts.
        let store = ForwardingEventStore(base: base, beforeAppend: { stream in
            appends.withLock { $0 += 1 }
            _ = try await base.append(
                [EventData(type: Deposited.eventType, data: Data(#"{"amount":1}"#.utf8))], to: stream,
                expectedVersion: .any)
        })
        let repository = AggregateRepository<Account>(store: store, registry: try accountRegistry())
        let decisions = Mutex(0)
        await #expect {
            try await repository.execute(on: try uniqueStream("raced"), maxAttempts: maxAttempts) { _ in
                decisions.withLock { $0 += 1 }
                return [Deposited(amount: 5)]
            }
        } throws: { error in
            if case EventStoreError.wrongExpectedVersion = error { return true }
            return false
        }
        #expect(decisions.withLock { $0 } == maxAttempts)
        #expect(appends.withLock { $0 } == maxAttempts)
    }

    // Aggregate.swift `guard maxAttempts > 0`: below 1 is bad input, refused before anything is decided or written.
    @Test("execute with maxAttempts 0 is refused with invalidArgument, deciding and writing nothing")
    func executeRefusesZeroAttempts() async throws {
        let store = KeyValueEventStore.inMemory()
        let repository = AggregateRepository<Account>(store: store, registry: try accountRegistry())
        let stream = try uniqueStream("zero")
        let decisions = Mutex(0)
        await #expect {
            try await repository.execute(on: stream, maxAttempts: 0) { _ in
                decisions.withLock { $0 += 1 }
                return [Deposited(amount: 5)]
            }
        } throws: { error in
            if case EventStoreError.invalidArgument = error { return true }
            return false
        }
        #expect(decisions.withLock { $0 } == 0)
        #expect(try await store.version(of: stream) == 0)
    }
}
