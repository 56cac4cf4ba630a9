#if canImport(Glibc)
import Glibc
#endif
import CNISpec
import SystemKit

/// The Kubernetes API calls a CNI ADD needs. Results are the objects as lossless `JSON`.
public protocol KubeAPI {
    /// `GET /api/v1/namespaces/{ns}/pods/{name}`.
    func getPod(namespace: String, name: String) throws(KubeError) -> JSON
    /// The pod an ADD plans for. Only its metadata (uid, annotations), `spec.nodeName` and the claim statuses are
    /// read, so a watch cache may answer with a trimmed copy; it must not answer with a pod whose uid differs from
    /// `expectedUID` (the runtime's `K8S_POD_UID`). Defaults to `getPod`.
    func getPodForAttachment(namespace: String, name: String, expectedUID: String?) throws(KubeError) -> JSON
    /// `GET /apis/k8s.cni.cncf.io/v1/namespaces/{ns}/network-attachment-definitions/{name}`.
    func getNetworkAttachmentDefinition(namespace: String, name: String) throws(KubeError) -> JSON
    /// JSON merge patch `{"metadata":{"annotations":{...}}}` on the pod's `status` subresource (a nil value deletes
    /// the annotation). Returns the updated pod. Needs `patch` on `pods/status` in RBAC.
    func patchPodAnnotations(namespace: String, name: String, annotations: [String: String?]) throws(KubeError) -> JSON
    /// `PUT /api/v1/namespaces/{ns}/pods/{name}/status` with the whole pod (its `metadata.resourceVersion` makes
    /// a concurrent change a 409 conflict). The fallback for roles that grant `update` but not `patch` on
    /// `pods/status` (Multus' ClusterRole).
    func replacePodStatus(namespace: String, name: String, pod: JSON) throws(KubeError) -> JSON
    /// `GET /apis/resource.k8s.io/v1/namespaces/{ns}/resourceclaims/{name}` (needs `get` on resourceclaims).
    func getResourceClaim(namespace: String, name: String) throws(KubeError) -> JSON
    /// `GET /apis/resource.k8s.io/v1/resourceslices?fieldSelector=spec.driver=…[,spec.nodeName=…]`: the driver's
    /// slices of one node (all nodes when `nodeName` is nil). Needs `list` on resourceslices.
    func listResourceSlices(driver: String, nodeName: String?) throws(KubeError) -> JSON
    /// Server-side apply of `body` (a ResourceClaim with only the fields `fieldManager` owns) on the claim's `status`
    /// subresource, without `force`: fields other managers own are never taken over (a conflict is a 409). Needs
    /// `patch` on resourceclaims/status.
    func applyResourceClaimStatus(namespace: String, name: String, body: JSON, fieldManager: String) throws(KubeError) -> JSON
    /// Moves the overall deadline (absolute monotonic nanoseconds): each phase of an ADD gets its own budget.
    func setDeadline(_ deadline: Int64)
    /// `POST /api/v1/namespaces/{ns}/events` about a pod (e.g. `AddedInterface`). Best effort: one attempt.
    func createEvent(namespace: String, involvedPod: PodReference, reason: String, message: String,
                     type: EventType) throws(KubeError) -> JSON
    /// HTTP requests sent so far (every attempt counts; libcurl may additionally resend once, transparently, when
    /// a kept-alive connection turns out to be dead).
    var requestCount: Int { get }
}

extension KubeAPI {
    public func getPodForAttachment(namespace: String, name: String, expectedUID: String?) throws(KubeError) -> JSON {
        try getPod(namespace: namespace, name: name)
    }
}

/// The pod an event is about.
public struct PodReference: Sendable, Equatable {
    public var name: String
    public var uid: String?
    public init(name: String, uid: String? = nil) {
        self.name = name
        self.uid = uid
    }
}

public enum EventType: String, Sendable {
    case normal = "Normal"
    case warning = "Warning"
}

