// ChunkedArray: a branch node's keys and children, stored so that a copy-on-write copy costs little.
//
// A branch copied into a transaction changes one child reference (and, on a split, inserts one key and child). With
// plain arrays that first change copies the whole array, retaining every key and child of a fan-out of up to a few
// hundred, and freeing the replaced branch later releases them all again: in the profiles of single appends that
// was most of the writer's reference counting. Here the elements live in chunks of `chunkSize`, so the first change
// copies the table of chunks (one retain per chunk) and the one chunk it touches.
//
// Invariants:
// - Every chunk but the last holds exactly `chunkSize` elements; the last holds 1...chunkSize; an empty array has
//   no chunks. So element `i` is at chunk `i / chunkSize`, position `i % chunkSize`.
// - `count` is the total number of elements.

/// An array of elements in fixed-size chunks: copying it and then changing one element copies one chunk, not all
/// of them. See the invariants at the top of this file.
struct ChunkedArray<Element>: RandomAccessCollection {
    /// Elements per chunk (a power of two, so indexing is a shift and a mask).
    static var chunkSize: Int { 16 }
    private static var shift: Int { 4 }

    private var chunks: [[Element]]
    private(set) var count: Int

    /// An empty array.
    init() {
        chunks = []
        count = 0
    }

    /// The elements of `elements`, in order.
    init<S: Sequence>(_ elements: S) where S.Element == Element {
        chunks = []
        count = 0
        var chunk: [Element] = []
        chunk.reserveCapacity(Self.chunkSize)
        for element in elements {
            chunk.append(element)
            if chunk.count == Self.chunkSize {
                chunks.append(chunk)
                chunk.removeAll(keepingCapacity: true)
            }
        }
        if !chunk.isEmpty { chunks.append(chunk) }
        count = chunks.reduce(0) { $0 + $1.count }
    }

    var startIndex: Int { 0 }
    var endIndex: Int { count }

    subscript(index: Int) -> Element {
        get { chunks[index &>> Self.shift][index & (Self.chunkSize - 1)] }
        set { chunks[index &>> Self.shift][index & (Self.chunkSize - 1)] = newValue }
    }

    /// Inserts `element` at `index` (0...count), moving the later elements up by one.
    mutating func insert(_ element: Element, at index: Int) {
        precondition(index >= 0 && index <= count, "ChunkedArray insert index out of range")
        var chunk = index &>> Self.shift
        var position = index & (Self.chunkSize - 1)
        var carried = element
        count += 1
        while chunk < chunks.count {
            chunks[chunk].insert(carried, at: position)
            guard chunks[chunk].count > Self.chunkSize else { return }
            // The chunk overflowed: its last element becomes the first of the next chunk.
            carried = chunks[chunk].removeLast()
            chunk += 1
            position = 0
        }
        chunks.append([carried])
    }

    /// Removes and returns the element at `index`, moving the later elements down by one.
    @discardableResult
    mutating func remove(at index: Int) -> Element {
        precondition(index >= 0 && index < count, "ChunkedArray remove index out of range")
        var chunk = index &>> Self.shift
        let removed = chunks[chunk].remove(at: index & (Self.chunkSize - 1))
        while chunk + 1 < chunks.count {
            chunks[chunk].append(chunks[chunk + 1].removeFirst())
            chunk += 1
        }
        if chunks[chunks.count - 1].isEmpty { chunks.removeLast() }
        count -= 1
        return removed
    }

    /// Removes the elements from `index` (0...count) to the end.
    mutating func removeSuffix(from index: Int) {
        precondition(index >= 0 && index <= count, "ChunkedArray suffix index out of range")
        let kept = (index + Self.chunkSize - 1) &>> Self.shift
        chunks.removeSubrange(kept...)
        let position = index & (Self.chunkSize - 1)
        if position != 0 { chunks[kept - 1].removeSubrange(position...) }
        count = index
    }
}

extension ChunkedArray: Sendable where Element: Sendable {}
