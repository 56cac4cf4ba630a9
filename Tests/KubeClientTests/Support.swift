import CNISpec
import Glibc
@testable import KubeClient

/// A clock that only moves when told to (sleeps advance it and are recorded).
final class FakeClock: KubeClock, @unchecked Sendable {
    var current: Int64
    private(set) var sleeps: [Int64] = []
    init(start: Int64 = 1_000_000_000_000) { current = start }
    func now() -> Int64 { current }
    func sleep(nanoseconds: Int64) {
        sleeps.append(nanoseconds)
        current += nanoseconds
    }
    func advance(_ ns: Int64) { current += ns }
}

/// A scripted transport: each call pops the next step; records every request and the clock time it was sent at.
final class FakeTransport: HTTPTransport, @unchecked Sendable {
    enum Step {
        case respond(HTTPResponse)
        case fail(TransportError)
        /// The request takes `ns` of (fake) time, then answers.
        case slow(Int64, HTTPResponse)
        /// The request uses its whole timeout, then times out.
        case hang
    }

    var steps: [Step]
    /// Used when `steps` runs out.
    var fallback: Step?
    let clock: FakeClock?
    private(set) var requests: [HTTPRequest] = []
    private(set) var sentAt: [Int64] = []

    init(_ steps: [Step], fallback: Step? = nil, clock: FakeClock? = nil) {
        self.steps = steps
        self.fallback = fallback
        self.clock = clock
    }

    func send(_ request: HTTPRequest) throws(TransportError) -> HTTPResponse {
        requests.append(request)
        sentAt.append(clock?.now() ?? 0)
        let step: Step
        if !steps.isEmpty {
            step = steps.removeFirst()
        } else if let fallback {
            step = fallback
        } else {
            fatalError("FakeTransport: unexpected request \(request.method) \(request.path)")
        }
        switch step {
        case .respond(let r): return r
        case .fail(let e): throw e
        case .slow(let ns, let r):
            clock?.advance(ns)
            return r
        case .hang:
            clock?.advance(request.timeoutNanoseconds)
            throw TransportError(.timeout, "Timeout was reached: Operation timed out", code: 28)
        }
    }
}

enum Fixtures {
    static let pod = #"""
    {"apiVersion":"v1","kind":"Pod","metadata":{"name":"p1","namespace":"ns1","uid":"1234",
     "annotations":{"k8s.v1.cni.cncf.io/networks":"macvlan"}},"spec":{"nodeName":"n1"}}
    """#
    static let nad = #"""
    {"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition",
     "metadata":{"name":"macvlan","namespace":"ns1"},"spec":{"config":"{\"type\":\"macvlan\"}"}}
    """#

    static func status(_ code: Int, _ reason: String, _ message: String, retryAfter: Int? = nil) -> HTTPResponse {
        var obj = JSONObject([
            ("kind", .string("Status")), ("apiVersion", .string("v1")), ("metadata", .object(JSONObject())),
            ("status", .string("Failure")), ("message", .string(message)), ("reason", .string(reason)),
            ("code", .int(code)),
        ])
        if let retryAfter { obj["details"] = .object(JSONObject([("retryAfterSeconds", .int(retryAfter))])) }
        let body = JSON.object(obj).serialized()
        var headers = ["content-type": "application/json"]
        if let retryAfter { headers["retry-after"] = String(retryAfter) }
        return HTTPResponse(status: code, headers: headers, body: body)
    }

    static var podOK: HTTPResponse { HTTPResponse(status: 200, headers: ["content-type": "application/json"], body: pod) }

    static let config = KubeConfig(server: "https://10.0.0.1:6443", certificateAuthority: .data(Array("CA".utf8)),
                                   token: "s3cr3t-token", origin: "test")
}

/// A fresh private temporary directory.
func makeTempDir(_ tag: String = "kube") -> String {
    var template = Array("/tmp/plexus-\(tag)-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(p != nil, "mkdtemp failed")
    return String(cString: p!)
}

func writeFile(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    precondition(fd >= 0, "cannot write \(path)")
    _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

func removeTree(_ path: String) {
    guard path.hasPrefix("/tmp/plexus-") else { return }
    var pid: pid_t = 0
    let args = ["/bin/rm", "-rf", path]
    var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
    defer { for a in argv { free(a) } }
    if posix_spawn(&pid, "/bin/rm", nil, nil, &argv, nil) == 0 {
        var st: Int32 = 0
        waitpid(pid, &st, 0)
    }
}
