import SystemKit

/// One unary gRPC call to the kubelet's PodResources socket. Implemented outside this module (KubeClient's
/// `CurlGRPCTransport` through a small adapter in the caller) and by test fakes; this module stays free of C.
public protocol PodResourcesTransport: AnyObject {
    /// Sends `message` (a protobuf message, unframed) to `path` (`/v1.PodResourcesLister/Get`) and returns the
    /// response message (unframed). The transport does the gRPC framing and enforces `timeoutNanoseconds`.
    func unaryCall(path: String, message: [UInt8], timeoutNanoseconds: Int64) throws(PodResourcesCallError) -> [UInt8]
}

/// A failed unary call, as the transport reports it.
public struct PodResourcesCallError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The server answered with this non-zero `grpc-status`.
        case status(Int)
        /// The socket file does not exist (the only case that allows the checkpoint fallback, §3.4).
        case socketAbsent
        /// Connecting failed or the connection broke (a stale socket, a reset stream).
        case connection
        /// The call's timeout expired.
        case timeout
        /// The answer was not a usable gRPC response (HTTP status, missing grpc-status, bad framing).
        case invalidResponse
        /// The transport cannot work at all (libcurl missing or without HTTP/2, bad socket path).
        case setup
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var statusCode: Int? { if case .status(let c) = kind { return c } else { return nil } }

    public var description: String {
        switch kind {
        case .status(let c): return message.isEmpty ? "gRPC status \(c)" : "gRPC status \(c): \(message)"
        default: return message
        }
    }
}

/// The monotonic clock and sleep the client uses (injectable so tests run without real waits).
public protocol PodResourcesClock {
    /// Monotonic nanoseconds (the base of the deadlines passed to the client).
    func now() -> Int64
    func sleep(nanoseconds: Int64)
}

/// The real clock: `SystemKit.Clock`.
public struct SystemPodResourcesClock: PodResourcesClock, Sendable {
    public init() {}
    public func now() -> Int64 { Clock.monotonicNanoseconds() }
    public func sleep(nanoseconds: Int64) {
        guard nanoseconds > 0 else { return }
        let ms = nanoseconds / 1_000_000 + (nanoseconds % 1_000_000 == 0 ? 0 : 1)
        Clock.sleep(milliseconds: Int(min(ms, Int64(Int32.max))))
    }
}

/// How long calls and waits may take.
public struct PodResourcesPolicy: Sendable, Equatable {
    /// Timeout of one call (cut to the time left before the deadline).
    public var callTimeoutNanoseconds: Int64
    /// Wait before retry n is `min(maxDelay, baseDelay * 2^(n-1))`, reduced by up to `jitter` (0...1) of itself.
    public var baseDelayNanoseconds: Int64
    public var maxDelayNanoseconds: Int64
    public var jitter: Double
    /// A call is only started when at least this much time is left.
    public var minimumCallNanoseconds: Int64

    public init(
        callTimeoutNanoseconds: Int64 = 5_000_000_000,
        baseDelayNanoseconds: Int64 = 100_000_000,
        maxDelayNanoseconds: Int64 = 1_000_000_000,
        jitter: Double = 0.5,
        minimumCallNanoseconds: Int64 = 10_000_000
    ) {
        self.callTimeoutNanoseconds = max(1_000_000, callTimeoutNanoseconds)
        self.baseDelayNanoseconds = max(0, baseDelayNanoseconds)
        self.maxDelayNanoseconds = max(0, maxDelayNanoseconds)
        self.jitter = min(1, max(0, jitter))
        self.minimumCallNanoseconds = max(0, minimumCallNanoseconds)
    }

    /// 5 s per call; 100 ms backoff doubling up to 1 s, 50 % jitter.
    public static let `default` = PodResourcesPolicy()

    /// The wait after failed attempt `attempt` (1-based); `random` in [0, 1).
    public func delayNanoseconds(afterAttempt attempt: Int, random: Double) -> Int64 {
        let shift = min(max(attempt - 1, 0), 30)
        let (scaled, overflow) = baseDelayNanoseconds.multipliedReportingOverflow(by: Int64(1) << shift)
        let d = overflow ? maxDelayNanoseconds : min(maxDelayNanoseconds, scaled)
        return d - Int64(Double(d) * jitter * min(max(random, 0), 1))
    }
}

