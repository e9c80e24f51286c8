// The one-line default: an event store on a directory, backed by the page-file engine.
//
// Invariant: this is the only place the event layer names the default backend; everything else goes through the
// key-value contract.

import EventStore

extension KeyValueEventStore {
    /// Opens (creating if needed) the event store in `directory`, on the page-file engine with full durability.
    ///
    /// ```swift
    /// let store = try KeyValueEventStore.open(directory: "/var/lib/myapp/events")
    /// ```
    public static func open(
        directory: String, options: PageFileOptions = PageFileOptions(), limits: EventStoreLimits = EventStoreLimits()
    ) throws -> KeyValueEventStore {
        KeyValueEventStore(backend: try PageFileKeyValueStore.open(directory: directory, options: options), limits: limits)
    }
}
