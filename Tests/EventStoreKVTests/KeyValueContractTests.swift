// The key-value contract, checked directly, for every KeyValueStore backend: ordering, per-key versions and mod
// revisions, conditions, atomicity, TTLs, serializable updates and change notification.

import EventStore
import EventStoreKV
import Foundation
import Testing

/// Makes fresh key-value stores of one backend kind.
struct KVBackend: Sendable, CustomTestStringConvertible {
    let name: String
    /// The shortest TTL this backend honours (etcd grants whole seconds, with a floor); TTL tests scale up to it.
    var leaseResolution: Duration = .zero
    /// Whether other tenants share this backend's revisions (etcd's are cluster-wide), so `currentRevision` may be
    /// later than the store's last commit.
    var sharesRevisions = false
    let make: @Sendable () async throws -> (store: any KeyValueStore, cleanup: @Sendable () async -> Void)
    var testDescription: String { name }

    /// Checks `currentRevision` when `last` is the store's last commit: equal to it, or at least it where revisions
    /// are shared.
    func expectCurrentRevision(of store: any KeyValueStore, last: UInt64) async throws {
        let current = try await store.currentRevision()
        #expect(sharesRevisions ? current >= last : current == last)
    }

    /// `requested`, raised to what the backend can honour.
    func leaseTimeout(_ requested: Duration) -> Duration { max(requested, leaseResolution) }

    func withStore(_ body: (any KeyValueStore) async throws -> Void) async throws {
        let (store, cleanup) = try await make()
        do {
            try await body(store)
            await cleanup()
        } catch {
            await cleanup()
            throw error
        }
    }

    static let inMemory = KVBackend(name: "in-memory") {
        let store = InMemoryKeyValueStore()
        return (store, { try? await store.close() })
    }

    /// An etcd cluster named by `ETCD_ENDPOINTS`, or nil when it is not set; each store gets a fresh namespace.
    static let etcd: KVBackend? = {
        guard let list = ProcessInfo.processInfo.environment["ETCD_ENDPOINTS"], !list.isEmpty else { return nil }
        return KVBackend(name: "etcd", leaseResolution: .seconds(3), sharesRevisions: true) {
            let store = try EtcdKeyValueStore(configuration: EtcdConfiguration(
                endpoints: try EtcdConfiguration.endpoints(parsing: list),
                namespace: Array("kv-contract/\(UUID().uuidString)/".utf8)))
            return (store, {
                try? await store.removeAllKeys()
                try? await store.close()
            })
        }
    }()
}

enum KVBackends {
    static var all: [KVBackend] { [.inMemory] + [KVBackend.etcd].compactMap { $0 } }
}

private func key(_ text: String) -> Key { Array(text.utf8) }
private func value(_ text: String) -> [UInt8] { Array(text.utf8) }

@Suite("Key-value contract")
struct KeyValueContractTests {
    @Test("keys scan in unsigned byte order, forward and backward, with limits", arguments: KVBackends.all)
    func ordering(backend: KVBackend) async throws {
        try await backend.withStore { store in
            let keys: [Key] = [[0x01], [0x01, 0x00], [0x01, 0xFF], [0x02], [0x7F], [0x80], [0xFF], [0xFF, 0xFF]]
            for k in keys.shuffled() { _ = try await store.commit(KeyValueTransaction(writes: [.put(k, k)])) }
            let all = try await store.scan(KeyRange(from: [], to: nil), direction: .forward, limit: 100)
            #expect(all.map(\.key) == keys)
            let backward = try await store.scan(KeyRange(from: [], to: nil), direction: .backward, limit: 3)
            #expect(backward.map(\.key) == [[0xFF, 0xFF], [0xFF], [0x80]])
            let prefixed = try await store.scan(.prefix([0x01]), direction: .forward, limit: 100)
            #expect(prefixed.map(\.key) == [[0x01], [0x01, 0x00], [0x01, 0xFF]])
            let bounded = try await store.scan(KeyRange(from: [0x01, 0x00], to: [0x7F]), direction: .forward, limit: 100)
            #expect(bounded.map(\.key) == [[0x01, 0x00], [0x01, 0xFF], [0x02]])
            #expect(try await store.scan(KeyRange(from: [0x03], to: [0x04]), direction: .forward, limit: 10).isEmpty)
            #expect(try await store.scan(KeyRange(from: [], to: nil), direction: .forward, limit: 0).isEmpty)
        }
    }

