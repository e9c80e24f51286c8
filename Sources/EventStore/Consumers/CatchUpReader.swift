// The engine of every subscription: read history in batches, then wait for the store's doorbell and read again.
//
// Invariants:
// - The doorbell (``EventStoring/logNotifications()``) is opened BEFORE the first read, so a commit that lands
//   between the end of the history and the start of waiting still rings: no wakeup is lost.
// - `cursor` is the next position (or version) to read. It only moves past events that were read, and the store
//   makes every committed event visible in cursor order (gapless positions assigned at commit), so nothing is
//   skipped and nothing is delivered twice. The one exception: after a short read of the log, the cursor moves on
//   to the head read before a second read, past positions that read did not return: they were committed before
//   it, so they are scavenged or hidden, and "caught up" reaches the head instead of stopping below a scavenged
//   tail. After an event at the last UInt64 (which only damaged bytes can hold)
//   there is no next position: the reader stops reading (`exhausted`) instead of overflowing the cursor.
// - Memory is bounded: at most `bufferSize` events are held, and the next batch is read only when the consumer has
//   taken the last one (pull-based back-pressure). The doorbell buffers at most one ring.
// - Cancelling the consuming task ends the sequence (returns nil) without an error.

import Foundation

/// Reads one ordered source (the global log or one stream) for a subscription.
struct CatchUpReader: Sendable {
    /// Reads up to `limit` events from `cursor` (inclusive).
    typealias Read = @Sendable (_ cursor: UInt64, _ limit: Int) async throws -> [RecordedEvent]

    let store: any EventStoring
    let bufferSize: Int
    let filter: SubscriptionFilter
    /// The first cursor to read, resolved once the doorbell is open.
    let resolveStart: @Sendable () async throws -> UInt64
    let read: Read
    /// The cursor value of an event (its position, or its version).
    let cursorOf: @Sendable (RecordedEvent) -> UInt64
    /// The last cursor value written (the log's last position), for a source whose last values can be removed
    /// (scavenged) while their number stays taken; nil for a stream, whose scavenge removes from the front.
    var head: (@Sendable () async throws -> UInt64)? = nil
    /// Opens the doorbell: the store's ``EventStoring/logNotifications()``, or a stream that also ends when the
    /// consumer must stop (an exclusive projection's lost lease).
    var openDoorbell: @Sendable () async throws -> AsyncThrowingStream<Void, any Error>
}

/// The iteration state shared by both subscription iterators.
struct CatchUpState {
    private let reader: CatchUpReader
    private var doorbell: AsyncThrowingStream<Void, any Error>.AsyncIterator?
    private var cursor: UInt64 = 0
    private var buffer: [RecordedEvent] = []
    private var bufferIndex = 0
    private var atEnd = false
    /// The last event read was at the last UInt64: nothing can follow it.
    private var exhausted = false
    private var announcedThrough: UInt64?
    private var pendingCaughtUp = false
    private var finished = false

    init(reader: CatchUpReader) { self.reader = reader }

    /// Events read ahead and not yet delivered.
    var bufferedEventCount: Int { buffer.count - bufferIndex }

    mutating func next() async throws -> SubscriptionMessage? {
        do {
            return try await advance()
        } catch is CancellationError {
            finish()
            return nil
        } catch EventStoreError.storeClosed where doorbell != nil {
            // The store closed under an open subscription (a ring already buffered sent it to read the closed
            // store): that ends the subscription, as the doorbell's own end does. Opening on a closed store throws.
            finish()
            return nil
        } catch {
            finish()
            throw error
        }
    }

    private mutating func advance() async throws -> SubscriptionMessage? {
        while !finished {
            if Task.isCancelled { break }
            if bufferIndex < buffer.count {
                defer { bufferIndex += 1 }
                return .event(buffer[bufferIndex])
            }
            if doorbell == nil { try await open() }
            if pendingCaughtUp {
                pendingCaughtUp = false
                announcedThrough = readThrough
                return .caughtUp(through: readThrough)
            }
            if atEnd {
                // Nil means the task was cancelled or the store closed: either way the subscription is over. A
                // doorbell that throws ends it with that error.
                guard try await doorbell?.next() != nil else { break }
                atEnd = false
            }
            try await readBatch()
        }
        finish()
        return nil
    }

    /// The last position (or version) read so far.
    private var readThrough: UInt64 { exhausted ? .max : cursor - 1 }

    private mutating func open() async throws {
        guard reader.bufferSize > 0 else {
            throw EventStoreError.invalidArgument("a subscription's bufferSize must be positive, got \(reader.bufferSize)")
        }
        doorbell = try await reader.openDoorbell().makeAsyncIterator()
        cursor = try await reader.resolveStart()
    }

    private mutating func readBatch() async throws {
        // A backend that answers without suspending would otherwise let a long catch-up hold a shared thread.
        await Task.yield()
        var events = exhausted ? [] : try await reader.read(cursor, reader.bufferSize)
        moveCursor(past: events)
        if events.count < reader.bufferSize, !exhausted, let head = reader.head {
            let last = try await head()
            if last >= cursor {
                // Either events committed since the read, or positions scavenged under it: read again, and any
                // position up to `last` this read does not return was committed before it and is gone.
                let more = try await reader.read(cursor, reader.bufferSize - events.count)
                moveCursor(past: more)
                events += more
                if events.count < reader.bufferSize, !exhausted, last >= cursor, last < .max { cursor = last + 1 }
            }
        }
        buffer = reader.filter == .all ? events : events.filter(reader.filter.matches)
        bufferIndex = 0
        if events.count < reader.bufferSize || exhausted {
            atEnd = true
            if announcedThrough != readThrough { pendingCaughtUp = true }
        }
    }

    /// Moves the cursor past the last of `events`, read from it.
    private mutating func moveCursor(past events: [RecordedEvent]) {
        guard let last = events.last else { return }
        let position = reader.cursorOf(last)
        if position == .max { exhausted = true } else { cursor = position + 1 }
    }

    private mutating func finish() {
        finished = true
        buffer = []
        bufferIndex = 0
        doorbell = nil
    }
}
