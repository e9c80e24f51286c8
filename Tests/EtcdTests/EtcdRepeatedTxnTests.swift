// A commit whose answer was lost is repeated only "when a failed compare guarantees that at most one of the two
// attempts can commit" (EtcdCommit.swift, docs/ETCD.md). `absent(k)` never proves it: a delete of k, in the same
// transaction or by another writer after the first attempt committed, makes it hold again, so both attempts could
// commit, and a repeat would write its puts again over whatever another writer stored since while telling the
// caller "committed". Only a mod-revision condition does (found by two reviews, twenty-fifth session).

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

@Suite("The etcd commit: a lost answer is not repeated when both attempts could commit", .timeLimit(.minutes(1)))
struct EtcdRepeatedTxnTests {
    @Test("absent(k) with a delete of k does not make a repeat safe: the Txn is sent once and the outcome is unknown")
    func absentAndDeleteIsNotRepeated() async throws {
        let commits = Locked(0)
        // The first commit's answer is lost; the read-back finds key [2] holding another writer's value; a second
        // commit would succeed.
        let member = try FakeGatewayMember { _, request in
            guard request.contains("request_put") else {
                return .answer(body: #"{"header":{"revision":"15"},"responses":[{"response_range":{"kvs":[{"key":"Ag==","value":"/w==","version":"2","mod_revision":"15","create_revision":"3"}]}}]}"#)
            }
            let number = commits.withLock { count -> Int in
                count += 1
                return count
            }
            if number == 1 { return .drop }
            return .answer(body: #"{"header":{"revision":"20"},"succeeded":true,"responses":[{"response_delete_range":{}},{"response_put":{}}]}"#)
        }
        defer { member.stop() }
        let store = try EtcdKeyValueStore(configuration: EtcdConfiguration(
            endpoints: [try #require(URL(string: member.url))], requestTimeout: .seconds(10), retryBudget: .seconds(2)))
        // "Delete k if it is absent, and set j": once committed, k is still absent, so the same Txn commits again.
        let transaction = KeyValueTransaction(conditions: [.absent([1])], writes: [.delete([1]), .put([2], [1])])
        let result: Result<UInt64, any Error>
        do { result = .success(try await store.commit(transaction)) } catch { result = .failure(error) }
        let sent = commits.withLock { $0 }
        #expect(sent == 1, "the Txn whose answer was lost was sent \(sent) times (result: \(result))")
        if case .failure(KeyValueStoreError.unavailable(let detail)) = result {
            #expect(detail.contains("the outcome of a transaction is unknown"), "\(detail)")
        } else {
            Issue.record("the outcome is unknown, but the caller was told \(result)")
        }
        try await store.close()
    }

    /// The docs of `append` promise that a replicated backend's unknown outcome says it "may have committed"; the
    /// message after a repeat whose compares failed did not.
    @Test("a repeat whose compares fail, with the keys changed since, reports that the first attempt may have committed")
    func failedRepeatSaysMayHaveCommitted() async throws {
        let commits = Locked(0)
        let member = try FakeGatewayMember { _, request in
            guard request.contains("request_put") else {
                return .answer(body: #"{"header":{"revision":"15"},"responses":[{"response_range":{"kvs":[{"key":"AQ==","value":"/w==","version":"2","mod_revision":"15","create_revision":"3"}]}}]}"#)
            }
            let number = commits.withLock { count -> Int in
                count += 1
                return count
            }
            if number == 1 { return .drop }
            return .answer(body: #"{"header":{"revision":"20"},"succeeded":false,"responses":[{"response_range":{"kvs":[]}}]}"#)
        }
        defer { member.stop() }
        let store = try EtcdKeyValueStore(configuration: EtcdConfiguration(
            endpoints: [try #require(URL(string: member.url))], requestTimeout: .seconds(10), retryBudget: .seconds(2)))
        let transaction = KeyValueTransaction(conditions: [.modRevision([1], equals: 3)], writes: [.put([1], [1])])
        await #expect { try await store.commit(transaction) } throws: { error in
            guard case KeyValueStoreError.unavailable(let detail) = error else { return false }
            return detail.contains("the outcome of a transaction is unknown") && detail.contains("may have committed")
        }
        #expect(commits.withLock { $0 } == 2, "the mod-revision put should have been repeated once")
        try await store.close()
    }

    @Test("absent(a), put a, put b: the first attempt committed, another writer then set b and deleted a; no repeat")
    func absentPutIsNotRepeatedAfterADelete() async throws {
        let commits = Locked(0)
        // The history the fake stands for: our Txn committed at 16 (its answer lost); another writer, conditioned on
        // mod(b) == 16, put b = [2] and deleted a at 17. The read-back sees a absent and b = [2]; a repeat's
        // absent(a) would hold, so it would commit at 18 and put b = [1] over the other writer's value.
        let member = try FakeGatewayMember { _, request in
            guard request.contains("request_put") else {
                return .answer(body: #"{"header":{"revision":"17"},"responses":[{"response_range":{}},{"response_range":{"kvs":[{"key":"Ag==","value":"Ag==","version":"2","mod_revision":"17","create_revision":"16"}]}}]}"#)
            }
            let number = commits.withLock { count -> Int in
                count += 1
                return count
            }
            if number == 1 { return .drop }
            return .answer(body: #"{"header":{"revision":"18"},"succeeded":true,"responses":[{"response_put":{}},{"response_put":{}}]}"#)
        }
        defer { member.stop() }
        let store = try EtcdKeyValueStore(configuration: EtcdConfiguration(
            endpoints: [try #require(URL(string: member.url))], requestTimeout: .seconds(10), retryBudget: .seconds(2)))
        let transaction = KeyValueTransaction(conditions: [.absent([1])], writes: [.put([1], [1]), .put([2], [1])])
        let result: Result<UInt64, any Error>
        do { result = .success(try await store.commit(transaction)) } catch { result = .failure(error) }
        let sent = commits.withLock { $0 }
        #expect(sent == 1, "the Txn whose answer was lost was sent \(sent) times (result: \(result))")
        if case .failure(KeyValueStoreError.unavailable(let detail)) = result {
            #expect(detail.contains("the outcome of a transaction is unknown"), "\(detail)")
        } else {
            Issue.record("the first attempt may have committed, but the caller was told \(result)")
        }
        try await store.close()
    }
}