/// `KubeAPI` over any `HTTPTransport`, with bearer-token authentication, retries (`RetryPolicy`) and an overall
/// deadline. One instance per invocation; not thread-safe.
public final class KubeHTTPClient: KubeAPI {
    public let config: KubeConfig
    public let transport: any HTTPTransport
    public var retryPolicy: RetryPolicy
    /// Absolute monotonic deadline (nanoseconds, `Clock.monotonicNanoseconds()` base) for all calls: no attempt
    /// or backoff wait extends past it.
    public var deadline: Int64
    /// Event `source.component` / `reportingComponent`, and `source.host` (the node name) when known.
    public var eventComponent: String = "plexus"
    public var eventHost: String?
    public var logger: Logger?
    public private(set) var requestCount = 0

    private let clock: any KubeClock
    private var jitter: JitterSource
    private var cachedToken: String?
    private var tokenLoaded = false
    private var tokenLoadedAt: Int64 = 0
    /// Re-read `tokenFile` when the token read last is older than this (client-go's file token source re-reads
    /// every minute, so a long-lived process follows the kubelet's rotation of projected tokens). nil: read once,
    /// and again only after a 401 (a CNI invocation lives for milliseconds).
    public var tokenMaxAgeNanoseconds: Int64?

    public init(
        config: KubeConfig, transport: any HTTPTransport, deadline: Int64, retryPolicy: RetryPolicy = .default,
        clock: any KubeClock = SystemKubeClock(), jitterSeed: UInt64? = nil, logger: Logger? = nil
    ) {
        self.config = config
        self.transport = transport
        self.deadline = deadline
        self.retryPolicy = retryPolicy
        self.clock = clock
        self.jitter = JitterSource(seed: jitterSeed ?? UInt64(bitPattern: clock.now()) ^ UInt64(getpid()))
        self.logger = logger
    }

    /// A client over `CurlTransport` (libcurl is loaded on the first request, not here).
    public convenience init(
        config: KubeConfig, deadline: Int64, retryPolicy: RetryPolicy = .default, userAgent: String = "plexus",
        logger: Logger? = nil
    ) {
        self.init(config: config, transport: CurlTransport(config: config, userAgent: userAgent), deadline: deadline,
                  retryPolicy: retryPolicy, logger: logger)
    }

    // MARK: KubeAPI

    public func getPod(namespace: String, name: String) throws(KubeError) -> JSON {
        let op = "get pod \(namespace)/\(name)"
        let path = try KubePaths.pod(namespace: namespace, name: name, operation: op)
        return try request(op, method: "GET", path: path, expectKind: "Pod")
    }

    public func getNetworkAttachmentDefinition(namespace: String, name: String) throws(KubeError) -> JSON {
        let op = "get network-attachment-definition \(namespace)/\(name)"
        let path = try KubePaths.networkAttachmentDefinition(namespace: namespace, name: name, operation: op)
        return try request(op, method: "GET", path: path, expectKind: "NetworkAttachmentDefinition")
    }

    public func patchPodAnnotations(
        namespace: String, name: String, annotations: [String: String?]
    ) throws(KubeError) -> JSON {
        let op = "patch pod status \(namespace)/\(name)"
        let path = try KubePaths.pod(namespace: namespace, name: name, operation: op) + "/status"
        let body = Self.annotationMergePatch(annotations)
        return try request(op, method: "PATCH", path: path, body: body.serializedBytes(),
                           contentType: "application/merge-patch+json", expectKind: "Pod")
    }

    public func replacePodStatus(namespace: String, name: String, pod: JSON) throws(KubeError) -> JSON {
        let op = "update pod status \(namespace)/\(name)"
        let path = try KubePaths.pod(namespace: namespace, name: name, operation: op) + "/status"
        return try request(op, method: "PUT", path: path, body: pod.serializedBytes(),
                           contentType: "application/json", expectKind: "Pod")
    }

    public func getResourceClaim(namespace: String, name: String) throws(KubeError) -> JSON {
        let op = "get resourceclaim \(namespace)/\(name)"
        let path = try KubePaths.resourceClaim(namespace: namespace, name: name, operation: op)
        return try request(op, method: "GET", path: path, expectKind: "ResourceClaim")
    }

    public func listResourceSlices(driver: String, nodeName: String?) throws(KubeError) -> JSON {
        let op = "list resourceslices of driver \(driver)"
        let path = try KubePaths.resourceSlices(driver: driver, nodeName: nodeName, operation: op)
        return try request(op, method: "GET", path: path, expectKind: "ResourceSliceList")
    }

