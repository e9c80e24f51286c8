// KeyOrder: the byte order of keys, compared with memcmp.
//
// Invariants:
// - `precedes` is exactly unsigned lexicographic order (the order `lexicographicallyPrecedes` gives on [UInt8]):
//   the first differing byte decides, and a proper prefix comes first. Tree search and batch lookups use it on the
//   hot path because the generic sequence comparison walks iterators byte by byte.

import Foundation

extension Array where Element == UInt8 {
    /// Whether this key sorts strictly before `other` in unsigned lexicographic byte order.
    @inline(__always)
    func precedes(_ other: [UInt8]) -> Bool {
        withUnsafeBufferPointer { mine in
            other.withUnsafeBufferPointer { theirs in
                let common = Swift.min(mine.count, theirs.count)
                if common > 0 {
                    let order = memcmp(mine.baseAddress!, theirs.baseAddress!, common)
                    if order != 0 { return order < 0 }
                }
                return mine.count < theirs.count
            }
        }
    }
}