/// Why the devices of a pod could not be obtained.
public struct PodResourcesError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// The kubelet socket does not exist: the caller may fall back to the checkpoint.
        case socketAbsent
        /// A call failed in a way retrying does not fix (connection, timeout, gRPC status, setup).
        case call(PodResourcesCallError.Kind)
        /// The kubelet answered bytes that do not decode.
        case invalidResponse
        /// The deadline passed while the kubelet did not know the pod.
        case podNotFound
        /// The deadline passed while the pod had no device of these resources (sorted).
        case noDevices([String])
        /// The deadline passed while the kubelet kept rejecting calls by its rate limit (status 8).
        case rateLimited
    }

    public var kind: Kind
    public var namespace: String
    public var name: String
    public var detail: String
    /// Calls made.
    public var attempts: Int

    public init(_ kind: Kind, namespace: String, name: String, detail: String = "", attempts: Int) {
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.detail = detail
        self.attempts = attempts
    }

    /// Worth retrying later with a fresh deadline (the kubelet may catch up).
    public var isTransient: Bool {
        switch kind {
        case .podNotFound, .noDevices, .rateLimited, .call(.timeout), .call(.connection): return true
        case .call(.status(let c)): return c == 14 || c == 8 || c == 4
        default: return false
        }
    }

    public var description: String {
        var s = "kubelet PodResources for pod \(namespace)/\(name): "
        switch kind {
        case .socketAbsent: s += "socket absent"
        case .call: s += "call failed"
        case .invalidResponse: s += "invalid response"
        case .podNotFound: s += "pod not known to the kubelet"
        case .noDevices(let r):
            s += "no device of " + r.map { "\"\($0)\"" }.joined(separator: ", ") + " allocated to the pod"
        case .rateLimited: s += "rate limited"
        }
        if !detail.isEmpty { s += ": \(detail)" }
        if attempts > 1 { s += " [after \(attempts) calls]" }
        return s
    }
}

/// Reads a pod's device-plugin devices from the kubelet (device-plugins.md §1, §4.4).
///
/// - `Get` (one pod, small) first; on status 12 UNIMPLEMENTED (kubelet < 1.27), or status 2 with
///   `PodResources API Get method disabled` (feature gate off, the default before 1.34), it switches to `List`
///   filtered by namespace and name, and stays there for the client's lifetime.
/// - Retried with backoff until the deadline: the pod is not there yet (`Get` status 5 NOT_FOUND, or status 2
///   `pod <name> in namespace <ns> not found`, an empty `Get` answer, absent from `List`), it has no device of a
///   wanted resource, or the kubelet's rate limit rejected the call (status 8).
/// - Not retried: a missing socket (`socketAbsent`, so the caller can read the checkpoint), connection failures
///   (a stale socket fails fast), timeouts, other gRPC statuses, undecodable answers.
///
/// Not thread-safe: one client per invocation.
public final class PodResourcesClient {
    public let transport: any PodResourcesTransport
    public var policy: PodResourcesPolicy
    public let clock: any PodResourcesClock
    /// Paths of the calls made so far, in order (diagnostics, tests).
    public private(set) var callPaths: [String] = []
    /// Whether `Get` turned out to be unavailable and `List` is used instead.
    public private(set) var usesList = false

    private var jitterState: UInt64

    public init(
        transport: any PodResourcesTransport, policy: PodResourcesPolicy = .default,
        clock: any PodResourcesClock = SystemPodResourcesClock(), jitterSeed: UInt64? = nil
    ) {
        self.transport = transport
        self.policy = policy
        self.clock = clock
        self.jitterState = jitterSeed ?? UInt64(bitPattern: clock.now())
    }

    private enum Observation {
        case podNotFound(String)
        case noDevices([String])
        case rateLimited(String)
    }

