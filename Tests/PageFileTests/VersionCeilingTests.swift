// FORMAT.md, "Meta pages": every per-key version is below 2^62, a larger value is damage, and "a counter that would
// step past 2^62 ... is reported as `corrupted` instead of wrapping". A leaf entry at version 2^62 - 1 is valid; a put
// over it stored version 2^62, acknowledged, which the same store then refused as damage on its next open
// (twenty-first session's review: BTree's entry(_:_:replacing:) stepped the version with a plain + 1).

import EventStore
import Foundation
import Testing

@testable import EventStoreKV

@Suite("Page file: the per-key version ceiling")
struct VersionCeilingTests {
    /// Sets the per-key version of `key`'s leaf entry in the closed store's data file to `version` and reseals the
    /// page (layout and CRC-32C from FORMAT.md: "Leaf pages", "Common page header").
    private func setVersion(of key: [UInt8], to version: UInt64, dataPath: String, pageSize: Int) throws {
        var data = Array(try Data(contentsOf: URL(fileURLWithPath: dataPath)))
        var patched = false
        for number in 2..<(data.count / pageSize) {
            let start = number * pageSize
            guard data[start + 4] == 3 else { continue }
            let count = Int(UInt16(data[start + 24]) | UInt16(data[start + 25]) << 8)
            var at = start + 32
            for _ in 0..<count {
                let k = Int(UInt16(data[at]) | UInt16(data[at + 1]) << 8)
                let entryKey = Array(data[(at + 2)..<(at + 2 + k)])
                let fields = at + 2 + k
                let flags = data[fields]
                let v = Int((0..<4).reduce(UInt32(0)) { $0 | UInt32(data[fields + 25 + $1]) << (8 * UInt32($1)) })
                if entryKey == key {
                    for byte in 0..<8 {
                        data[fields + 1 + byte] = UInt8(truncatingIfNeeded: version >> (8 * UInt64(byte)))
                    }
                    patched = true
                }
                at = fields + 29 + (flags == 1 ? 8 : v)
            }
            if patched {
                var crc: UInt32 = 0xFFFF_FFFF
                for byte in data[(start + 4)..<(start + pageSize)] {
                    crc ^= UInt32(byte)
                    for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
                }
                crc = ~crc
                for byte in 0..<4 { data[start + byte] = UInt8(truncatingIfNeeded: crc >> (8 * UInt32(byte))) }
                break
            }
        }
        try #require(patched, "the key's leaf entry was not found")
        try Data(data).write(to: URL(fileURLWithPath: dataPath))
    }

    /// The key every test here puts at a version near the ceiling.
    private static let ceiling = Array("ceiling".utf8)

    /// A closed store in `directory` holding ``ceiling`` at `version` (and `others`, at version 1).
    private func makeStore(in directory: TemporaryDirectory, ceilingAt version: UInt64, others: [KeyWrite] = [])
        async throws
    {
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        _ = try await store.commit(KeyValueTransaction(writes: [.put(Self.ceiling, [1])] + others))
        try await store.close()
        try setVersion(of: Self.ceiling, to: version, dataPath: directory.file("data"), pageSize: 4096)
    }