    @Test("versions count writes, reset on delete; revisions are store-wide and increasing", arguments: KVBackends.all)
    func versionsAndRevisions(backend: KVBackend) async throws {
        try await backend.withStore { store in
            let r1 = try await store.commit(KeyValueTransaction(writes: [.put(key("a"), value("1"))]))
            let r2 = try await store.commit(KeyValueTransaction(writes: [.put(key("a"), value("2")), .put(key("b"), value("x"))]))
            #expect(r2 > r1)
            var a = try #require(try await store.get(key("a")))
            #expect(a.value == value("2"))
            #expect(a.version == 2)
            #expect(a.modRevision == r2)
            #expect(try await store.get(key("b"))?.modRevision == r2)
            try await backend.expectCurrentRevision(of: store, last: r2)
            let r3 = try await store.commit(KeyValueTransaction(writes: [.delete(key("a"))]))
            #expect(try await store.get(key("a")) == nil)
            let r4 = try await store.commit(KeyValueTransaction(writes: [.put(key("a"), value("3"))]))
            a = try #require(try await store.get(key("a")))
            #expect(a.version == 1)
            #expect(a.modRevision == r4)
            #expect(r4 > r3)
            let batch = try await store.get([key("b"), key("missing"), key("a")])
            #expect(batch.map { $0?.value } == [value("x"), nil, value("3")])
        }
    }

    @Test("a failed condition names itself and writes nothing", arguments: KVBackends.all)
    func conditions(backend: KVBackend) async throws {
        try await backend.withStore { store in
            let revision = try await store.commit(KeyValueTransaction(writes: [.put(key("a"), value("1"))]))
            let cases: [KeyCondition] = [
                .absent(key("a")), .present(key("zz")), .version(key("a"), equals: 2),
                .modRevision(key("a"), equals: revision + 1),
            ]
            for failing in cases {
                let transaction = KeyValueTransaction(
                    conditions: [.present(key("a")), failing], writes: [.put(key("a"), value("new")), .put(key("c"), value("c"))])
                do {
                    _ = try await store.commit(transaction)
                    Issue.record("\(failing) must fail")
                } catch KeyValueStoreError.conditionFailed(let index, let condition) {
                    #expect(index == 1)
                    #expect(condition == failing)
                }
            }
            #expect(try await store.get(key("a"))?.value == value("1"))
            #expect(try await store.get(key("c")) == nil)
            try await backend.expectCurrentRevision(of: store, last: revision)
            let ok = KeyValueTransaction(
                conditions: [.present(key("a")), .absent(key("c")), .version(key("a"), equals: 1), .modRevision(key("a"), equals: revision)],
                writes: [.put(key("c"), value("c"))])
            _ = try await store.commit(ok)
            #expect(try await store.get(key("c"))?.value == value("c"))
        }
    }

    @Test("a TTL key reads as absent once expired, everywhere", arguments: KVBackends.all)
    func ttl(backend: KVBackend) async throws {
        try await backend.withStore { store in
            let ttl = backend.leaseTimeout(.seconds(2))
            let clock = ContinuousClock()
            // A loaded machine may stall this task past the TTL between the put and the first get; only a key that
            // vanished while less than the TTL had passed is a failure. A stalled attempt is repeated (stalls come
            // from other suites and end with them, so for up to four minutes).
            let giveUp = clock.now + .seconds(240)
            while true {
                let written = clock.now
                _ = try await store.commit(KeyValueTransaction(writes: [
                    .put(key("lease"), value("held"), ttl: ttl), .put(key("keep"), value("k")),
                ]))
                let present = try await store.get(key("lease")) != nil
                if present { break }
                if clock.now - written < ttl {
                    Issue.record("a TTL key vanished before its TTL had passed")
                    return
                }
                try #require(clock.now < giveUp, "the machine stalled past a \(ttl) TTL in every attempt for 4 minutes")
                try await Task.sleep(for: .milliseconds(200))
            }
            // Servers expire leases on their own schedule (etcd checks about twice a second): allow for it.
            try await Task.sleep(for: ttl * 2.5)
            #expect(try await store.get(key("lease")) == nil)
            #expect(try await store.scan(KeyRange(from: [], to: nil), direction: .forward, limit: 10).map(\.key) == [key("keep")])
            _ = try await store.commit(KeyValueTransaction(conditions: [.absent(key("lease"))], writes: [.put(key("lease"), value("again"))]))
            #expect(try await store.get(key("lease"))?.version == 1)
        }
    }

    /// Expiry is now plus the TTL in nanoseconds since 1970. The page file added them with wrap-around, so a TTL of
    /// centuries stored a key that had already expired; the in-memory store trapped; etcd's lease grant trapped
    /// converting the seconds. An enormous TTL saturates instead: the key is live.
    @Test("a key put with an enormous TTL is live, not already expired and not a crash", arguments: KVBackends.all)
    func enormousTTL(backend: KVBackend) async throws {
        try await backend.withStore { store in
            for (index, ttl) in [Duration.seconds(300 * 365 * 86_400), .seconds(Int64.max)].enumerated() {
                let name = key("forever-\(index)")
                _ = try await store.commit(KeyValueTransaction(writes: [.put(name, value("held"), ttl: ttl)]))
                #expect(try await store.get(name)?.value == value("held"), "TTL \(ttl)")
            }
        }
    }

