internal import CCurlShim

/// HTTPS to the API server through libcurl, which is dlopen()ed on the first request (never at start-up).
///
/// One easy handle serves every request of the invocation, so the TLS connection is kept alive and reused. The
/// server is verified against the configured CA only (`CAINFO`/`CAINFO_BLOB` with `CAPATH` unset: loading the
/// system bundle costs ~26 ms); with no CA configured, libcurl's default trust store is used. TCP_NODELAY and
/// NOSIGNAL are set; each request gets its own connect and total timeout. Not thread-safe.
public final class CurlTransport: StreamingHTTPTransport {
    public let config: KubeConfig
    public var userAgent: String
    /// Largest response body accepted.
    public var maxResponseBytes: Int = 32 << 20
    /// New connections libcurl opened so far (1 for any number of requests when keep-alive works).
    public private(set) var connectionsOpened = 0
    /// Duration of the last transfer as measured by libcurl, in seconds.
    public private(set) var lastTransferSeconds: Double = 0

    private var handle: OpaquePointer?

    /// Creates the transport without loading libcurl.
    public init(config: KubeConfig, userAgent: String = "plexus") {
        self.config = config
        self.userAgent = userAgent
    }

    deinit {
        if let handle { px_curl_free(handle) }
    }

    /// Loads libcurl now (idempotent). The first `send` does this implicitly.
    public static func loadLibrary() throws(TransportError) {
        var err = [CChar](repeating: 0, count: 512)
        if px_curl_load(&err, err.count) != 0 {
            let msg = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw TransportError(.setup, msg)
        }
    }

    /// Whether libcurl has been loaded in this process (diagnostics: paths that never call the API keep this false).
    public static var isLibraryLoaded: Bool { px_curl_is_loaded() != 0 }

    /// The loaded libcurl's version, or nil when it is not loaded.
    public static var libraryVersion: String? {
        guard let v = px_curl_version() else { return nil }
        return String(cString: v)
    }

    public func send(_ request: HTTPRequest) throws(TransportError) -> HTTPResponse {
        let h = try prepareHandle()
        px_curl_reset(h)
        px_curl_set_max_body(h, maxResponseBytes)
        try configure(h, request)
        let rc = px_curl_perform(h)

        var connects = 0
        if px_curl_getinfo_long(h, CURLINFO_NUM_CONNECTS, &connects) == 0 { connectionsOpened += connects }
        var total = 0.0
        if px_curl_getinfo_double(h, CURLINFO_TOTAL_TIME, &total) == 0 { lastTransferSeconds = total }

        if rc != 0 {
            if px_curl_body_overflowed(h) != 0 {
                throw TransportError(.invalidResponse, "response body larger than \(maxResponseBytes) bytes",
                                     code: Int(rc))
            }
            throw Self.error(code: rc, detail: String(cString: px_curl_error_detail(h)))
        }
        var status = 0
        _ = px_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)

