// Committing a transaction to etcd, and resolving a commit whose outcome is unknown.
//
// Invariants:
// - A transaction is sent as one etcd Txn and acknowledged only from etcd's answer, which comes after a quorum of
//   members has it in their log.
// - A Txn that was never sent goes to the next member. A Txn whose answer was lost is never repeated blindly: the
//   store first reads back what it wrote; it repeats the Txn only when a failed compare guarantees that at most one
//   of the two attempts can commit (`EtcdTransaction.failsIfRepeated`), and reads back again if that repeat fails.
//   If the outcome still cannot be known (a read-back fails too, or the store is closed meanwhile), the caller gets
//   `unavailable` saying so, never a success, a failure or `closed` that might be false.
// - Cancellation is honoured until the Txn is sent (nothing is written then: CancellationError). Once sent, the Txn
//   and the resolution of a lost answer run to their end, so a cancelled caller learns the outcome, as with the
//   page-file engine, whose queued commit cannot be withdrawn either.
// - A commit that is known to have committed is confirmed by every put key holding the written value at one common
//   mod revision newer than anything seen before the Txn was sent.
// - Leases of keys the Txn replaced or deleted, and of a Txn that did not commit, are revoked in the background.

import Foundation

/// A TTL put's lease ran out between its grant and the Txn that uses it; etcd rejected the whole Txn.
private struct LeaseExpiredBeforeCommit: Error {}

