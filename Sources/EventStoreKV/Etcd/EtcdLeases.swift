// Leases for TTL puts: each TTL put gets its own lease, granted just before its transaction and attached to exactly
// one key.
//
// Invariants:
// - Lease ids are chosen here (random, positive), so a grant whose answer was lost can be repeated safely: a repeat
//   finds "lease already exists" and that counts as granted.
// - A lease holds at most one key. So once that key is overwritten, deleted, or its transaction failed, the lease is
//   empty and revoking it can never remove another key. Revoking is only housekeeping (an unrevoked lease expires on
//   its own), so it is done in the background and its failures are ignored.
// - etcd grants whole seconds with a floor (2 s with the default election timeout): a TTL is rounded up, never down,
//   so a key never expires before its TTL.

import Foundation

struct EtcdLeases: Sendable {
    let transport: EtcdTransport

    /// Grants a lease of at least `ttl` and returns its id.
    func grant(ttl: Duration) async throws -> Int64 {
        let id = Int64.random(in: 1...Int64.max)
        // Whole seconds, rounded up, and no more than etcd's own maximum TTL (9,000,000,000 s, lease.MaxLeaseTTL),
        // which an enormous Duration would otherwise pass (or trap converting to Int64).
        let (whole, attoseconds) = ttl.components
        let maximum: Int64 = 9_000_000_000
        let seconds = whole >= maximum ? maximum : max(1, attoseconds > 0 ? whole + 1 : whole)
        let request = EtcdWire.LeaseGrantRequest(ttl: String(seconds), id: String(id))
        do {
            let response = try await transport.call(
                "v3/lease/grant", body: request, idempotent: true, as: EtcdWire.LeaseGrantResponse.self)
            guard EtcdWire.signed(response.id) == id else {
                throw KeyValueStoreError.unavailable("etcd granted lease \(response.id ?? "?") instead of \(id)")
            }
        } catch EtcdCallError.server(let code, _) where code == GRPCCode.failedPrecondition {
            // "lease already exists": an earlier attempt of this very grant succeeded.
        }
        return id
    }

    /// Revokes `id` in the background, deleting whatever key it still holds.
    func revokeLater(_ ids: [Int64]) {
        guard !ids.isEmpty else { return }
        let transport = self.transport
        Task.detached {
            for id in ids {
                _ = try? await transport.call(
                    "v3/lease/revoke", body: EtcdWire.LeaseRevokeRequest(id: String(id)), idempotent: true,
                    as: EtcdWire.Empty.self)
            }
        }
    }
}