    @Test("update is serializable: concurrent read-increment-write loses nothing", arguments: KVBackends.all)
    func serializableUpdate(backend: KVBackend) async throws {
        try await backend.withStore { store in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        for _ in 0..<10 {
                            _ = try await store.update { context in
                                let current = try await context.get(key("counter")).map { Int(String(decoding: $0.value, as: UTF8.self)) ?? 0 } ?? 0
                                return (KeyValueTransaction(writes: [.put(key("counter"), value("\(current + 1)"))]), current + 1)
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await store.get(key("counter"))?.value == value("200"))
            // A body that writes nothing commits nothing.
            let before = try await store.currentRevision()
            let result = try await store.update { _ in (KeyValueTransaction(), 7) }
            #expect(result.value == 7)
            #expect(result.revision == nil)
            try await backend.expectCurrentRevision(of: store, last: before)
        }
    }

    @Test("changes are delivered from a revision, filtered by prefix, then live", arguments: KVBackends.all)
    func changes(backend: KVBackend) async throws {
        try await backend.withStore { store in
            let start = try await store.commit(KeyValueTransaction(writes: [.put(key("p/0"), value("0"))]))
            _ = try await store.commit(KeyValueTransaction(writes: [.put(key("p/1"), value("1")), .put(key("q/1"), value("1"))]))
            let stream = store.changes(after: start, prefix: key("p/"))
            let live = Task {
                _ = try await store.commit(KeyValueTransaction(writes: [.delete(key("p/0"))]))
                _ = try await store.commit(KeyValueTransaction(writes: [.put(key("p/2"), value("2"))]))
            }
            var seen: [(KeyValueChange.Kind, Key)] = []
            for try await change in stream {
                seen.append((change.kind, change.key))
                if seen.count == 3 { break }
            }
            try await live.value
            #expect(seen.map(\.1) == [key("p/1"), key("p/0"), key("p/2")])
            #expect(seen.map(\.0) == [.put, .delete, .put])
        }
    }

    @Test("random puts and deletes match a reference model in gets and range scans", arguments: KVBackends.all)
    func randomOperationsMatchModel(backend: KVBackend) async throws {
        try await backend.withStore { store in
            var generator = SplitMix(seed: 42)
            var model: [Key: [UInt8]] = [:]
            func randomKey() -> Key {
                let length = Int(generator.next() % 4) + 1
                return (0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next() % 6) * 51 }
            }
            for round in 0..<3_000 {
                var writes: [KeyWrite] = []
                for _ in 0..<Int(generator.next() % 4 + 1) {
                    let key = randomKey()
                    if generator.next() % 4 == 0 {
                        writes.append(.delete(key))
                    } else {
                        writes.append(.put(key, Array("v\(round)".utf8)))
                    }
                }
                _ = try await store.commit(KeyValueTransaction(writes: writes))
                for write in writes {
                    switch write {
                    case .put(let key, let value, _): model[key] = value
                    case .delete(let key): model[key] = nil
                    }
                }
            }
            let sorted = model.keys.sorted { $0.lexicographicallyPrecedes($1) }
            let all = try await store.scan(KeyRange(from: [], to: nil), direction: .forward, limit: .max)
            #expect(all.map(\.key) == sorted)
            #expect(all.map(\.value) == sorted.map { model[$0] ?? [] })
            let backward = try await store.scan(KeyRange(from: [], to: nil), direction: .backward, limit: .max)
            #expect(backward.map(\.key) == sorted.reversed())
            for _ in 0..<200 {
                var bounds = [randomKey(), randomKey()]
                bounds.sort { $0.lexicographicallyPrecedes($1) }
                let limit = Int(generator.next() % 20) + 1
                let expected = sorted.filter { !$0.lexicographicallyPrecedes(bounds[0]) && $0.lexicographicallyPrecedes(bounds[1]) }
                let forward = try await store.scan(KeyRange(from: bounds[0], to: bounds[1]), direction: .forward, limit: limit)
                #expect(forward.map(\.key) == Array(expected.prefix(limit)))
                let reverse = try await store.scan(KeyRange(from: bounds[0], to: bounds[1]), direction: .backward, limit: limit)
                #expect(reverse.map(\.key) == Array(expected.reversed().prefix(limit)))
            }
            let probes = (0..<100).map { _ in randomKey() }
            #expect(try await store.get(probes).map { $0?.value } == probes.map { model[$0] })
        }
    }

    @Test("a closed store refuses calls with closed", arguments: KVBackends.all)
    func closed(backend: KVBackend) async throws {
        let (store, cleanup) = try await backend.make()
        try await store.close()
        await #expect(throws: KeyValueStoreError.closed) { _ = try await store.get(key("a")) }
        await #expect(throws: KeyValueStoreError.closed) {
            _ = try await store.commit(KeyValueTransaction(writes: [.put(key("a"), value("1"))]))
        }
        await cleanup()
    }
}

/// A small deterministic generator, so that failures reproduce.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
