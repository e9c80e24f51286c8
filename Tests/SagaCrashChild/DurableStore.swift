// Opens the durable store the crash test kills and reopens: the page-file engine, never an in-memory stand-in.

import EventStore
import EventStoreKV

enum DurableStore {
    static func open(directory: String) throws -> KeyValueEventStore {
        try KeyValueEventStore.open(directory: directory)
    }
}

enum CrashChildError: Error, CustomStringConvertible {
    case usage(String)

    var description: String {
        switch self {
        case .usage(let detail): detail
        }
    }
}