    /// The devices allocated to pod `namespace/name`, waiting (until `deadline`, monotonic nanoseconds of `clock`)
    /// until the pod has at least one device of every resource in `wanting`. With `wanting` empty, any answer that
    /// contains the pod is accepted.
    public func podDevices(
        namespace: String, name: String, wanting: Set<String>, deadline: Int64
    ) throws(PodResourcesError) -> PodDevices {
        var attempts = 0
        var last: Observation?
        while true {
            let remaining = deadline - clock.now()
            if remaining <= 0 || remaining < policy.minimumCallNanoseconds {
                throw finalError(last, namespace: namespace, name: name, attempts: attempts)
            }
            let timeout = min(policy.callTimeoutNanoseconds, remaining)
            attempts += 1

            let pods: [PodResources]?
            do {
                pods = try fetch(namespace: namespace, name: name, timeout: timeout)
            } catch {
                switch error {
                case .switchToList:
                    continue  // List follows at once, without a wait
                case .retry(let o):
                    last = o
                    pods = nil
                case .fatal(let err):
                    var err = err
                    err.attempts = attempts
                    throw err
                }
            }

            if let pods {
                let devices = PodDevices(podResources: pods)
                let missing = wanting.filter { devices.deviceIDs(for: $0).isEmpty }.sorted(by: PodDevices.bytewise)
                if missing.isEmpty { return devices }
                last = .noDevices(missing)
            }

            let delay = policy.delayNanoseconds(afterAttempt: attempts, random: nextRandom())
            let left = deadline - clock.now()
            if left - delay < policy.minimumCallNanoseconds {
                throw finalError(last, namespace: namespace, name: name, attempts: attempts)
            }
            clock.sleep(nanoseconds: delay)
        }
    }

    private enum FetchFailure: Error {
        case switchToList
        case retry(Observation)
        case fatal(PodResourcesError)
    }

    /// One call. Returns the pod's entries (never empty), or throws what to do next.
    private func fetch(namespace: String, name: String, timeout: Int64) throws(FetchFailure) -> [PodResources] {
        func fatal(_ kind: PodResourcesError.Kind, _ detail: String) -> FetchFailure {
            .fatal(PodResourcesError(kind, namespace: namespace, name: name, detail: detail, attempts: 0))
        }
        let path = usesList ? PodResourcesMethod.list : PodResourcesMethod.get
        let message = usesList
            ? ListPodResourcesRequest().encoded()
            : GetPodResourcesRequest(podName: name, podNamespace: namespace).encoded()
        callPaths.append(path)
        let answer: [UInt8]
        do {
            answer = try transport.unaryCall(path: path, message: message, timeoutNanoseconds: timeout)
        } catch {
            switch error.kind {
            case .socketAbsent:
                throw fatal(.socketAbsent, error.message)
            case .status(12) where !usesList:
                usesList = true
                throw .switchToList
            case .status(2) where !usesList && error.message.contains("Get method disabled"):
                usesList = true
                throw .switchToList
            case .status(5) where !usesList:
                throw .retry(.podNotFound(error.description))
            case .status(2) where !usesList && error.message.hasSuffix("not found"):
                throw .retry(.podNotFound(error.description))
            case .status(8):
                throw .retry(.rateLimited(error.description))
            default:
                throw fatal(.call(error.kind), "\(path): \(error.description)")
            }
        }
        if usesList {
            let list: ListPodResourcesResponse
            do {
                list = try ListPodResourcesResponse.decode(answer)
            } catch {
                throw fatal(.invalidResponse, "\(path): \(error.description)")
            }
            let pods = list.pods(namespace: namespace, name: name)
            if pods.isEmpty { throw .retry(.podNotFound("not in the List answer (\(list.podResources.count) pods)")) }
            return pods
        }
        let got: GetPodResourcesResponse
        do {
            got = try GetPodResourcesResponse.decode(answer)
        } catch {
            throw fatal(.invalidResponse, "\(path): \(error.description)")
        }
        guard let pod = got.podResources else { throw .retry(.podNotFound("empty Get answer")) }
        if pod.namespace != namespace || pod.name != name {
            throw fatal(.invalidResponse, "\(path): the answer is for pod \(pod.namespace)/\(pod.name)")
        }
        return [pod]
    }

    private func finalError(_ last: Observation?, namespace: String, name: String, attempts: Int) -> PodResourcesError {
        switch last {
        case .podNotFound(let d)?: return PodResourcesError(.podNotFound, namespace: namespace, name: name, detail: d, attempts: attempts)
        case .noDevices(let r)?: return PodResourcesError(.noDevices(r), namespace: namespace, name: name, attempts: attempts)
        case .rateLimited(let d)?: return PodResourcesError(.rateLimited, namespace: namespace, name: name, detail: d, attempts: attempts)
        case nil:
            return PodResourcesError(.call(.timeout), namespace: namespace, name: name,
                                     detail: "deadline passed before a call could be made", attempts: attempts)
        }
    }

    /// SplitMix64 in [0, 1).
    private func nextRandom() -> Double {
        jitterState &+= 0x9E37_79B9_7F4A_7C15
        var z = jitterState
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Double(z >> 11) / Double(UInt64(1) << 53)
    }
}