        var bodyLen = 0
        var body: [UInt8] = []
        if let p = px_curl_body(h, &bodyLen), bodyLen > 0 {
            body = Array(UnsafeBufferPointer(start: p, count: bodyLen))
        }
        return HTTPResponse(status: status, headers: Self.responseHeaders(h), body: body)
    }

    /// Sends `request` and hands each piece of a 2xx response body to `onData` as it arrives (a watch). `onData`
    /// returning false ends the transfer early; that is not an error. A non-2xx response is returned with its
    /// body (at most 1 MiB) and `onData` is never called.
    public func stream(_ request: HTTPRequest, onData: @escaping ([UInt8]) -> Bool) throws(TransportError) -> HTTPResponse {
        let h = try prepareHandle()
        px_curl_reset(h)
        try configure(h, request)
        let box = StreamBox(handle: h, onData: onData)
        let ctx = Unmanaged.passUnretained(box).toOpaque()
        px_curl_set_stream(h, { data, len, raw in
            guard let raw else { return 1 }
            let box = Unmanaged<StreamBox>.fromOpaque(raw).takeUnretainedValue()
            let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: len)) } ?? []
            return box.deliver(bytes) ? 0 : 1
        }, ctx)
        let rc = withExtendedLifetime(box) { px_curl_perform(h) }
        var connects = 0
        if px_curl_getinfo_long(h, CURLINFO_NUM_CONNECTS, &connects) == 0 { connectionsOpened += connects }
        if rc != 0 && !(rc == 23 && box.stoppedByCaller) {  // 23: CURLE_WRITE_ERROR, i.e. onData said stop
            throw Self.error(code: rc, detail: String(cString: px_curl_error_detail(h)))
        }
        var status = 0
        _ = px_curl_getinfo_long(h, CURLINFO_RESPONSE_CODE, &status)
        return HTTPResponse(status: status, headers: Self.responseHeaders(h), body: box.errorBody)
    }

    /// The headers of interest of the last response on `h`.
    private static func responseHeaders(_ h: OpaquePointer) -> [String: String] {
        var hdrLen = 0
        guard let p = px_curl_headers(h, &hdrLen), hdrLen > 0 else { return [:] }
        let block = p.withMemoryRebound(to: UInt8.self, capacity: hdrLen) {
            String(decoding: UnsafeBufferPointer(start: $0, count: hdrLen), as: UTF8.self)
        }
        return HTTPResponse.parseHeaders(block)
    }

    private final class StreamBox {
        let handle: OpaquePointer
        let onData: ([UInt8]) -> Bool
        var status = 0
        var errorBody: [UInt8] = []
        var stoppedByCaller = false
        init(handle: OpaquePointer, onData: @escaping ([UInt8]) -> Bool) {
            self.handle = handle
            self.onData = onData
        }

        func deliver(_ bytes: [UInt8]) -> Bool {
            if status == 0 {
                var s = 0
                _ = px_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &s)
                status = s
            }
            if !(200..<300).contains(status) {
                if errorBody.count + bytes.count > 1 << 20 { return false }
                errorBody += bytes
                return true
            }
            if onData(bytes) { return true }
            stoppedByCaller = true
            return false
        }
    }

    private func prepareHandle() throws(TransportError) -> OpaquePointer {
        if let handle { return handle }
        try Self.loadLibrary()
        guard let h = px_curl_new() else { throw TransportError(.setup, "curl_easy_init failed") }
        handle = h
        return h
    }

    private func check(_ rc: Int32, _ what: String) throws(TransportError) {
        if rc != 0 {
            throw TransportError(.setup, "libcurl rejected option \(what): \(String(cString: px_curl_strerror(rc)))",
                                 code: Int(rc))
        }
    }

    private func configure(_ h: OpaquePointer, _ r: HTTPRequest) throws(TransportError) {
        try check(px_curl_setopt_string(h, CURLOPT_URL, config.server + r.path), "URL")
        try check(px_curl_setopt_string(h, CURLOPT_PROTOCOLS_STR, "https,http"), "PROTOCOLS_STR")
        try check(px_curl_setopt_long(h, CURLOPT_TCP_NODELAY, 1), "TCP_NODELAY")
        try check(px_curl_setopt_long(h, CURLOPT_HTTP_VERSION, Int(CURL_HTTP_VERSION_1_1)), "HTTP_VERSION")
        try check(px_curl_setopt_long(h, CURLOPT_CONNECTTIMEOUT_MS, Self.ms(r.connectTimeoutNanoseconds)),
                  "CONNECTTIMEOUT_MS")
        try check(px_curl_setopt_long(h, CURLOPT_TIMEOUT_MS, Self.ms(r.timeoutNanoseconds)), "TIMEOUT_MS")
        try check(px_curl_setopt_string(h, CURLOPT_USERAGENT, userAgent), "USERAGENT")

        // TLS: trust exactly the configured CA.
        if config.insecureSkipTLSVerify {
            try check(px_curl_setopt_long(h, CURLOPT_SSL_VERIFYPEER, 0), "SSL_VERIFYPEER")
            try check(px_curl_setopt_long(h, CURLOPT_SSL_VERIFYHOST, 0), "SSL_VERIFYHOST")
            try check(px_curl_setopt_string(h, CURLOPT_CAINFO, nil), "CAINFO")
            try check(px_curl_setopt_string(h, CURLOPT_CAPATH, nil), "CAPATH")
        } else {
            try check(px_curl_setopt_long(h, CURLOPT_SSL_VERIFYPEER, 1), "SSL_VERIFYPEER")
            try check(px_curl_setopt_long(h, CURLOPT_SSL_VERIFYHOST, 2), "SSL_VERIFYHOST")
            switch config.certificateAuthority {
            case .file(let path):
                try check(px_curl_setopt_string(h, CURLOPT_CAINFO, path), "CAINFO")
                try check(px_curl_setopt_string(h, CURLOPT_CAPATH, nil), "CAPATH")
            case .data(let pem):
                try check(px_curl_setopt_string(h, CURLOPT_CAINFO, nil), "CAINFO")
                try check(px_curl_setopt_string(h, CURLOPT_CAPATH, nil), "CAPATH")
                try check(pem.withUnsafeBytes { px_curl_setopt_blob(h, CURLOPT_CAINFO_BLOB, $0.baseAddress, $0.count) },
                          "CAINFO_BLOB")
            case .none:
                break  // libcurl's default trust store (what client-go does without a CA)
            }
        }
        switch config.clientCertificate {
        case .file(let path):
            try check(px_curl_setopt_string(h, CURLOPT_SSLCERT, path), "SSLCERT")
            try check(px_curl_setopt_string(h, CURLOPT_SSLCERTTYPE, "PEM"), "SSLCERTTYPE")
        case .data(let pem):
            try check(pem.withUnsafeBytes { px_curl_setopt_blob(h, CURLOPT_SSLCERT_BLOB, $0.baseAddress, $0.count) },
                      "SSLCERT_BLOB")
            try check(px_curl_setopt_string(h, CURLOPT_SSLCERTTYPE, "PEM"), "SSLCERTTYPE")
        case .none:
            break
        }
        switch config.clientKey {
        case .file(let path):
            try check(px_curl_setopt_string(h, CURLOPT_SSLKEY, path), "SSLKEY")
            try check(px_curl_setopt_string(h, CURLOPT_SSLKEYTYPE, "PEM"), "SSLKEYTYPE")
        case .data(let pem):
            try check(pem.withUnsafeBytes { px_curl_setopt_blob(h, CURLOPT_SSLKEY_BLOB, $0.baseAddress, $0.count) },
                      "SSLKEY_BLOB")
            try check(px_curl_setopt_string(h, CURLOPT_SSLKEYTYPE, "PEM"), "SSLKEYTYPE")
        case .none:
            break
        }

        // Method and body.
        switch (r.method, r.body) {
        case ("GET", nil):
            try check(px_curl_setopt_long(h, CURLOPT_HTTPGET, 1), "HTTPGET")
        case ("HEAD", nil):
            try check(px_curl_setopt_long(h, CURLOPT_NOBODY, 1), "NOBODY")
        case (_, let body):
            if let body {
                try check(body.withUnsafeBytes { px_curl_set_body(h, $0.baseAddress, $0.count) }, "POSTFIELDS")
            }
            if r.method != "POST" || body == nil {
                try check(px_curl_setopt_string(h, CURLOPT_CUSTOMREQUEST, r.method), "CUSTOMREQUEST")
            }
        }

        for header in r.headers {
            guard Self.isSafeHeader(header) else {
                throw TransportError(.setup, "invalid request header \(header.name)")
            }
            try check(px_curl_append_header(h, "\(header.name): \(header.value)"), "HTTPHEADER")
        }
        if r.body != nil {
            // No "Expect: 100-continue" round trip (libcurl adds it for larger bodies).
            try check(px_curl_append_header(h, "Expect:"), "HTTPHEADER")
        }
    }

    private static func ms(_ ns: Int64) -> Int {
        Int(max(1, min(ns / 1_000_000, Int64(Int32.max))))
    }

    /// Header names are tokens; values must not contain CR/LF (no header injection).
    static func isSafeHeader(_ h: HTTPHeader) -> Bool {
        guard !h.name.isEmpty else { return false }
        for b in h.name.utf8 where b <= 0x20 || b >= 0x7F || b == UInt8(ascii: ":") { return false }
        for b in h.value.utf8 where b == 0x0D || b == 0x0A || b == 0 { return false }
        return true
    }

    static func error(code: Int32, detail: String) -> TransportError {
        let text = String(cString: px_curl_strerror(code))
        let message = detail.isEmpty ? text : "\(text): \(detail)"
        let kind: TransportError.Kind
        switch code {
        case 28:  // CURLE_OPERATION_TIMEDOUT
            kind = .timeout
        case 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91, 98:
            // PEER_FAILED_VERIFICATION, SSL_ENGINE_*, SSL_CERTPROBLEM, SSL_CIPHER, USE_SSL_FAILED, SSL_CACERT_BADFILE,
            // SSL_SHUTDOWN_FAILED, SSL_CRL_BADFILE, SSL_ISSUER_ERROR, SSL_PINNEDPUBKEYNOTMATCH,
            // SSL_INVALIDCERTSTATUS, SSL_CLIENTCERT
            kind = .tls
        case 1, 2, 3, 4, 27, 43, 48:
            // UNSUPPORTED_PROTOCOL, FAILED_INIT, URL_MALFORMAT, NOT_BUILT_IN, OUT_OF_MEMORY, BAD_FUNCTION_ARGUMENT,
            // UNKNOWN_OPTION
            kind = .setup
        default:
            // COULDNT_RESOLVE_HOST, COULDNT_CONNECT, GOT_NOTHING, SEND_ERROR, RECV_ERROR, PARTIAL_FILE,
            // SSL_CONNECT_ERROR (a reset during the handshake), WEIRD_SERVER_REPLY, HTTP2, ...
            kind = .connection
        }
        return TransportError(kind, message, code: Int(code))
    }
}
