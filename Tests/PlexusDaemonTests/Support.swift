import CNISpec
import Glibc
import KubeClient
import SystemKit
import Testing

/// A value behind a lock, shareable with server threads and `@Sendable` callbacks.
final class Locked<T>: @unchecked Sendable {
    private var value: T
    private let sem = CountingSemaphore(1)
    init(_ value: T) { self.value = value }
    func withLock<R>(_ body: (inout T) -> R) -> R {
        sem.wait()
        defer { sem.signal() }
        return body(&value)
    }
    var current: T { withLock { $0 } }
}

/// A clock that only moves when told to (sleeps advance it and are recorded). Starts at the real monotonic time,
/// so that deadlines computed from `SystemKit.Clock` (as `WatchCache.list` does) are in the future.
final class FakeClock: KubeClock, @unchecked Sendable {
    private let state: Locked<(now: Int64, sleeps: [Int64])>
    init(start: Int64 = Clock.monotonicNanoseconds()) { state = Locked((start, [])) }
    func now() -> Int64 { state.withLock { $0.now } }
    func sleep(nanoseconds: Int64) {
        state.withLock {
            $0.sleeps.append(nanoseconds)
            $0.now += nanoseconds
        }
    }
    func advance(_ ns: Int64) { state.withLock { $0.now += ns } }
    var sleeps: [Int64] { state.withLock { $0.sleeps } }
}

/// A scripted streaming transport: each request (plain or streamed) pops the next step, and every request is
/// recorded. `completed` counts requests whose answer has been fully delivered.
final class ScriptedTransport: StreamingHTTPTransport, @unchecked Sendable {
    enum Step {
        /// A whole response (to `send`, or to `stream`: a 2xx body is then delivered as one piece).
        case respond(HTTPResponse)
        /// A 200 whose body arrives in these pieces.
        case stream([String])
        case fail(TransportError)
    }

    private struct State {
        var steps: [Step]
        var requests: [HTTPRequest] = []
        var completed = 0
        /// Per streamed request: how many pieces were handed to `onData`, and whether it asked to stop.
        var delivered: [(pieces: Int, stopped: Bool)] = []
    }
    private let state: Locked<State>

    init(_ steps: [Step]) { state = Locked(State(steps: steps)) }

    var requests: [HTTPRequest] { state.withLock { $0.requests } }
    var paths: [String] { requests.map(\.path) }
    var completed: Int { state.withLock { $0.completed } }
    var delivered: [(pieces: Int, stopped: Bool)] { state.withLock { $0.delivered } }
    var remainingSteps: Int { state.withLock { $0.steps.count } }

    /// The next step; an unexpected request (script exhausted) is a test failure answered with a setup error.
    private func next(_ request: HTTPRequest) throws(TransportError) -> Step {
        let step: Step? = state.withLock { s in
            s.requests.append(request)
            return s.steps.isEmpty ? nil : s.steps.removeFirst()
        }
        guard let step else {
            done()
            Issue.record("ScriptedTransport: unexpected request \(request.method) \(request.path)")
            throw TransportError(.setup, "script exhausted")
        }
        return step
    }

    private func done() { state.withLock { $0.completed += 1 } }

    func send(_ request: HTTPRequest) throws(TransportError) -> HTTPResponse {
        let step = try next(request)
        defer { done() }
        switch step {
        case .respond(let r): return r
        case .fail(let e): throw e
        case .stream:
            Issue.record("ScriptedTransport: a streamed step answered a plain request \(request.path)")
            throw TransportError(.setup, "streamed step for a plain request")
        }
    }

    func stream(_ request: HTTPRequest, onData: @escaping ([UInt8]) -> Bool) throws(TransportError) -> HTTPResponse {
        let step = try next(request)
        defer { done() }
        switch step {
        case .fail(let e): throw e
        case .respond(let r):
            if (200..<300).contains(r.status) {
                let go = r.body.isEmpty || onData(r.body)
                state.withLock { $0.delivered.append((r.body.isEmpty ? 0 : 1, !go)) }
                return HTTPResponse(status: r.status, headers: r.headers)
            }
            return r
        case .stream(let pieces):
            var n = 0
            var stopped = false
            for p in pieces {
                n += 1
                if !onData(Array(p.utf8)) { stopped = true; break }
            }
            state.withLock { $0.delivered.append((n, stopped)) }
            return HTTPResponse(status: 200, headers: ["content-type": "application/json"])
        }
    }
}

