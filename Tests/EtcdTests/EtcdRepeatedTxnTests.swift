// A commit whose answer was lost is repeated only "when a failed compare guarantees that at most one of the two
// attempts can commit" (EtcdCommit.swift, docs/ETCD.md). `absent(k)` never proves it: a delete of k, in the same
// transaction or by another writer after the first attempt committed, makes it hold again, so both attempts could
// commit, and a repeat would write its puts again over whatever another writer stored since while telling the
// caller "committed". Only a mod-revision condition does (found by two reviews, twenty-fifth session).

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

/// Commits `transaction` through a fake member that loses the answer to the first commit Txn, answers every
/// read-back with `readBack` and every later commit Txn with `repeated`; returns the outcome and how many commit Txns
/// the member received.
private func commitLosingFirstAnswer(_ transaction: KeyValueTransaction, readBack: String, repeated: String)
    async throws -> (result: Result<UInt64, any Error>, sent: Int)
{
    let commits = Locked(0)
    let member = try FakeGatewayMember { _, request in
        guard request.contains("request_put") else { return .answer(body: readBack) }
        let number = commits.withLock { count -> Int in
            count += 1
            return count
        }
        return number == 1 ? .drop : .answer(body: repeated)
    }
    defer { member.stop() }
    let store = try EtcdKeyValueStore(configuration: EtcdConfiguration(
        endpoints: [try #require(URL(string: member.url))], requestTimeout: .seconds(10), retryBudget: .seconds(2)))
    let result: Result<UInt64, any Error>
    do { result = .success(try await store.commit(transaction)) } catch { result = .failure(error) }
    try await store.close()
    return (result, commits.withLock { $0 })
}

/// Records an issue unless `result` is the unknown outcome of a transaction that may have committed.
private func expectUnknownOutcome(_ result: Result<UInt64, any Error>) {
    guard case .failure(KeyValueStoreError.unavailable(let detail)) = result else {
        Issue.record("the first attempt may have committed, but the caller was told \(result)")
        return
    }
    #expect(detail.contains("the outcome of a transaction is unknown"), "\(detail)")
    #expect(detail.contains("may have committed"), "\(detail)")
}

@Suite("The etcd commit: a lost answer is not repeated when both attempts could commit", .timeLimit(.minutes(1)))
struct EtcdRepeatedTxnTests {
    @Test("absent(k) with a delete of k does not make a repeat safe: the Txn is sent once and the outcome is unknown")
    func absentAndDeleteIsNotRepeated() async throws {
        // The read-back finds key [2] holding another writer's value; a second commit would succeed. "Delete k if it
        // is absent, and set j": once committed, k is still absent, so the same Txn would commit again.
        let (result, sent) = try await commitLosingFirstAnswer(
            KeyValueTransaction(conditions: [.absent([1])], writes: [.delete([1]), .put([2], [1])]),
            readBack: #"{"header":{"revision":"15"},"responses":[{"response_range":{"kvs":[{"key":"Ag==","value":"/w==","version":"2","mod_revision":"15","create_revision":"3"}]}}]}"#,
            repeated: #"{"header":{"revision":"20"},"succeeded":true,"responses":[{"response_delete_range":{}},{"response_put":{}}]}"#)
        #expect(sent == 1, "the Txn whose answer was lost was sent \(sent) times (result: \(result))")
        expectUnknownOutcome(result)
    }

    /// The docs of `append` promise that a replicated backend's unknown outcome says it "may have committed"; the
    /// message after a repeat whose compares failed did not.
    @Test("a repeat whose compares fail, with the keys changed since, reports that the first attempt may have committed")
    func failedRepeatSaysMayHaveCommitted() async throws {
        let (result, sent) = try await commitLosingFirstAnswer(
            KeyValueTransaction(conditions: [.modRevision([1], equals: 3)], writes: [.put([1], [1])]),
            readBack: #"{"header":{"revision":"15"},"responses":[{"response_range":{"kvs":[{"key":"AQ==","value":"/w==","version":"2","mod_revision":"15","create_revision":"3"}]}}]}"#,
            repeated: #"{"header":{"revision":"20"},"succeeded":false,"responses":[{"response_range":{"kvs":[]}}]}"#)
        #expect(sent == 2, "the mod-revision put should have been repeated once")
        expectUnknownOutcome(result)
    }

    @Test("absent(a), put a, put b: the first attempt committed, another writer then set b and deleted a; no repeat")
    func absentPutIsNotRepeatedAfterADelete() async throws {
        // The history the fake stands for: our Txn committed at 16 (its answer lost); another writer, conditioned on
        // mod(b) == 16, put b = [2] and deleted a at 17. The read-back sees a absent and b = [2]; a repeat's
        // absent(a) would hold, so it would commit at 18 and put b = [1] over the other writer's value.
        let (result, sent) = try await commitLosingFirstAnswer(
            KeyValueTransaction(conditions: [.absent([1])], writes: [.put([1], [1]), .put([2], [1])]),
            readBack: #"{"header":{"revision":"17"},"responses":[{"response_range":{}},{"response_range":{"kvs":[{"key":"Ag==","value":"Ag==","version":"2","mod_revision":"17","create_revision":"16"}]}}]}"#,
            repeated: #"{"header":{"revision":"18"},"succeeded":true,"responses":[{"response_put":{}},{"response_put":{}}]}"#)
        #expect(sent == 1, "the Txn whose answer was lost was sent \(sent) times (result: \(result))")
        expectUnknownOutcome(result)
    }
}