    public func applyResourceClaimStatus(namespace: String, name: String, body: JSON, fieldManager: String) throws(KubeError) -> JSON {
        let op = "apply resourceclaim status \(namespace)/\(name)"
        let path = try KubePaths.resourceClaim(namespace: namespace, name: name, operation: op)
            + "/status?fieldManager=" + KubePaths.escape(fieldManager)
        // JSON is YAML: the apply body needs no YAML encoder.
        return try request(op, method: "PATCH", path: path, body: body.serializedBytes(),
                           contentType: "application/apply-patch+yaml", expectKind: "ResourceClaim")
    }

    public func setDeadline(_ deadline: Int64) { self.deadline = deadline }

    public func createEvent(
        namespace: String, involvedPod: PodReference, reason: String, message: String, type: EventType
    ) throws(KubeError) -> JSON {
        let op = "create event \(reason) for pod \(namespace)/\(involvedPod.name)"
        let path = try KubePaths.events(namespace: namespace, podName: involvedPod.name, operation: op)
        let body = makeEvent(namespace: namespace, pod: involvedPod, reason: reason, message: message, type: type)
        return try request(op, method: "POST", path: path, body: body.serializedBytes(),
                           contentType: "application/json", expectKind: "Event", policy: .singleAttempt)
    }

    // MARK: Bodies

    /// `{"metadata":{"annotations":{k: v|null, ...}}}`, keys sorted for a deterministic body.
    public static func annotationMergePatch(_ annotations: [String: String?]) -> JSON {
        var ann = JSONObject()
        for (key, value) in annotations.sorted(by: { $0.key < $1.key }) {
            ann[key] = value.map { .string($0) } ?? .null
        }
        return .object(JSONObject([("metadata", .object(JSONObject([("annotations", .object(ann))])))]))
    }

    func makeEvent(namespace: String, pod: PodReference, reason: String, message: String, type: EventType) -> JSON {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        let nanos = UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
        // client-go names events "<object>.<hex nanoseconds>"; keep the name within 253 characters.
        let suffix = "." + String(nanos, radix: 16)
        let name = String(pod.name.prefix(253 - suffix.count)) + suffix
        let stamp = String(Clock.timestamp().prefix(19)) + "Z"  // RFC 3339, whole seconds (metav1.Time)

        var involved = JSONObject([
            ("apiVersion", .string("v1")), ("kind", .string("Pod")),
            ("namespace", .string(namespace)), ("name", .string(pod.name)),
        ])
        if let uid = pod.uid, !uid.isEmpty { involved["uid"] = .string(uid) }
        var source = JSONObject([("component", .string(eventComponent))])
        if let eventHost, !eventHost.isEmpty { source["host"] = .string(eventHost) }
        var event = JSONObject([
            ("apiVersion", .string("v1")), ("kind", .string("Event")),
            ("metadata", .object(JSONObject([("name", .string(name)), ("namespace", .string(namespace))]))),
            ("involvedObject", .object(involved)),
            ("reason", .string(reason)),
            ("message", .string(Self.truncateUTF8(message, maxBytes: 1024))),
            ("type", .string(type.rawValue)),
            ("source", .object(source)),
            ("firstTimestamp", .string(stamp)), ("lastTimestamp", .string(stamp)),
            ("count", .int(1)),
            ("reportingComponent", .string(eventComponent)),
        ])
        if let eventHost, !eventHost.isEmpty { event["reportingInstance"] = .string(eventHost) }
        return .object(event)
    }

    static func truncateUTF8(_ s: String, maxBytes: Int) -> String {
        if s.utf8.count <= maxBytes { return s }
        var out = ""
        var n = 0
        for c in s.unicodeScalars {
            let len = String(c).utf8.count
            if n + len > maxBytes { break }
            out.unicodeScalars.append(c)
            n += len
        }
        return out
    }

    // MARK: Request loop

