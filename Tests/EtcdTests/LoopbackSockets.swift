// Loopback sockets for the tests that stand in for etcd members (fake gateways, members that drop requests or never
// accept them).

import EventStore
@testable import EventStoreKV
import Foundation
#if canImport(Glibc)
    import Glibc
#endif

/// A socket on 127.0.0.1 bound to a free port, listening with `backlog` unless it is nil, and its address.
func loopbackSocket(listening backlog: Int32?) throws -> (fd: Int32, address: sockaddr_in) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
    if let backlog, listen(fd, backlog) != 0 {
        Glibc.close(fd)
        throw KeyValueStoreError.unavailable("listen failed")
    }
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return (fd, address)
}

/// Stops a fake member: shuts its listener down (so that its accept loop ends), shuts down and closes the connections
/// it `held` (so that every client sees their end and the member's threads reading them wake) and closes the listener.
func stopLoopbackMember(listener: Int32, held: Locked<[Int32]>) {
    _ = shutdown(listener, Int32(SHUT_RDWR))
    let clients = held.withLock { held -> [Int32] in
        defer { held.removeAll() }
        return held
    }
    for client in clients {
        _ = shutdown(client, Int32(SHUT_RDWR))
        Glibc.close(client)
    }
    Glibc.close(listener)
}

/// A listener on 127.0.0.1 whose accept queue is full, standing in for a dead host: the kernel drops further SYNs,
/// so a connect() to it waits. Returns the listener's address and every descriptor it took (close them all).
func fullAcceptQueue() throws -> (address: sockaddr_in, descriptors: [Int32]) {
    let (fd, address) = try loopbackSocket(listening: 0)
    var descriptors = [fd]
    for _ in 0..<4 {
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        var target = address
        _ = withUnsafePointer(to: &target) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        descriptors.append(client)
    }
    return (address, descriptors)
}
