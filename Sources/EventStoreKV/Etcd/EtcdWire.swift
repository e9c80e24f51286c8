// The JSON shapes of etcd's v3 grpc-gateway (etcd 3.4 and later), as sent and received by the etcd backend.
//
// Invariants:
// - Field names are the protobuf names (snake_case, and `ID`/`TTL` for leases), spelled out in CodingKeys.
// - Bytes (keys, values) travel as standard base64; int64 and uint64 fields travel as JSON strings. The gateway
//   omits fields holding their zero value, so every decoded field is optional. A field whose zero is meaningful
//   (a version, a lease, a compact revision) reads as zero when missing (`number`); a revision etcd always sends
//   (header and mod revisions start at 1) is parsed strictly (`revision`), so a missing or garbled one is an error,
//   never revision 0.
// - Nothing here knows about namespaces or the key-value contract; EtcdKeyValueStore maps between the two.

import Foundation

enum EtcdWire {
    static func encode(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

    static func decode(_ text: String?, field: String) throws -> [UInt8] {
        guard let text else { return [] }
        guard let data = Data(base64Encoded: text) else {
            throw KeyValueStoreError.unavailable("etcd sent a malformed base64 \(field)")
        }
        return [UInt8](data)
    }

    static func number(_ text: String?) -> UInt64 { text.flatMap { UInt64($0) } ?? 0 }

    /// The revision in `field`, which etcd always sends: a decimal from 1 to Int64.max (etcd's revisions are int64).
    /// - Throws: ``KeyValueStoreError/unavailable(_:)`` when it is missing, zero or not such a number.
    static func revision(_ text: String?, field: String) throws -> UInt64 {
        guard let text, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }), let value = Int64(text), value > 0 else {
            throw KeyValueStoreError.unavailable("etcd sent no usable \(field): \(text.map { "\"\($0.prefix(40))\"" } ?? "missing")")
        }
        return UInt64(value)
    }

    /// A revision field etcd omits when it is zero (`compact_revision`): 0 when missing, otherwise as `revision`.
    static func revision(orZero text: String?, field: String) throws -> UInt64 {
        text == nil ? 0 : try revision(text, field: field)
    }
    static func signed(_ text: String?) -> Int64 { text.flatMap { Int64($0) } ?? 0 }

    struct Header: Decodable {
        var revision: String?
    }

    struct KeyValue: Decodable {
        var key: String?
        var value: String?
        var version: String?
        var modRevision: String?
        var createRevision: String?
        var lease: String?

        enum CodingKeys: String, CodingKey {
            case key, value, version, lease
            case modRevision = "mod_revision"
            case createRevision = "create_revision"
        }
    }

    struct RangeRequest: Encodable {
        var key: String
        var rangeEnd: String?
        var limit: String?
        var revision: String?
        var sortOrder: String?
        var sortTarget: String?
        var keysOnly: Bool?
        var countOnly: Bool?

        enum CodingKeys: String, CodingKey {
            case key, limit, revision
            case rangeEnd = "range_end"
            case sortOrder = "sort_order"
            case sortTarget = "sort_target"
            case keysOnly = "keys_only"
            case countOnly = "count_only"
        }
    }

    struct RangeResponse: Decodable {
        var header: Header?
        var kvs: [KeyValue]?
    }

    struct PutRequest: Encodable {
        var key: String
        var value: String
        var lease: String?
        var prevKV: Bool?

        enum CodingKeys: String, CodingKey {
            case key, value, lease
            case prevKV = "prev_kv"
        }
    }

    struct DeleteRangeRequest: Encodable {
        var key: String
        var rangeEnd: String?
        var prevKV: Bool?

        enum CodingKeys: String, CodingKey {
            case key
            case rangeEnd = "range_end"
            case prevKV = "prev_kv"
        }
    }

    struct Compare: Encodable {
        var result: String
        var target: String
        var key: String
        var version: String?
        var modRevision: String?
        var createRevision: String?

        enum CodingKeys: String, CodingKey {
            case result, target, key, version
            case modRevision = "mod_revision"
            case createRevision = "create_revision"
        }
    }

    struct RequestOp: Encodable {
        var requestRange: RangeRequest?
        var requestPut: PutRequest?
        var requestDeleteRange: DeleteRangeRequest?

        enum CodingKeys: String, CodingKey {
            case requestRange = "request_range"
            case requestPut = "request_put"
            case requestDeleteRange = "request_delete_range"
        }
    }

    struct TxnRequest: Encodable {
        var compare: [Compare]
        var success: [RequestOp]
        var failure: [RequestOp]
    }

    struct PutResponse: Decodable {
        var prevKV: KeyValue?
        enum CodingKeys: String, CodingKey { case prevKV = "prev_kv" }
    }

    struct DeleteRangeResponse: Decodable {
        var prevKVs: [KeyValue]?
        enum CodingKeys: String, CodingKey { case prevKVs = "prev_kvs" }
    }

    struct ResponseOp: Decodable {
        var responseRange: RangeResponse?
        var responsePut: PutResponse?
        var responseDeleteRange: DeleteRangeResponse?

        enum CodingKeys: String, CodingKey {
            case responseRange = "response_range"
            case responsePut = "response_put"
            case responseDeleteRange = "response_delete_range"
        }
    }

    struct TxnResponse: Decodable {
        var header: Header?
        var succeeded: Bool?
        var responses: [ResponseOp]?
    }

    struct LeaseGrantRequest: Encodable {
        var ttl: String
        var id: String
        enum CodingKeys: String, CodingKey {
            case ttl = "TTL"
            case id = "ID"
        }
    }

    struct LeaseGrantResponse: Decodable {
        var id: String?
        var ttl: String?
        enum CodingKeys: String, CodingKey {
            case id = "ID"
            case ttl = "TTL"
        }
    }

    struct LeaseRevokeRequest: Encodable {
        var id: String
        enum CodingKeys: String, CodingKey { case id = "ID" }
    }

    struct Empty: Decodable {}

    struct WatchCreateRequest: Encodable {
        var key: String
        var rangeEnd: String?
        var startRevision: String?
        /// Asks for progress notifications: etcd then tells a caught-up watch, now and then, the revision up to which
        /// it has been sent every change.
        var progressNotify: Bool?

        enum CodingKeys: String, CodingKey {
            case key
            case rangeEnd = "range_end"
            case startRevision = "start_revision"
            case progressNotify = "progress_notify"
        }
    }

    struct WatchRequest: Encodable {
        var createRequest: WatchCreateRequest
        enum CodingKeys: String, CodingKey { case createRequest = "create_request" }
    }

    struct WatchEvent: Decodable {
        var type: String?
        var kv: KeyValue?
    }

    struct WatchResult: Decodable {
        var header: Header?
        var created: Bool?
        var canceled: Bool?
        var compactRevision: String?
        var cancelReason: String?
        var events: [WatchEvent]?

        enum CodingKeys: String, CodingKey {
            case header, created, canceled, events
            case compactRevision = "compact_revision"
            case cancelReason = "cancel_reason"
        }
    }

    /// One line of the watch stream: a result, or an error the gateway reports inside the stream.
    struct WatchMessage: Decodable {
        var result: WatchResult?
        var error: StreamError?
    }

    struct StreamError: Decodable {
        var grpcCode: Int?
        var message: String?
        enum CodingKeys: String, CodingKey {
            case message
            case grpcCode = "grpc_code"
        }
    }

    /// The body of a non-200 gateway answer.
    struct ErrorBody: Decodable {
        var error: String?
        var message: String?
        var code: Int?
    }
}

extension EtcdWire.KeyValue {
    /// The contract entry for this etcd key, with `namespace` stripped from the key.
    func entry(droppingNamespace namespace: Int) throws -> KeyValueEntry {
        let fullKey = try EtcdWire.decode(key, field: "key")
        return KeyValueEntry(
            key: Array(fullKey.dropFirst(namespace)), value: try EtcdWire.decode(value, field: "value"),
            version: EtcdWire.number(version), modRevision: try EtcdWire.revision(modRevision, field: "mod_revision"))
    }
}
