// EventStoreMetrics: what the event layer adds to the engine's counters: appends, events and their bytes, and the
// stream sessions open right now.
//
// Invariants:
// - Only appends that wrote events are counted, and only the events they wrote: an idempotent re-send is not,
//   also through a session (where the re-send still renews the lease) or beside a new part of the same append.
// - Counting is a few relaxed atomic adds after the commit returns; it never delays or fails an append.
// - Open sessions are counted from the lease keys in the store (TTL keys that lapse when a session expires), so the
//   figure covers every process using the store, not just this one, and never counts an expired session.

import EventStore
import Synchronization

/// A snapshot of an event store's counters; see ``KeyValueEventStore/metrics()``.
public struct EventStoreMetrics: Sendable, Hashable {
    /// Appends that wrote events (single- and multi-stream appends count once each), since this store was created.
    public var appends: UInt64
    /// Events those appends wrote.
    public var eventsAppended: UInt64
    /// Bytes of those events: payload, type and metadata properties, as ``EventStore/EventData/size`` counts them.
    public var eventBytesAppended: UInt64
    /// Stream sessions holding a live lease now, in any process.
    public var openSessions: Int
    /// The page-file engine's own counters, when the backend is a ``PageFileKeyValueStore``.
    public var engine: PageFileMetrics?
}

/// The live counters behind ``EventStoreMetrics``.
final class EventStoreCounters: Sendable {
    let appends = Atomic<UInt64>(0)
    let events = Atomic<UInt64>(0)
    let bytes = Atomic<UInt64>(0)

    /// Counts one append of `eventCount` events of `byteCount` bytes (their ``EventData/size``).
    func record(events eventCount: Int, bytes byteCount: Int) {
        appends.add(1, ordering: .relaxed)
        events.add(UInt64(eventCount), ordering: .relaxed)
        bytes.add(UInt64(byteCount), ordering: .relaxed)
    }
}

extension KeyValueEventStore {
    /// The store's counters: appends, events and bytes appended through this instance, open sessions in the store,
    /// and the engine's metrics if it is the page-file engine.
    public func metrics() async throws -> EventStoreMetrics {
        let leases = try await backendCall {
            try await self.backend.scan(.prefix([KeyTag.lease.rawValue]), direction: .forward, limit: .max)
        }
        return EventStoreMetrics(
            appends: counters.appends.load(ordering: .relaxed), eventsAppended: counters.events.load(ordering: .relaxed),
            eventBytesAppended: counters.bytes.load(ordering: .relaxed), openSessions: leases.count,
            engine: (backend as? PageFileKeyValueStore)?.metrics())
    }
}
