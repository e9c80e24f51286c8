import EventStore
import Foundation
import Testing

/// A small event with a recognisable payload.
func makeEvent(_ label: String, type: String = "Deposited", id: UUID = UUID()) -> EventData {
    EventData(id: id, type: type, data: Data(label.utf8))
}

func makeEvents(_ count: Int, label: String = "e") -> [EventData] {
    (0..<count).map { makeEvent("\(label)\($0)") }
}

/// A fresh stream name unique to the test.
func uniqueStream(_ prefix: String = "stream") throws -> StreamName {
    try StreamName("\(prefix)-\(UUID().uuidString.prefix(8))")
}

extension RecordedEvent {
    var label: String { String(decoding: data, as: UTF8.self) }
}