extension EtcdKeyValueStore {
    public func commit(_ transaction: KeyValueTransaction) async throws -> UInt64 {
        // etcd checks a put's lease before applying anything, so a Txn refused with "lease not found" wrote nothing:
        // it is safe to grant fresh leases and send it again (a stalled client can take longer than a short TTL
        // between the grant and the Txn).
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await commitOnce(transaction)
            } catch is LeaseExpiredBeforeCommit where attempt < 3 {
                continue
            } catch is LeaseExpiredBeforeCommit {
                throw KeyValueStoreError.unavailable(
                    "etcd: the transaction's leases expired before it could be sent, three times; nothing was written")
            }
        }
    }

    private func commitOnce(_ transaction: KeyValueTransaction) async throws -> UInt64 {
        try checkOpen()
        let built: EtcdTransaction
        do {
            built = try await EtcdTransaction.make(transaction, store: self)
        } catch let error as EtcdCallError {
            // A TTL put's lease grant failed (no member answered, or etcd refused it, e.g. NOSPACE): the Txn was not
            // sent, so nothing was written, and the caller gets a contract error like any other failure.
            throw Self.contractError(error)
        }
        let sentAfter = state.withLock { $0.observedRevision }
        let body = try transport.encode(built.request)
        do {
            let response = try await sendOnce(body)
            return try settle(response, transaction: transaction, built: built)
        } catch let error as EtcdCallError {
            if case .outcomeUnknown(let detail) = error {
                // The Txn was sent: find out what became of it even if the caller was cancelled meanwhile (an
                // unstructured task does not inherit the cancellation), rather than report a cancellation that may
                // hide a commit.
                return try await Task {
                    try await self.resolve(transaction, built: built, body: body, sentAfter: sentAfter, detail: detail)
                }.value
            }
            leases.revokeLater(built.grantedLeases)
            if case .server(let code, let message) = error, code == GRPCCode.notFound,
                message.contains("lease not found"), !built.grantedLeases.isEmpty
            {
                throw LeaseExpiredBeforeCommit()
            }
            throw Self.commitError(error, transaction: transaction, built: built)
        } catch let error as CancellationError {
            // Cancelled before the Txn was sent (a sent Txn is not cancelled): nothing was written.
            leases.revokeLater(built.grantedLeases)
            throw error
        }
    }

    /// Sends the Txn once, moving to the next member only while nothing has been sent.
    private func sendOnce(_ body: Data) async throws -> EtcdWire.TxnResponse {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: configuration.retryBudget)
        var attempt = 0
        while true {
            try Task.checkCancellation()
            let endpoint = transport.currentEndpoint
            do {
                // Not cancellable once sent: the caller gets the Txn's outcome, never a CancellationError that may
                // hide a commit.
                return try await transport.send(
                    "v3/kv/txn", data: body, to: endpoint, as: EtcdWire.TxnResponse.self, cancellable: false)
            } catch EtcdCallError.unreachable(let detail) {
                transport.failOver(from: endpoint)
                attempt += 1
                guard clock.now < deadline else { throw EtcdCallError.unreachable(detail) }
                if attempt % transport.endpoints.count == 0 {
                    try await Task.sleep(for: .milliseconds(min(50 * attempt, 500)))
                }
            } catch EtcdCallError.server(let code, let message)
                where code == GRPCCode.unavailable || code == GRPCCode.deadlineExceeded
            {
                // The member took the request but could not finish it (timeout, leader change): it may still commit.
                transport.failOver(from: endpoint)
                throw EtcdCallError.outcomeUnknown(message)
            } catch EtcdCallError.outcomeUnknown(let detail) {
                transport.failOver(from: endpoint)
                throw EtcdCallError.outcomeUnknown(detail)
            }
        }
    }

    /// The revision of a Txn etcd answered, or the failed condition it names. An answer without a usable revision
    /// is `outcomeUnknown`: the Txn may have been applied, so it is resolved by reading back, like a lost answer.
    private func settle(_ response: EtcdWire.TxnResponse, transaction: KeyValueTransaction, built: EtcdTransaction)
        throws -> UInt64
    {
        let revision: UInt64
        do {
            revision = try observe(response.header)
        } catch {
            throw EtcdCallError.outcomeUnknown("etcd answered the transaction without a usable revision: \(error)")
        }
        guard response.succeeded == true else {
            leases.revokeLater(built.grantedLeases)
            throw failedCondition(transaction, failureReads: response.responses ?? [])
        }
        var replaced: [Int64] = []
        for operation in response.responses ?? [] {
            if let previous = operation.responsePut?.prevKV { replaced.append(EtcdWire.signed(previous.lease)) }
            for previous in operation.responseDeleteRange?.prevKVs ?? [] { replaced.append(EtcdWire.signed(previous.lease)) }
        }
        leases.revokeLater(replaced.filter { $0 != 0 })
        return revision
    }

    /// Names the first condition that did not hold, from the failure branch's reads (taken atomically with the
    /// compares).
    private func failedCondition(_ transaction: KeyValueTransaction, failureReads: [EtcdWire.ResponseOp])
        -> KeyValueStoreError
    {
        for (index, condition) in transaction.conditions.enumerated() {
            let kv = index < failureReads.count ? failureReads[index].responseRange?.kvs?.first : nil
            let entry: KeyValueEntry?
            do {
                entry = try kv.map {
                    KeyValueEntry(key: condition.key, value: [], version: EtcdWire.number($0.version),
                                  modRevision: try EtcdWire.revision($0.modRevision, field: "mod_revision"))
                }
            } catch {
                return .unavailable("etcd rejected the transaction's compares, but its failure reads are unusable: \(error)")
            }
            if !condition.isSatisfied(by: entry) { return .conditionFailed(index: index, condition: condition) }
        }
        return .unavailable("etcd rejected the transaction's compares, but every condition reads as satisfied")
    }

    static func commitError(_ error: EtcdCallError, transaction: KeyValueTransaction, built: EtcdTransaction)
        -> KeyValueStoreError
    {
        guard case .server(_, let message) = error else { return contractError(error) }
        let operations = built.request.success.count
        let bytes = EtcdTransaction.estimatedBytes(
            transaction, writes: EtcdTransaction.lastWritePerKey(transaction.writes), namespace: 0)
        if message.contains("too many operations") {
            return .transactionTooLarge(operations: operations, bytes: bytes, limit: "the cluster's --max-txn-ops")
        }
        // RESOURCE_EXHAUSTED alone does not say "too large": etcd also answers a full database ("mvcc: database space
        // exceeded", the NOSPACE alarm) and overload ("too many requests") with it, and those keep etcd's words.
        // "request is too large" (INVALID_ARGUMENT) is over --max-request-bytes; "received message larger than max"
        // (RESOURCE_EXHAUSTED) is over gRPC's receive limit, 512 KiB above it.
        if message.contains("request is too large") || message.contains("received message larger than max") {
            return .transactionTooLarge(operations: operations, bytes: bytes, limit: "the cluster's --max-request-bytes")
        }
        return contractError(error)
    }

    // MARK: Unknown outcomes

    private func resolve(
        _ transaction: KeyValueTransaction, built: EtcdTransaction, body: Data, sentAfter: UInt64, detail: String
    ) async throws -> UInt64 {
        if let revision = try await readBack(built, after: sentAfter, detail: detail) { return revision }
        guard built.failsIfRepeated else {
            throw KeyValueStoreError.unavailable(
                "the outcome of a transaction is unknown (\(detail)); it may have committed: re-read before retrying")
        }
        let response: EtcdWire.TxnResponse
        do {
            response = try await sendOnce(body)
        } catch let error as EtcdCallError {
            throw KeyValueStoreError.unavailable(
                "the outcome of a transaction is unknown (\(detail); then \(Self.contractError(error))); it may have committed: re-read before retrying")
        }
        if response.succeeded == true {
            do {
                return try settle(response, transaction: transaction, built: built)
            } catch EtcdCallError.outcomeUnknown(let again) {
                throw KeyValueStoreError.unavailable(
                    "the outcome of a transaction is unknown (\(detail); then \(again)); it may have committed: re-read before retrying")
            }
        }
        if let revision = try await readBack(built, after: sentAfter, detail: detail) { return revision }
        // The repeat's compares failed and nothing of ours is visible: either the first attempt committed and was
        // overwritten since, or a condition really failed. Neither can be told apart, so say so.
        throw KeyValueStoreError.unavailable(
            "the outcome of a transaction is unknown (\(detail)) and its keys have changed since; it may have committed: "
                + "re-read before retrying")
    }

    /// `committedRevision`, where a read-back that fails (no member answers, or the store was closed meanwhile) is
    /// an unknown outcome: the Txn was sent and may have committed, so the read's own error must not stand for it.
    private func readBack(_ built: EtcdTransaction, after sentAfter: UInt64, detail: String) async throws -> UInt64? {
        do {
            return try await committedRevision(of: built, after: sentAfter)
        } catch {
            throw KeyValueStoreError.unavailable(
                "the outcome of a transaction is unknown (\(detail); its read-back failed: \(error)); it may have "
                    + "committed: re-read before retrying")
        }
    }

    /// The revision at which `built` committed, if every one of its puts can be seen holding its value at one common
    /// revision after `sentAfter`; nil when that cannot be shown.
    private func committedRevision(of built: EtcdTransaction, after sentAfter: UInt64) async throws -> UInt64? {
        guard !built.puts.isEmpty else { return nil }
        let keys = built.puts.map(\.key)
        let current = try await get(keys, at: nil).entries
        let candidates = Set(zip(built.puts, current).compactMap { put, entry -> UInt64? in
            guard let entry, entry.value == put.value, entry.modRevision > sentAfter else { return nil }
            return entry.modRevision
        })
        for revision in candidates.sorted() {
            let then: [KeyValueEntry?]
            do {
                then = try await get(keys, at: revision).entries
            } catch {
                continue  // compacted since: that revision cannot be checked
            }
            let matches = zip(built.puts, then).allSatisfy { put, entry in
                entry?.value == put.value && entry?.modRevision == revision
            }
            if matches { return revision }
        }
        return nil
    }
}
