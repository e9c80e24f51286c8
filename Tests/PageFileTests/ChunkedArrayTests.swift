// ChunkedArray holds a branch's keys and children: it must behave exactly like an Array under the edits the tree
// makes (set, insert, remove, cut a suffix), and a copy must never see the original's later changes.

@testable import EventStoreKV
import Testing

@Suite("Chunked array")
struct ChunkedArrayTests {
    /// A small deterministic generator (SplitMix64), so a failure repeats.
    private struct Numbers {
        var state: UInt64
        mutating func next(_ bound: Int) -> Int {
            state &+= 0x9E37_79B9_7F4A_7C15
            var value = state
            value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
            value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
            value ^= value >> 31
            return Int(value % UInt64(max(bound, 1)))
        }
    }

    @Test("edits at every position, across chunk boundaries, match an Array")
    func matchesArray() {
        var numbers = Numbers(state: 42)
        var chunked = ChunkedArray<Int>()
        var plain: [Int] = []
        for step in 0..<4_000 {
            switch numbers.next(100) {
            case 0..<55:
                let index = numbers.next(plain.count + 1)
                chunked.insert(step, at: index)
                plain.insert(step, at: index)
            case 55..<75:
                guard !plain.isEmpty else { continue }
                let index = numbers.next(plain.count)
                #expect(chunked.remove(at: index) == plain.remove(at: index))
            case 75..<97:
                guard !plain.isEmpty else { continue }
                let index = numbers.next(plain.count)
                chunked[index] = -step
                plain[index] = -step
            default:
                // Cut rarely and only a little, so the array grows over several chunks.
                let index = max(0, plain.count - numbers.next(20))
                chunked.removeSuffix(from: index)
                plain.removeSubrange(index...)
            }
            #expect(chunked.count == plain.count)
            if step % 97 == 0 { #expect(Array(chunked) == plain, "after step \(step)") }
        }
        #expect(plain.count > 3 * ChunkedArray<Int>.chunkSize, "the walk never spanned several chunks")
        #expect(Array(chunked) == plain)
        #expect(Array(ChunkedArray(plain)) == plain)
        #expect(Array(ChunkedArray(plain)[5...]) == Array(plain[5...]))
    }

    @Test("a copy keeps its elements when the original changes, and the other way round")
    func copiesAreIndependent() {
        let original = ChunkedArray(0..<200)
        var changed = original
        changed[70] = -1
        changed.insert(-2, at: 3)
        changed.remove(at: 150)
        var cut = original
        cut.removeSuffix(from: 64)
        #expect(Array(original) == Array(0..<200))
        #expect(Array(cut) == Array(0..<64))
        var expected = Array(0..<200)
        expected[70] = -1
        expected.insert(-2, at: 3)
        expected.remove(at: 150)
        #expect(Array(changed) == expected)
    }

    @Test("cutting at a chunk boundary and at zero leaves a valid array")
    func cutsAtBoundaries() {
        let size = ChunkedArray<Int>.chunkSize
        var array = ChunkedArray(0..<(3 * size))
        array.removeSuffix(from: 2 * size)
        #expect(Array(array) == Array(0..<(2 * size)))
        array.insert(-1, at: 2 * size)
        #expect(array[2 * size] == -1 && array.count == 2 * size + 1)
        array.removeSuffix(from: 0)
        #expect(array.isEmpty)
        array.insert(5, at: 0)
        #expect(Array(array) == [5])
    }
}