/// A transport that cannot stream.
final class PlainTransport: HTTPTransport, @unchecked Sendable {
    func send(_ request: HTTPRequest) throws(TransportError) -> HTTPResponse { HTTPResponse(status: 500) }
}

enum K8s {
    static let config = KubeConfig(server: "https://10.0.0.1:6443", token: "s3cr3t", origin: "test")

    static func client(_ transport: any HTTPTransport, clock: FakeClock = FakeClock(), config: KubeConfig = K8s.config) -> KubeHTTPClient {
        KubeHTTPClient(config: config, transport: transport, deadline: clock.now() + 30_000_000_000, clock: clock, jitterSeed: 7)
    }

    static func json(_ text: String) -> JSON {
        do { return try JSON.parse(text) } catch { fatalError("bad test JSON \(text): \(error)") }
    }

    static func ok(_ body: String) -> HTTPResponse {
        HTTPResponse(status: 200, headers: ["content-type": "application/json"], body: body)
    }

    static func status(_ code: Int, _ reason: String, _ message: String = "") -> HTTPResponse {
        HTTPResponse(status: code, headers: ["content-type": "application/json"],
                     body: #"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"\#(message)","reason":"\#(reason)","code":\#(code)}"#)
    }

    /// A minimal pod object.
    static func pod(_ name: String, ns: String = "ns1", uid: String? = nil, rv: String? = nil) -> String {
        var meta = #""name":"\#(name)","namespace":"\#(ns)""#
        if let uid { meta += #","uid":"\#(uid)""# }
        if let rv { meta += #","resourceVersion":"\#(rv)""# }
        return #"{"apiVersion":"v1","kind":"Pod","metadata":{\#(meta)}}"#
    }

    /// One watch event line (with its newline).
    static func event(_ type: String, _ object: String) -> String { #"{"type":"\#(type)","object":\#(object)}"# + "\n" }

    static func bookmark(_ rv: String) -> String {
        event("BOOKMARK", #"{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"\#(rv)"}}"#)
    }

    static func errorEvent(_ code: Int, _ message: String) -> String {
        event("ERROR", #"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"\#(message)","reason":"Expired","code":\#(code)}"#)
    }

    static func list(rv: String, continueToken: String? = nil, items: [String]) -> HTTPResponse {
        var meta = #""resourceVersion":"\#(rv)""#
        if let continueToken { meta += #","continue":"\#(continueToken)""# }
        return ok(#"{"kind":"List","apiVersion":"v1","metadata":{\#(meta)},"items":[\#(items.joined(separator: ","))]}"#)
    }
}

/// The query items of a request path, in order.
func queryItems(_ path: String) -> [(String, String)] {
    guard let q = path.split(separator: "?", maxSplits: 1).dropFirst().first else { return [] }
    return q.split(separator: "&").map { item in
        let kv = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        return (String(kv[0]), kv.count > 1 ? String(kv[1]) : "")
    }
}

func query(_ path: String, _ name: String) -> String? { queryItems(path).first { $0.0 == name }?.1 }

/// Waits (bounded) until `condition` holds; returns whether it did.
func waitUntil(seconds: Double = 10, _ condition: () -> Bool) -> Bool {
    let deadline = Clock.deadline(afterSeconds: seconds)
    while Clock.monotonicNanoseconds() < deadline {
        if condition() { return true }
        Clock.sleep(milliseconds: 5)
    }
    return condition()
}

/// A fresh private temporary directory. Its mode is set explicitly: `StreamSocket.listen(unixPath:)` switches the
/// process-wide umask to 0177 around `bind`, so a directory made by a test running in parallel at that moment would
/// come out 0600 (not searchable).
func makeTempDir(_ tag: String = "pxd") -> String {
    var template = Array("/tmp/plexus-\(tag)-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(p != nil, "mkdtemp failed")
    let path = String(cString: p!)
    chmod(path, 0o700)
    return path
}

func writeFile(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    precondition(fd >= 0, "cannot write \(path)")
    _ = Array(text.utf8).withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

func pathExists(_ path: String) -> Bool {
    var st = stat()
    return lstat(path, &st) == 0
}

func fileMode(_ path: String) -> UInt32? {
    var st = stat()
    return lstat(path, &st) == 0 ? UInt32(st.st_mode) : nil
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

/// Runs `body` and returns the `KubeError` it threw, if any.
func kubeError<T>(_ body: () throws(KubeError) -> T) -> KubeError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}