    @Test("a put over an entry at version 2^62 - 1 is refused as corrupted, and the store keeps the entry and opens")
    func putAtTheCeilingIsRefused() async throws {
        let directory = TemporaryDirectory("version-ceiling")
        defer { directory.remove() }
        let key = Self.ceiling
        let last: UInt64 = (1 << 62) - 1
        try await makeStore(in: directory, ceilingAt: last)

        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(try await store.get(key)?.version == last, "the documented bound allows the entry")
        await #expect {
            _ = try await store.commit(KeyValueTransaction(writes: [.put(key, [2])]))
        } throws: { error in
            guard case EventStoreError.corrupted(let location, let detail) = error else { return false }
            return location.contains("ceiling") && detail.contains("2^62")
        }
        #expect(try await store.get(key)?.value == [1], "nothing was written")
        _ = try await store.commit(KeyValueTransaction(writes: [.put(Array("other".utf8), [3])]))
        try await store.close()

        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        let entry = try await reopened.get(key)
        #expect(entry?.value == [1] && entry?.version == last)
        #expect(try await reopened.get(Array("other".utf8))?.value == [3])
        try await reopened.close()
    }

    // Twenty-first session's second review: in a commit that joins an open group (whose nodes it changes in place),
    // the refusal came after earlier writes had changed them, so it failed the whole store, and the group's other
    // commits with it. The ceiling is now checked ahead of any change, with the read-ahead.

    @Test("a commit joining an open group and refused at the version ceiling fails only itself; the group commits")
    func ceilingRefusalInAJoiningCommitFailsOnlyIt() async throws {
        let directory = TemporaryDirectory("version-ceiling-group")
        defer { directory.remove() }
        let ceiling = Self.ceiling
        try await makeStore(in: directory, ceilingAt: (1 << 62) - 1)

        let gate = IOGate(pathSuffix: "/wal")
        let store = try await PageFileKeyValueStore.open(
            directory: directory.path, options: smallOptions(faults: IOFaultPlan([], syncGate: gate)))
        gate.hold()
        let first = Task { try await store.commit(KeyValueTransaction(writes: [.put(Array("zz-1".utf8), [1])])) }
        await gate.arrival()
        // The open group's first commit, then one refused at its second write, then an innocent one.
        let opener = await startUpdate(store, KeyValueTransaction(writes: [.put(Array("zz-2".utf8), [2])]))
        let refused = await startUpdate(
            store, KeyValueTransaction(writes: [.put(Array("zz-3".utf8), [3]), .put(ceiling, [3])]))
        let barrier = await startUpdate(store, KeyValueTransaction(writes: [.put(Array("zz-4".utf8), [4])]))
        gate.release()
        _ = try await first.value
        await #expect(throws: EventStoreError.self) { _ = try await refused.value }
        if case .failure(let error) = await refused.result {
            #expect("\(error)".contains("2^62"), "the refusal should be the version ceiling: \(error)")
        }
        #expect(
            store.pipeline.failed == nil,
            "the refusal failed the whole store: \(String(describing: store.pipeline.failed))")
        let openerResult = await opener.result
        let barrierResult = await barrier.result
        if case .failure(let error) = openerResult { Issue.record("the group's earlier commit failed: \(error)") }
        if case .failure(let error) = barrierResult { Issue.record("the group's later commit failed: \(error)") }
        do {
            _ = try await store.commit(KeyValueTransaction(writes: [.put(Array("late".utf8), [5])]))
        } catch {
            Issue.record("a later commit failed: \(error)")
        }
        try? await store.close()
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(try await reopened.get(Array("zz-3".utf8)) == nil, "the refused commit is half applied")
        #expect(try await reopened.get(ceiling)?.value == [1])
        try await reopened.close()
    }

    /// Outside an open group, a refusal at a later write of a commit discards the earlier writes' copies.
    @Test("a refusal at the second write of a lone commit leaves nothing of it, and later commits work")
    func ceilingRefusalMidTransactionAlone() async throws {
        let directory = TemporaryDirectory("version-ceiling-mid")
        defer { directory.remove() }
        let ceiling = Self.ceiling
        try await makeStore(in: directory, ceilingAt: (1 << 62) - 1, others: [.put(Array("a".utf8), [1])])
        let store = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        await #expect(throws: EventStoreError.self) {
            _ = try await store.commit(
                KeyValueTransaction(writes: [
                    .put(Array("a".utf8), [2]), .put(Array("b".utf8), [2]), .put(ceiling, [2]),
                ]))
        }
        #expect(try await store.get(Array("a".utf8))?.value == [1])
        #expect(try await store.get(Array("a".utf8))?.version == 1)
        #expect(try await store.get(Array("b".utf8)) == nil)
        _ = try await store.commit(
            KeyValueTransaction(writes: [.put(Array("a".utf8), [3]), .put(Array("c".utf8), [3])]))
        #expect(try await store.get(Array("a".utf8))?.version == 2)
        try await store.close()
        let reopened = try await PageFileKeyValueStore.open(directory: directory.path, options: smallOptions())
        #expect(try await reopened.get(Array("a".utf8))?.value == [3])
        #expect(try await reopened.get(Array("b".utf8)) == nil)
        #expect(try await reopened.get(ceiling)?.version == (1 << 62) - 1)
        try await reopened.close()
    }

    // Third review: the check ahead of an open group's change stepped the version for every put of the key, but a
    // put whose TTL has passed already writes an entry dead at once, so the next put starts again at 1; a joining
    // commit that the store accepts alone was refused as corrupted.

    /// An already-expired put, then a plain put, of a key at 2^62 - 2: versions 2^62 - 1, then 1.
    private static let expiredThenPut = KeyValueTransaction(writes: [
        .put(ceiling, [3], ttl: .zero), .put(ceiling, [4]),
    ])

    @Test("an expired put then a put of a key at 2^62 - 2 commits alone and in an open group alike, at version 1")
    func expiredPutRestartsTheVersion() async throws {
        for joining in [false, true] {
            let directory = TemporaryDirectory("version-ceiling-expired")
            defer { directory.remove() }
            let key = Self.ceiling
            try await makeStore(in: directory, ceilingAt: (1 << 62) - 2)
            let gate = IOGate(pathSuffix: "/wal")
            let store = try await PageFileKeyValueStore.open(
                directory: directory.path, options: smallOptions(faults: IOFaultPlan([], syncGate: gate)))
            if joining {
                gate.hold()
                let first = Task {
                    try await store.commit(KeyValueTransaction(writes: [.put(Array("zz-1".utf8), [1])]))
                }
                await gate.arrival()
                let opener = await startUpdate(store, KeyValueTransaction(writes: [.put(Array("zz-2".utf8), [2])]))
                let joined = await startUpdate(store, Self.expiredThenPut)
                gate.release()
                _ = try await first.value
                _ = try await opener.value
                if case .failure(let error) = await joined.result {
                    Issue.record("a commit the store accepts alone was refused in a group: \(error)")
                }
            } else {
                _ = try await store.commit(Self.expiredThenPut)
            }
            let entry = try await store.get(key)
            #expect(entry?.value == [4] && entry?.version == 1, "joining: \(joining)")
            try await store.close()
        }
    }
}
