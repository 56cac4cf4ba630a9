/// One HTTP request to the API server. `path` is the path plus query (`/api/v1/namespaces/a/pods/b?x=y`),
/// relative to the server URL of the transport.
public struct HTTPRequest: Sendable, Equatable {
    public var method: String
    public var path: String
    /// Header lines as (name, value), sent in order. The transport adds nothing but what its protocol needs
    /// (Host, Content-Length, User-Agent).
    public var headers: [HTTPHeader]
    public var body: [UInt8]?
    /// Limits for this attempt, in nanoseconds: time to establish the connection (TCP + TLS) and the whole exchange.
    public var connectTimeoutNanoseconds: Int64
    public var timeoutNanoseconds: Int64

    public init(
        method: String, path: String, headers: [HTTPHeader] = [], body: [UInt8]? = nil,
        connectTimeoutNanoseconds: Int64 = 5_000_000_000, timeoutNanoseconds: Int64 = 10_000_000_000
    ) {
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        self.connectTimeoutNanoseconds = connectTimeoutNanoseconds
        self.timeoutNanoseconds = timeoutNanoseconds
    }

    /// The value of the first header with this name (case-insensitive).
    public func header(_ name: String) -> String? {
        let n = name.lowercased()
        return headers.first { $0.name.lowercased() == n }?.value
    }
}

public struct HTTPHeader: Sendable, Equatable {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) { self.name = name; self.value = value }
}

/// The server's answer. `headers` holds only the headers of interest, keyed by lower-case name
/// (`retry-after`, `content-type`, `warning`, `audit-id`).
public struct HTTPResponse: Sendable, Equatable {
    public var status: Int
    public var headers: [String: String]
    public var body: [UInt8]

    public init(status: Int, headers: [String: String] = [:], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public init(status: Int, headers: [String: String] = [:], body: String) {
        self.init(status: status, headers: headers, body: Array(body.utf8))
    }

    /// `Retry-After` as whole seconds (the HTTP-date form is ignored), else nil.
    public var retryAfterSeconds: Int? {
        guard let v = headers["retry-after"] else { return nil }
        let t = v.trimmingSpaces
        guard let n = Int(t), n >= 0 else { return nil }
        return n
    }

    /// Header names `HTTPResponse.headers` keeps.
    public static let headersOfInterest: Set<String> = ["retry-after", "content-type", "warning", "audit-id"]

    /// Parses a raw response header block (status line + `Name: value` lines) into the headers of interest.
    public static func parseHeaders(_ block: String) -> [String: String] {
        var out: [String: String] = [:]
        // Split on LF bytes: in Swift, "\r\n" is a single Character, so a Character split would not work.
        for rawLine in block.utf8.split(separator: 0x0A, omittingEmptySubsequences: true) {
            let line = String(decoding: rawLine, as: UTF8.self)
            guard let colon = line.utf8.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let name = String(line[..<colon]).lowercased()
            guard headersOfInterest.contains(name) else { continue }
            let value = line[line.utf8.index(after: colon)...].trimmingSpaces
            if let old = out[name], name == "warning" { out[name] = old + ", " + value } else { out[name] = value }
        }
        return out
    }
}

/// Why a request got no HTTP response.
public struct TransportError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Could not connect, or the connection broke before a complete response (refused, reset, DNS, truncated).
        /// Retrying may help.
        case connection
        /// The attempt's connect or total timeout expired.
        case timeout
        /// Certificate verification or client-certificate failure. Retrying will not help.
        case tls
        /// The server's answer was unusable (body over the size cap). Not retried.
        case invalidResponse
        /// The transport cannot work at all (libcurl missing, bad option, unreadable CA/cert). Not retried.
        case setup
    }

    public var kind: Kind
    public var message: String
    /// The underlying library code (a CURLcode for `CurlTransport`), 0 when none.
    public var code: Int

    public init(_ kind: Kind, _ message: String, code: Int = 0) {
        self.kind = kind
        self.message = message
        self.code = code
    }

    public var description: String { message }
}

/// Sends HTTP requests to one API server. Implementations: `CurlTransport` (HTTPS via libcurl, one kept-alive
/// connection) and test fakes. Not required to be thread-safe: a CNI invocation is one sequential process.
public protocol HTTPTransport: AnyObject {
    /// Sends one request and returns whatever status the server answered with. Throws only when there is no
    /// complete HTTP response.
    func send(_ request: HTTPRequest) throws(TransportError) -> HTTPResponse
}


/// A transport that can also deliver a response body as it arrives (watches).
public protocol StreamingHTTPTransport: HTTPTransport {
    /// Sends `request`; each piece of a 2xx body goes to `onData` (false stops the transfer, which is not an
    /// error). A non-2xx response comes back whole, with `onData` never called.
    func stream(_ request: HTTPRequest, onData: @escaping ([UInt8]) -> Bool) throws(TransportError) -> HTTPResponse
}
