// Opens the durable store the crash test kills and reopens: the page-file engine, never an in-memory stand-in.
//
// Invariant: without the page-file engine compiled in (the SAGAS_CRASH_ENGINE condition, set in Package.swift once
// the engine is merged), opening fails with exit code 3 and a message; there is no fallback store.

import EventStore
import EventStoreKV

enum DurableStore {
    static func open(directory: String) throws -> KeyValueEventStore {
        #if SAGAS_CRASH_ENGINE
            return try KeyValueEventStore.open(directory: directory)
        #else
            throw CrashChildError.noDurableEngine
        #endif
    }
}

enum CrashChildError: Error, CustomStringConvertible {
    case noDurableEngine
    case usage(String)

    var description: String {
        switch self {
        case .noDurableEngine:
            "this build has no durable engine: define SAGAS_CRASH_ENGINE for SagaCrashChild once the page-file engine is merged"
        case .usage(let detail): detail
        }
    }
}
