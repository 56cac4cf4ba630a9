internal import CCurlShim
import SystemKit

/// Unary gRPC calls over HTTP/2 cleartext on a unix socket (the kubelet's PodResources socket, containerd's CRI
/// socket), through libcurl (dlopen()ed on the first call, like `CurlTransport`). The wire format is
/// device-plugins.md §2: one HEADERS + DATA request with a 5-byte length-prefixed message, the answer's
/// `grpc-status`/`grpc-message` read from the initial headers (Trailers-Only) or from the trailers.
///
/// This file knows nothing about the services it calls: messages go in and come out as protobuf bytes.

/// gRPC status codes (grpc/grpc `doc/statuscodes.md`).
public enum GRPCStatusCode {
    public static let ok = 0
    public static let cancelled = 1
    public static let unknown = 2
    public static let invalidArgument = 3
    public static let deadlineExceeded = 4
    public static let notFound = 5
    public static let alreadyExists = 6
    public static let permissionDenied = 7
    public static let resourceExhausted = 8
    public static let failedPrecondition = 9
    public static let aborted = 10
    public static let outOfRange = 11
    public static let unimplemented = 12
    public static let `internal` = 13
    public static let unavailable = 14
    public static let dataLoss = 15
    public static let unauthenticated = 16

    /// The canonical upper-case name (`UNIMPLEMENTED`), or `CODE(<n>)` for an unassigned code.
    public static func name(_ code: Int) -> String {
        let names = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                     "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
                     "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"]
        return code >= 0 && code < names.count ? names[code] : "CODE(\(code))"
    }
}

/// A failed unary call.
public struct GRPCError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The server answered with this non-zero `grpc-status` (or an HTTP status that maps to one).
        case status(Int)
        /// The socket file does not exist (nothing was sent; libcurl was not even loaded).
        case socketAbsent
        /// Connecting failed (a socket file nobody listens on) or the connection or stream broke.
        case connection
        /// The call's timeout expired.
        case timeout
        /// The answer is not a usable gRPC response: no `grpc-status`, a compressed or mis-framed message, a body
        /// over the size cap.
        case invalidResponse
        /// The call cannot be made at all: libcurl missing or built without HTTP/2, an unusable socket path or
        /// method path.
        case setup
    }

    public var kind: Kind
    /// The decoded `grpc-message` for `status`, else the transport's explanation.
    public var message: String
    /// The CURLcode behind a transport failure, 0 when none.
    public var curlCode: Int

    public init(_ kind: Kind, _ message: String, curlCode: Int = 0) {
        self.kind = kind
        self.message = message
        self.curlCode = curlCode
    }

    /// The gRPC status the failure amounts to, as grpc-go would report it: the server's code, UNAVAILABLE (14) for
    /// a missing socket or broken connection, DEADLINE_EXCEEDED (4) for a timeout, INTERNAL (13) for an unusable
    /// answer, UNKNOWN (2) for set-up failures.
    public var statusCode: Int {
        switch kind {
        case .status(let c): return c
        case .socketAbsent, .connection: return GRPCStatusCode.unavailable
        case .timeout: return GRPCStatusCode.deadlineExceeded
        case .invalidResponse: return GRPCStatusCode.internal
        case .setup: return GRPCStatusCode.unknown
        }
    }

    public var description: String {
        switch kind {
        case .status(let c):
            let head = "gRPC status \(c) (\(GRPCStatusCode.name(c)))"
            return message.isEmpty ? head : "\(head): \(message)"
        default:
            return message
        }
    }
}

/// One unary gRPC call. Implementations: `CurlGRPCTransport` and test fakes. Not required to be thread-safe.
public protocol GRPCUnaryTransport: AnyObject {
    /// Sends `message` (protobuf bytes, unframed) to the method `path` (`/<package>.<Service>/<Method>`) and
    /// returns the response message (unframed), or throws. The whole call, connecting included, takes at most
    /// `timeoutNanoseconds`.
    func call(path: String, message: [UInt8], timeoutNanoseconds: Int64) throws(GRPCError) -> [UInt8]
}

/// What the response headers and trailers of a gRPC call say.
public struct GRPCResponseHead: Sendable, Equatable {
    /// From the status line (`HTTP/2 200`).
    public var httpStatus: Int?
    public var contentType: String?
    /// The raw `grpc-status` value (last occurrence: trailers come after the headers).
    public var grpcStatusText: String?
    /// `grpc-message`, percent-decoded.
    public var grpcMessage: String?
    public var grpcEncoding: String?