    /// Sends one API request with retries and returns the decoded 2xx body.
    func request(
        _ op: String, method: String, path: String, body: [UInt8]? = nil, contentType: String? = nil,
        expectKind: String?, policy: RetryPolicy? = nil
    ) throws(KubeError) -> JSON {
        let policy = policy ?? retryPolicy
        var attempts = 0
        var refreshedToken = false

        while true {
            let now = clock.now()
            let remaining = deadline - now
            if remaining < max(policy.minimumAttemptNanoseconds, 1) {
                throw KubeError(.timeout, operation: op, detail: "deadline reached before the request was sent",
                                attempts: attempts)
            }
            var headers = [HTTPHeader("Accept", "application/json")]
            if let contentType { headers.append(HTTPHeader("Content-Type", contentType)) }
            if let token = try bearerToken(op) { headers.append(HTTPHeader("Authorization", "Bearer " + token)) }
            let attemptTimeout = min(policy.attemptTimeoutNanoseconds, remaining)
            let req = HTTPRequest(method: method, path: path, headers: headers, body: body,
                                  connectTimeoutNanoseconds: min(policy.connectTimeoutNanoseconds, attemptTimeout),
                                  timeoutNanoseconds: attemptTimeout)
            attempts += 1
            requestCount += 1

            let response: HTTPResponse
            do throws(TransportError) {
                response = try transport.send(req)
            } catch {
                let kubeError = mapTransportError(error, op: op, attempts: attempts)
                logger?.debug("kube request failed", [("op", op), ("attempt", String(attempts)),
                                                       ("error", error.message)])
                let retryable = error.kind == .connection || error.kind == .timeout
                if retryable && attempts < policy.maxAttempts,
                   waitBeforeRetry(policy.backoffNanoseconds(afterAttempt: attempts, random: jitter.next()), policy) {
                    continue
                }
                throw kubeError
            }
            logger?.debug("kube request", [("op", op), ("status", String(response.status)),
                                           ("attempt", String(attempts))])

            if (200..<300).contains(response.status) {
                return try decode(response, op: op, expectKind: expectKind, attempts: attempts)
            }
            if response.status == 401 && !refreshedToken && config.tokenFile != nil {
                // The token file may have been rotated since we read it: re-read once and retry at once.
                refreshedToken = true
                let old = cachedToken
                tokenLoaded = false
                if try bearerToken(op) != old { continue }
            }
            let error = KubeError.fromResponse(response, operation: op, attempts: attempts)
            if policy.retryableStatuses.contains(response.status) && attempts < policy.maxAttempts {
                let delay = policy.delayNanoseconds(afterAttempt: attempts, response: response, random: jitter.next())
                if waitBeforeRetry(delay, policy) { continue }
            }
            throw error
        }
    }

    /// Sleeps `delay` if that leaves time for another attempt before the deadline; returns false (without
    /// sleeping) otherwise.
    private func waitBeforeRetry(_ delay: Int64, _ policy: RetryPolicy) -> Bool {
        let now = clock.now()
        let (wake, overflow) = now.addingReportingOverflow(max(0, delay))
        if overflow || wake > deadline - max(policy.minimumAttemptNanoseconds, 1) { return false }
        clock.sleep(nanoseconds: delay)
        return true
    }

    private func mapTransportError(_ e: TransportError, op: String, attempts: Int) -> KubeError {
        let kind: KubeError.Kind
        switch e.kind {
        case .connection: kind = .unreachable
        case .timeout: kind = .timeout
        case .tls: kind = .tls
        case .invalidResponse: kind = .invalidResponse
        case .setup: kind = .config
        }
        return KubeError(kind, operation: op, detail: "\(config.server): \(e.message)", attempts: attempts)
    }

    private func decode(_ r: HTTPResponse, op: String, expectKind: String?, attempts: Int) throws(KubeError) -> JSON {
        let json: JSON
        do {
            json = try JSON.parse(r.body)
        } catch {
            throw KubeError(.invalidResponse, operation: op, httpCode: r.status,
                            detail: "body is not JSON (\(error)): \(KubeStatus.excerpt(r.body))", attempts: attempts)
        }
        guard let obj = json.objectValue else {
            throw KubeError(.invalidResponse, operation: op, httpCode: r.status,
                            detail: "body is a JSON \(json.typeName), not an object", attempts: attempts)
        }
        if let expectKind, let kind = obj["kind"]?.stringValue, kind != expectKind {
            throw KubeError(.invalidResponse, operation: op, httpCode: r.status,
                            detail: "expected kind \(expectKind), got \(kind)", attempts: attempts)
        }
        return json
    }

    func countRequest() { requestCount += 1 }

    /// Makes the next request read the token file again.
    func invalidateToken() { tokenLoaded = false }

