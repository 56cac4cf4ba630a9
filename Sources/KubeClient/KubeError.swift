import CNISpec

/// A failed Kubernetes API call or client set-up: what kind of failure, the HTTP code if the server answered, the
/// server's `metav1.Status` message and reason when the body was a Status, and which operation failed.
///
/// Descriptions never contain credentials (tokens, keys): only the operation, the server URL, status texts and
/// transport error texts.
public struct KubeError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable, Hashable {
        /// 401: missing, wrong or expired credentials.
        case unauthorized
        /// 403: authenticated but not allowed (RBAC).
        case forbidden
        /// 404: the object (or its namespace, or the API group) does not exist.
        case notFound
        /// 409: AlreadyExists or a resourceVersion conflict.
        case conflict
        /// 429: the server asked us to slow down (retried while the deadline allows).
        case tooManyRequests
        /// 5xx other than those retried to exhaustion; also 502/503/504 after the last attempt.
        case server(Int)
        /// Another 4xx the server rejected the request with (400, 405, 410, 415, 422, ...).
        case rejected(Int)
        /// The server could not be reached: DNS, connection refused/reset, TLS handshake failure, ...
        case unreachable
        /// The server's TLS certificate failed verification against the configured CA (or a client certificate
        /// was refused). Never retried.
        case tls
        /// The request (or the whole retry budget) ran out of time.
        case timeout
        /// The server answered something that is not what the API promises (not JSON, wrong kind, truncated).
        case invalidResponse
        /// The client configuration is unusable (kubeconfig, in-cluster files, libcurl missing).
        case config
        /// A caller-supplied argument (namespace, name) is invalid; nothing was sent.
        case invalidArgument

        var label: String {
            switch self {
            case .unauthorized: return "unauthorized"
            case .forbidden: return "forbidden"
            case .notFound: return "not found"
            case .conflict: return "conflict"
            case .tooManyRequests: return "too many requests"
            case .server(let c): return "server error \(c)"
            case .rejected(let c): return "rejected \(c)"
            case .unreachable: return "unreachable"
            case .tls: return "TLS verification failed"
            case .timeout: return "timeout"
            case .invalidResponse: return "invalid response"
            case .config: return "configuration error"
            case .invalidArgument: return "invalid argument"
            }
        }
    }

    public var kind: Kind
    /// The operation, e.g. `get pod ns1/p1`, `patch pod status ns1/p1`, `load kubeconfig /etc/kube.conf`.
    public var operation: String
    /// HTTP status code when the server answered, else nil.
    public var httpCode: Int?
    /// `metav1.Status.message` when the response body was a Status.
    public var statusMessage: String?
    /// `metav1.Status.reason` (`NotFound`, `Conflict`, `TooManyRequests`, ...) when the body was a Status.
    public var statusReason: String?
    /// Transport or configuration detail (libcurl error text, missing key, ...). Never contains credentials.
    public var detail: String?
    /// HTTP requests sent for this operation (1 when not retried; 0 when nothing was sent).
    public var attempts: Int

    public init(
        _ kind: Kind, operation: String, httpCode: Int? = nil, statusMessage: String? = nil,
        statusReason: String? = nil, detail: String? = nil, attempts: Int = 0
    ) {
        self.kind = kind
        self.operation = operation
        self.httpCode = httpCode
        self.statusMessage = statusMessage
        self.statusReason = statusReason
        self.detail = detail
        self.attempts = attempts
    }

    /// True for failures worth retrying later (by a caller with a fresh deadline): server overload, 5xx,
    /// unreachable, timeouts.
    public var isTransient: Bool {
        switch kind {
        case .tooManyRequests, .server, .unreachable, .timeout: return true
        default: return false
        }
    }

    public var description: String {
        var s = operation + ": "
        if let httpCode {
            s += "HTTP \(httpCode)"
            if let statusReason, !statusReason.isEmpty { s += " \(statusReason)" }
            if let statusMessage, !statusMessage.isEmpty { s += ": \(statusMessage)" }
            if statusReason == nil && statusMessage == nil { s += " (\(kind.label))" }
            if let detail, !detail.isEmpty { s += " (\(detail))" }
        } else {
            s += kind.label
            if let detail, !detail.isEmpty { s += ": \(detail)" }
        }
        if attempts > 1 { s += " [after \(attempts) attempts]" }
        return s
    }

    /// Maps an HTTP status code to a kind.
    public static func kind(forHTTPStatus code: Int) -> Kind {
        switch code {
        case 401: return .unauthorized
        case 403: return .forbidden
        case 404: return .notFound
        case 409: return .conflict
        case 429: return .tooManyRequests
        case 500...599: return .server(code)
        default: return .rejected(code)
        }
    }

    /// Builds the error for a non-2xx response, decoding a `metav1.Status` body when there is one.
    static func fromResponse(_ response: HTTPResponse, operation: String, attempts: Int) -> KubeError {
        var e = KubeError(kind(forHTTPStatus: response.status), operation: operation, httpCode: response.status,
                          attempts: attempts)
        if let status = KubeStatus(body: response.body) {
            e.statusMessage = status.message
            e.statusReason = status.reason
        } else if !response.body.isEmpty {
            // Not a Status (a proxy's HTML page, plain text): keep a short, printable excerpt.
            e.detail = KubeStatus.excerpt(response.body)
        }
        return e
    }
}

/// The fields of a `metav1.Status` error body that clients rely on (k8s-test-apiserver.md §3.9).
public struct KubeStatus: Sendable, Equatable {
    public var status: String?
    public var message: String?
    public var reason: String?
    public var code: Int?
    /// `details.retryAfterSeconds` (sent with 429 and some 5xx).
    public var retryAfterSeconds: Int?

    /// Decodes `body` when it is a JSON object with `"kind":"Status"`, else nil.
    public init?(body: [UInt8]) {
        guard !body.isEmpty, let json = try? JSON.parse(body), let obj = json.objectValue,
              obj["kind"]?.stringValue == "Status" else { return nil }
        status = obj["status"]?.stringValue
        message = obj["message"]?.stringValue
        reason = obj["reason"]?.stringValue
        code = obj["code"]?.intValue
        retryAfterSeconds = obj["details"]?["retryAfterSeconds"]?.intValue
    }

    static func excerpt(_ body: [UInt8]) -> String {
        var out = ""
        for b in body.prefix(160) {
            if b >= 0x20 && b < 0x7F { out.unicodeScalars.append(Unicode.Scalar(b)) } else { out += " " }
        }
        if body.count > 160 { out += "..." }
        return out
    }
}