    public init(httpStatus: Int? = nil, contentType: String? = nil, grpcStatusText: String? = nil,
                grpcMessage: String? = nil, grpcEncoding: String? = nil) {
        self.httpStatus = httpStatus
        self.contentType = contentType
        self.grpcStatusText = grpcStatusText
        self.grpcMessage = grpcMessage
        self.grpcEncoding = grpcEncoding
    }

    /// `grpc-status` as a number: nil when absent, UNKNOWN (2) when it is not a decimal number (gRPC's rule).
    public var grpcStatus: Int? {
        guard let t = grpcStatusText else { return nil }
        guard !t.isEmpty, t.utf8.count <= 9, t.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(t) else {
            return GRPCStatusCode.unknown
        }
        return n
    }

    /// Parses what libcurl's header callback delivered: the final response's status line and headers, then (for
    /// HTTP/2) the blank line and the trailers. Lines are CRLF- or LF-separated; names are case-insensitive.
    public static func parse(_ block: String) -> GRPCResponseHead {
        var head = GRPCResponseHead()
        for raw in block.utf8.split(separator: 0x0A, omittingEmptySubsequences: true) {
            var line = raw
            if line.last == 0x0D { line = line.dropLast() }
            if line.isEmpty { continue }
            if line.starts(with: "HTTP/".utf8) {
                // "HTTP/2 200" or "HTTP/1.1 200 OK": a new response starts.
                head = GRPCResponseHead()
                let parts = line.split(separator: 0x20, maxSplits: 2, omittingEmptySubsequences: true)
                if parts.count >= 2 { head.httpStatus = Int(String(decoding: parts[1], as: UTF8.self)) }
                continue
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let name = String(decoding: line[line.startIndex..<colon], as: UTF8.self).lowercased()
            let value = trimmed(line[line.index(after: colon)...])
            switch name {
            case "grpc-status": head.grpcStatusText = value
            case "grpc-message": head.grpcMessage = percentDecode(value)
            case "content-type": head.contentType = value
            case "grpc-encoding": head.grpcEncoding = value
            default: break
            }
        }
        return head
    }

    static func trimmed(_ bytes: Substring.UTF8View.SubSequence) -> String {
        var s = bytes.startIndex
        var e = bytes.endIndex
        while s < e, bytes[s] == 0x20 || bytes[s] == 0x09 { s = bytes.index(after: s) }
        while e > s, bytes[bytes.index(before: e)] == 0x20 || bytes[bytes.index(before: e)] == 0x09 {
            e = bytes.index(before: e)
        }
        return String(decoding: bytes[s..<e], as: UTF8.self)
    }

    /// Decodes gRPC's percent-encoding of `grpc-message` (`%XX` for bytes outside 0x20–0x7E and for `%`; the result
    /// is UTF-8). A `%` not followed by two hex digits is kept as it is, and invalid UTF-8 becomes U+FFFD: a status
    /// message is never thrown away (PROTOCOL-HTTP2.md).
    public static func percentDecode(_ s: String) -> String {
        let u = Array(s.utf8)
        guard u.contains(UInt8(ascii: "%")) else { return s }
        func hexValue(_ b: UInt8) -> UInt8? {
            switch b {
            case 0x30...0x39: return b - 0x30
            case 0x41...0x46: return b - 0x41 + 10
            case 0x61...0x66: return b - 0x61 + 10
            default: return nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(u.count)
        var i = 0
        while i < u.count {
            if u[i] == UInt8(ascii: "%"), i + 2 < u.count, let hi = hexValue(u[i + 1]), let lo = hexValue(u[i + 2]) {
                out.append(hi << 4 | lo)
                i += 3
            } else {
                out.append(u[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

/// The pure parts of a unary call: framing, the `grpc-timeout` header, and turning a completed HTTP exchange into
/// the response message or a `GRPCError`.
public enum GRPCWire {
    /// Largest response message accepted by default (Multus' limit).
    public static let defaultMaxMessageBytes = 16 << 20

    /// The 5-byte prefix (not compressed, big-endian length) followed by the message.
    public static func frame(_ message: [UInt8]) -> [UInt8] {
        let n = UInt32(truncatingIfNeeded: message.count)
        var out: [UInt8] = [0, UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
        out.append(contentsOf: message)
        return out
    }

    /// `grpc-timeout` for a timeout: milliseconds (`2500m`, rounded up) while they fit in 8 digits, else seconds.
    public static func timeoutHeaderValue(nanoseconds: Int64) -> String {
        let ns = max(1, nanoseconds)
        let msValue = ns / 1_000_000 + (ns % 1_000_000 == 0 ? 0 : 1)
        if msValue <= 99_999_999 { return "\(msValue)m" }
        let s = ns / 1_000_000_000 + (ns % 1_000_000_000 == 0 ? 0 : 1)
        return "\(min(s, 99_999_999))S"
    }

    /// Interprets a completed exchange (libcurl returned CURLE_OK).
    ///
    /// - HTTP status other than 200: the gRPC code grpc's HTTP mapping gives (404 → UNIMPLEMENTED, 429/502/503/504 →
    ///   UNAVAILABLE, 401 → UNAUTHENTICATED, 403 → PERMISSION_DENIED, 400 → INTERNAL, else UNKNOWN), unless the
    ///   answer carries a `grpc-status`, which wins.
    /// - No `grpc-status` in headers or trailers: `invalidResponse`.
    /// - `grpc-status` ≠ 0: `status(code)` with the decoded `grpc-message` (the body is ignored).
    /// - `grpc-status` 0: the body must be exactly one uncompressed length-prefixed message of at most
    ///   `maxMessageBytes`; its message is returned.
    public static func response(
        httpStatus: Int, head: GRPCResponseHead, body: [UInt8], maxMessageBytes: Int = defaultMaxMessageBytes
    ) throws(GRPCError) -> [UInt8] {
        if httpStatus != 200 && head.grpcStatusText == nil {
            let code: Int
            switch httpStatus {
            case 400: code = GRPCStatusCode.internal
            case 401: code = GRPCStatusCode.unauthenticated
            case 403: code = GRPCStatusCode.permissionDenied
            case 404: code = GRPCStatusCode.unimplemented
            case 429, 502, 503, 504: code = GRPCStatusCode.unavailable
            default: code = GRPCStatusCode.unknown
            }
            throw GRPCError(.status(code), "HTTP status \(httpStatus) without a gRPC status")
        }
        guard let status = head.grpcStatus else {
            throw GRPCError(.invalidResponse, "the server's answer has no grpc-status (HTTP \(httpStatus))")
        }
        if status != GRPCStatusCode.ok {
            var message = head.grpcMessage ?? ""
            if head.grpcStatusText.map({ Int($0) == nil }) == true {
                message = "unparsable grpc-status \"\(head.grpcStatusText ?? "")\"" + (message.isEmpty ? "" : ": \(message)")
            }
            throw GRPCError(.status(status), message)
        }
        guard body.count >= 5 else {
            throw GRPCError(.invalidResponse, "gRPC status OK but the body has \(body.count) bytes, not one message")
        }
        if body[0] != 0 {
            throw GRPCError(.invalidResponse, "the response message is compressed (flag \(body[0])), which was not negotiated")
        }
        let n = UInt32(body[1]) << 24 | UInt32(body[2]) << 16 | UInt32(body[3]) << 8 | UInt32(body[4])
        if UInt64(n) > UInt64(max(0, maxMessageBytes)) {
            throw GRPCError(.invalidResponse, "response message of \(n) bytes exceeds the limit of \(maxMessageBytes)")
        }
        guard Int(n) == body.count - 5 else {
            throw GRPCError(.invalidResponse, "response prefix declares \(n) bytes but \(body.count - 5) follow")
        }
        return Array(body[5...])
    }

    /// The method path must be `/<service>/<method>`: printable ASCII without spaces.
    static func isValidMethodPath(_ path: String) -> Bool {
        guard path.utf8.first == UInt8(ascii: "/"), path.utf8.count > 1 else { return false }
        return path.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }
}

/// `GRPCUnaryTransport` over libcurl: HTTP/2 with prior knowledge on a unix socket. One easy handle serves every
/// call of the transport, each call on a new connection (see `configure`). libcurl is loaded on the first call
/// that finds the socket file; with the socket absent nothing is loaded. Not thread-safe.
public final class CurlGRPCTransport: GRPCUnaryTransport {
    /// `sun_path` holds 108 bytes including the terminating NUL.
    public static let maxSocketPathBytes = 107

    public let socketPath: String
    /// `:authority` of the requests (ignored by the kubelet and containerd).
    public var authority = "localhost"
    public var userAgent = "plexus"
    /// Largest response message accepted.
    public var maxMessageBytes = GRPCWire.defaultMaxMessageBytes
    /// Limit for establishing the connection (further cut to the call's timeout).
    public var connectTimeoutNanoseconds: Int64 = 1_000_000_000
    /// Whether to send `grpc-timeout` (the server then gives up too; grpcio answers DEADLINE_EXCEEDED).
    public var sendsTimeoutHeader = true

    private var handle: OpaquePointer?

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    deinit {
        if let handle { px_curl_free(handle) }
    }

    public func call(path: String, message: [UInt8], timeoutNanoseconds: Int64) throws(GRPCError) -> [UInt8] {
        guard GRPCWire.isValidMethodPath(path) else { throw GRPCError(.setup, "invalid gRPC method path \(path.debugDescription)") }
        guard FileSystem.isCSafe(socketPath), !socketPath.isEmpty else {
            throw GRPCError(.setup, "invalid socket path \(socketPath.debugDescription)")
        }
        guard socketPath.utf8.count <= Self.maxSocketPathBytes else {
            throw GRPCError(.setup, "socket path \(socketPath) is longer than \(Self.maxSocketPathBytes) bytes")
        }
        guard timeoutNanoseconds > 0 else { throw GRPCError(.timeout, "no time left for \(path)") }
        guard FileSystem.exists(socketPath) else {
            throw GRPCError(.socketAbsent, "socket \(socketPath) does not exist")
        }

        // libcurl 7.88.1 sometimes fails a call with CURLE_HTTP2_STREAM (92) and no response at all when the server
        // answers before reading the request body and resets the stream (grpc-core does for UNIMPLEMENTED): the
        // call is a read, so it is repeated on a fresh connection, twice at most, within the same timeout.
        let started = Clock.monotonicNanoseconds()
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try callOnce(path: path, message: message, timeoutNanoseconds: timeoutNanoseconds - (Clock.monotonicNanoseconds() - started))
            } catch where error.curlCode == 92 && attempt < 3 && Clock.monotonicNanoseconds() - started < timeoutNanoseconds {
                continue
            }
        }
    }

    private func callOnce(path: String, message: [UInt8], timeoutNanoseconds: Int64) throws(GRPCError) -> [UInt8] {
        guard timeoutNanoseconds > 0 else { throw GRPCError(.timeout, "no time left for \(path)") }
        let h = try prepareHandle()
        px_curl_reset(h)
        px_curl_set_max_body(h, 5 + max(0, maxMessageBytes))
        try configure(h, path: path, message: message, timeoutNanoseconds: timeoutNanoseconds)
        let rc = px_curl_perform(h)
        if rc != 0 {
            if px_curl_body_overflowed(h) != 0 {
                throw GRPCError(.invalidResponse, "response larger than \(maxMessageBytes) bytes", curlCode: Int(rc))
            }
            // A server may answer before it read the request (Trailers-Only, e.g. UNIMPLEMENTED from a kubelet
            // without Get) and reset the rest of the stream; libcurl 7.88.1 then fails the transfer with an HTTP/2
            // error although the status arrived. A non-OK grpc-status that was received is the answer.
            if [16, 55, 56, 92].contains(rc), let received = Self.head(h).grpcStatus, received != 0 {
                let head = Self.head(h)
                throw GRPCError(.status(received), head.grpcMessage ?? "", curlCode: Int(rc))
            }
            throw failure(code: rc, detail: String(cString: px_curl_error_detail(h)), path: path)
        }
        var status = 0
        _ = px_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
        var bodyLen = 0
        var body: [UInt8] = []
        if let p = px_curl_body(h, &bodyLen), bodyLen > 0 {
            body = Array(UnsafeBufferPointer(start: p, count: bodyLen))
        }
        return try GRPCWire.response(httpStatus: status, head: Self.head(h), body: body,
                                     maxMessageBytes: maxMessageBytes)
    }

    /// The response headers (and trailers) received by the last transfer.
    private static func head(_ h: OpaquePointer) -> GRPCResponseHead {
        var hdrLen = 0
        var block = ""
        if let p = px_curl_headers(h, &hdrLen), hdrLen > 0 {
            block = p.withMemoryRebound(to: UInt8.self, capacity: hdrLen) {
                String(decoding: UnsafeBufferPointer(start: $0, count: hdrLen), as: UTF8.self)
            }
        }
        return GRPCResponseHead.parse(block)
    }

    private func prepareHandle() throws(GRPCError) -> OpaquePointer {
        if let handle { return handle }
        do {
            try CurlTransport.loadLibrary()
        } catch {
            throw GRPCError(.setup, error.message)
        }
        guard let h = px_curl_new() else { throw GRPCError(.setup, "curl_easy_init failed") }
        handle = h
        return h
    }

    private func check(_ rc: Int32, _ what: String) throws(GRPCError) {
        guard rc != 0 else { return }
        var text = String(cString: px_curl_strerror(rc))
        if what == "HTTP_VERSION" { text = "libcurl \(CurlTransport.libraryVersion ?? "") lacks HTTP/2 support: \(text)" }
        throw GRPCError(.setup, "libcurl rejected option \(what): \(text)", curlCode: Int(rc))
    }

    private func configure(_ h: OpaquePointer, path: String, message: [UInt8], timeoutNanoseconds: Int64) throws(GRPCError) {
        try check(px_curl_setopt_string(h, CURLOPT_URL, "http://\(authority)\(path)"), "URL")
        try check(px_curl_setopt_string(h, CURLOPT_PROTOCOLS_STR, "http"), "PROTOCOLS_STR")
        try check(px_curl_setopt_string(h, CURLOPT_UNIX_SOCKET_PATH, socketPath), "UNIX_SOCKET_PATH")
        try check(px_curl_setopt_long(h, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_2_PRIOR_KNOWLEDGE)), "HTTP_VERSION")
        // A new connection per call: libcurl before 8.0.0 (Debian 12: 7.88.1) fails the second request on a reused
        // prior-knowledge HTTP/2 connection with CURLE_HTTP2 "Error in the HTTP2 framing layer" (curl #10634,
        // fixed by #10643). Connecting to a unix socket costs well under a millisecond.
        try check(px_curl_setopt_long(h, CURLOPT_FRESH_CONNECT, 1), "FRESH_CONNECT")
        try check(px_curl_setopt_long(h, CURLOPT_FORBID_REUSE, 1), "FORBID_REUSE")
        try check(px_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, Self.ms(timeoutNanoseconds)), "TIMEOUT_MS")
        try check(px_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS,
                                      Self.ms(min(connectTimeoutNanoseconds, timeoutNanoseconds))), "CONNECTTIMEOUT_MS")
        try check(px_curl_setopt_string(h, CURLOPT_USERAGENT, userAgent), "USERAGENT")
        let framed = GRPCWire.frame(message)
        try check(framed.withUnsafeBytes { px_curl_set_body(h, $0.baseAddress, $0.count) }, "POSTFIELDS")
        try check(px_curl_append_header(h, "Content-Type: application/grpc"), "HTTPHEADER")
        // Required by grpc-core servers (grpcio), which reset the stream without it (§2.2).
        try check(px_curl_append_header(h, "TE: trailers"), "HTTPHEADER")
        if sendsTimeoutHeader {
            try check(px_curl_append_header(h, "grpc-timeout: \(GRPCWire.timeoutHeaderValue(nanoseconds: timeoutNanoseconds))"),
                      "HTTPHEADER")
        }
        try check(px_curl_append_header(h, "Accept:"), "HTTPHEADER")
        try check(px_curl_append_header(h, "Expect:"), "HTTPHEADER")
    }

    private static func ms(_ ns: Int64) -> Int {
        let rounded = ns / 1_000_000 + (ns % 1_000_000 == 0 ? 0 : 1)
        return Int(max(1, min(rounded, Int64(Int32.max))))
    }

    private func failure(code: Int32, detail: String, path: String) -> GRPCError {
        let text = String(cString: px_curl_strerror(code))
        let message = "\(path) on \(socketPath): " + (detail.isEmpty ? text : "\(text): \(detail)")
        switch code {
        case 7:  // CURLE_COULDNT_CONNECT: the file vanished since the check, or nobody listens (a stale socket)
            if !FileSystem.exists(socketPath) {
                return GRPCError(.socketAbsent, "socket \(socketPath) does not exist", curlCode: Int(code))
            }
            return GRPCError(.connection, message, curlCode: Int(code))
        case 28:  // CURLE_OPERATION_TIMEDOUT
            return GRPCError(.timeout, message, curlCode: Int(code))
        case 1, 2, 3, 4, 27, 43, 48:
            // UNSUPPORTED_PROTOCOL, FAILED_INIT, URL_MALFORMAT, NOT_BUILT_IN, OUT_OF_MEMORY, BAD_FUNCTION_ARGUMENT,
            // UNKNOWN_OPTION
            return GRPCError(.setup, message, curlCode: Int(code))
        default:
            // GOT_NOTHING, SEND_ERROR, RECV_ERROR, HTTP2 (16), HTTP2_STREAM (92: a reset stream), PARTIAL_FILE, ...
            return GRPCError(.connection, message, curlCode: Int(code))
        }
    }
}