    /// The bearer token: `tokenFile` (read once per client, again after a 401 or once `tokenMaxAgeNanoseconds`
    /// passed), falling back to `token`.
    func bearerToken(_ op: String) throws(KubeError) -> String? {
        if tokenLoaded, let maxAge = tokenMaxAgeNanoseconds, config.tokenFile != nil, clock.now() - tokenLoadedAt > maxAge {
            tokenLoaded = false
        }
        if tokenLoaded { return cachedToken }
        tokenLoadedAt = clock.now()
        if let file = config.tokenFile {
            do {
                let text = try FileSystem.readString(file).trimmingSpaces
                if !text.isEmpty {
                    cachedToken = text
                    tokenLoaded = true
                    return text
                }
                if config.token == nil {
                    throw KubeError(.config, operation: op, detail: "token file \(file) is empty")
                }
            } catch let e as KubeError {
                throw e
            } catch {
                if config.token == nil {
                    throw KubeError(.config, operation: op, detail: "cannot read token file: \(error)")
                }
            }
        }
        cachedToken = config.token
        tokenLoaded = true
        return cachedToken
    }
}

/// API paths, built only from validated names (DNS-1123) and percent-escaped segments, so nothing like `../`
/// or `?` can reach the URL.
public enum KubePaths {
    public static func pod(namespace: String, name: String, operation: String) throws(KubeError) -> String {
        try checkNamespace(namespace, operation)
        try checkName(name, "pod", operation)
        return "/api/v1/namespaces/\(escape(namespace))/pods/\(escape(name))"
    }

    public static func networkAttachmentDefinition(
        namespace: String, name: String, operation: String
    ) throws(KubeError) -> String {
        try checkNamespace(namespace, operation)
        try checkName(name, "network-attachment-definition", operation)
        return "/apis/k8s.cni.cncf.io/v1/namespaces/\(escape(namespace))/network-attachment-definitions/\(escape(name))"
    }

    public static func resourceClaim(namespace: String, name: String, operation: String) throws(KubeError) -> String {
        try checkNamespace(namespace, operation)
        try checkName(name, "resourceclaim", operation)
        return "/apis/resource.k8s.io/v1/namespaces/\(escape(namespace))/resourceclaims/\(escape(name))"
    }

    /// Driver names are DNS-1123 subdomains and node names too, so the selector values need no further escaping
    /// beyond percent-encoding.
    public static func resourceSlices(driver: String, nodeName: String?, operation: String) throws(KubeError) -> String {
        try checkName(driver, "DRA driver", operation)
        var selector = "spec.driver=" + driver
        if let nodeName {
            try checkName(nodeName, "node", operation)
            selector += ",spec.nodeName=" + nodeName
        }
        return "/apis/resource.k8s.io/v1/resourceslices?fieldSelector=" + escape(selector)
    }

    public static func events(namespace: String, podName: String, operation: String) throws(KubeError) -> String {
        try checkNamespace(namespace, operation)
        try checkName(podName, "pod", operation)
        return "/api/v1/namespaces/\(escape(namespace))/events"
    }

    static func checkNamespace(_ ns: String, _ op: String) throws(KubeError) {
        if !KubernetesNames.isDNS1123Label(ns) {
            throw KubeError(.invalidArgument, operation: op,
                            detail: "namespace \(quoted(ns)) is not a valid DNS-1123 label")
        }
    }

    static func checkName(_ name: String, _ what: String, _ op: String) throws(KubeError) {
        if !KubernetesNames.isDNS1123Subdomain(name) {
            throw KubeError(.invalidArgument, operation: op,
                            detail: "\(what) name \(quoted(name)) is not a valid DNS-1123 subdomain")
        }
    }

    /// Percent-escapes everything but RFC 3986 unreserved characters.
    public static func escape(_ segment: String) -> String {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        for c in segment.utf8 {
            switch c {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                 UInt8(ascii: "~"):
                out.append(c)
            default:
                out += [UInt8(ascii: "%"), hex[Int(c >> 4)], hex[Int(c & 15)]]
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func quoted(_ s: String) -> String {
        "\"" + String(s.unicodeScalars.prefix(80).map { $0.isASCII && $0.value >= 0x20 ? Character($0) : "?" }) + "\""
    }
}
