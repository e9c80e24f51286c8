// Keeps README.md's quick-start example compiling and true: the code between the README markers below must
// appear verbatim in README.md's first swift code block, and it runs here.

import EventStore
import EventStoreKV
import Foundation
import Testing

@Suite("README example")
struct ReadmeExampleTests {
    @Test("the quick-start example runs and matches README.md")
    func quickStart() async throws {
        // README-BEGIN
        struct Deposited: DomainEvent {
            static let eventType = "Deposited"
            var amountInCents: Int64
        }

        var registry = EventTypeRegistry()
        try registry.register(Deposited.self)

        let store = KeyValueEventStore.inMemory()
        let stream = try StreamName("account-42")

        // Append with an expected version: a concurrent writer gets wrongExpectedVersion instead of a lost update.
        let result = try await store.append(
            [try registry.encode(Deposited(amountInCents: 1_250))], to: stream, expectedVersion: .noStream)
        print("stream at version \(result.version), global positions \(result.positions)")

        for event in try await store.read(stream) {
            let deposit = try registry.decode(event) as? Deposited
            print(event.version, event.type, deposit?.amountInCents ?? 0)
        }
        // README-END
        #expect(result.version == 1)
        #expect(try await store.read(stream).count == 1)

        let source = try String(contentsOfFile: #filePath, encoding: .utf8)
        let readme = try String(
            contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent().appendingPathComponent("README.md"),
            encoding: .utf8)
        let snippet = try #require(Self.between("// README-BEGIN\n", "        // README-END", in: source))
        let dedented = snippet.split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasPrefix("        ") ? String($0.dropFirst(8)) : String($0) }
            .joined(separator: "\n")
        #expect(readme.contains(dedented), "README.md's example must be the tested snippet, verbatim")
    }

    @Test("the visiting-read example runs and matches README.md")
    func visitingRead() async throws {
        let store = KeyValueEventStore.inMemory()
        _ = try await store.append(makeEvents(3), to: try uniqueStream(), expectedVersion: .noStream)
        _ = try await store.append([makeEvent("abcdef", type: "Withdrawn")], to: try uniqueStream(), expectedVersion: .any)
        // VISITING-BEGIN
        var eventsPerType: [String: Int] = [:]
        var payloadBytes = 0
        let visited = try await store.readAll(from: 1, limit: .max) { event in
            eventsPerType[event.type, default: 0] += 1
            payloadBytes += event.data.count  // event.data is lent: valid only inside this closure
            return true  // false stops the read
        }
        // VISITING-END
        #expect(visited == 4)
        #expect(eventsPerType == ["Deposited": 3, "Withdrawn": 1])
        #expect(payloadBytes == 2 + 2 + 2 + 6)
    }

    @Test("the example of a reader beside the writer runs and matches README.md")
    func readerBesideTheWriter() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("readme-reader-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let writerEngine = try await PageFileKeyValueStore.open(directory: path)
        let writer = KeyValueEventStore(backend: writerEngine)
        let stream = try uniqueStream()
        _ = try await writer.append(makeEvents(2), to: stream, expectedVersion: .noStream)
        // READER-BEGIN
        let engine = try await PageFileKeyValueStore.open(directory: path, options: PageFileOptions(readOnly: true))
        let reader = KeyValueEventStore(backend: engine)
        let recent = try await reader.readAll(from: 1, limit: 100)  // what the writer had acknowledged at open
        try await engine.refresh()  // takes in the writer's later commits and checkpoints; subscriptions see them
        // READER-END
        #expect(recent.count == 2)
        _ = try await writer.append(makeEvents(1), to: stream, expectedVersion: .exact(2))
        #expect(try await reader.lastPosition() == 2)
        #expect(try await engine.refresh() == 1)
        #expect(try await reader.read(stream).count == 3)
        try await writerEngine.checkpoint()
        _ = try await writer.append(makeEvents(1), to: stream, expectedVersion: .exact(3))
        #expect(try await engine.refresh() == 1)
        #expect(try await reader.read(stream).count == 4)
        try await engine.close()
        try await writerEngine.close()
    }

    /// This file's examples as README.md quotes them (without the test's indentation).
    static func dedentedSource() throws -> String {
        try String(contentsOfFile: #filePath, encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: false)
            .map { $0.hasPrefix("        ") ? String($0.dropFirst(8)) : String($0) }
            .joined(separator: "\n")
    }

    @Test("every other swift block in README.md is quoted verbatim from a document whose examples are tested")
    func quotedExamples() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        // Each of these documents has a test that compiles and runs its examples.
        let tested = try ["docs/SUBSCRIPTIONS.md", "docs/SNAPSHOTS.md", "docs/SAGAS.md"].map {
            try String(contentsOf: root.appendingPathComponent($0), encoding: .utf8)
        } + [try Self.dedentedSource()]
        let blocks = readme.components(separatedBy: "```swift\n").dropFirst().compactMap {
            $0.components(separatedBy: "```").first
        }
        #expect(blocks.count >= 4)
        for block in blocks.dropFirst() {  // the first is the quick start, run by the test above
            #expect(tested.contains { $0.contains(block) }, "README block is not quoted from a tested document:\n\(block)")
        }
    }

    static func between(_ start: String, _ end: String, in text: String) -> String? {
        guard let from = text.range(of: start), let to = text.range(of: end, range: from.upperBound..<text.endIndex)
        else { return nil }
        return String(text[from.upperBound..<to.lowerBound])
    }
}
