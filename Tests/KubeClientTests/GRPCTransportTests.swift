import Foundation
import SystemKit
import Testing
@testable import KubeClient

private func grpcError(_ body: () throws(GRPCError) -> [UInt8]) -> GRPCError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

private func framed(_ message: [UInt8]) -> [UInt8] { GRPCWire.frame(message) }

@Suite struct GRPCResponseHeadTests {
    /// §2.4: what libcurl's header callback delivers for a normal answer: headers, blank line, trailers.
    @Test func headersThenTrailers() {
        let block = "HTTP/2 200 \r\ncontent-type: application/grpc\r\ngrpc-accept-encoding: identity, deflate, gzip\r\n"
            + "\r\ngrpc-status: 0\r\ngrpc-message: \r\n"
        let h = GRPCResponseHead.parse(block)
        #expect(h.httpStatus == 200)
        #expect(h.contentType == "application/grpc")
        #expect(h.grpcStatusText == "0")
        #expect(h.grpcStatus == 0)
        #expect(h.grpcMessage == "")
        #expect(h.grpcEncoding == nil)
    }

    /// §2.4: Trailers-Only (an immediate error): the status is in the only header block.
    @Test func trailersOnly() {
        let h = GRPCResponseHead.parse("HTTP/2 200 \r\ncontent-type: application/grpc\r\ngrpc-status: 8\r\n"
            + "grpc-message: rejected by rate limit\r\n\r\n")
        #expect(h.grpcStatus == 8)
        #expect(h.grpcMessage == "rejected by rate limit")
    }

    @Test func namesAreCaseInsensitiveAndTheTrailerWins() {
        let h = GRPCResponseHead.parse("HTTP/2 200\nGRPC-Status: 3\nGrpc-Message: early\n\ngrpc-status:\t12 \n"
            + "grpc-message:   unknown method Get  \ngrpc-encoding: gzip\n")
        #expect(h.grpcStatus == 12)
        #expect(h.grpcMessage == "unknown method Get")
        #expect(h.grpcEncoding == "gzip")
    }

    @Test func aNewStatusLineStartsOver() {
        let h = GRPCResponseHead.parse("HTTP/1.1 100 Continue\r\ngrpc-status: 5\r\n\r\nHTTP/2 503\r\nserver: x\r\n\r\n")
        #expect(h.httpStatus == 503)
        #expect(h.grpcStatusText == nil)
        #expect(h.grpcStatus == nil)
    }

    @Test(arguments: [("", nil), ("x", 2), ("-1", 2), ("12a", 2), (" ", 2), ("0012", 12), ("99999999999", 2)] as [(String, Int?)])
    func statusText(text: String, status: Int?) {
        let h = GRPCResponseHead.parse(text.isEmpty ? "HTTP/2 200\r\n" : "HTTP/2 200\r\ngrpc-status: \(text)\r\n")
        // A header with an empty/blank value is present but unparsable.
        #expect(h.grpcStatus == (text.isEmpty ? nil : status))
    }

    @Test(arguments: [
        ("rejected by rate limit", "rejected by rate limit"),
        ("rejected by rate limit 100%25 %E2%80%94 %C3%BC", "rejected by rate limit 100% — ü"),
        ("%e2%80%94 lower-case hex", "— lower-case hex"),
        ("line%0Abreak and %09tab", "line\nbreak and \ttab"),
        ("not %zz hex, short %4, end %", "not %zz hex, short %4, end %"),
        ("bad UTF-8 %FF here", "bad UTF-8 \u{FFFD} here"),
        ("%", "%"),
        ("", ""),
    ])
    func percentDecoding(encoded: String, decoded: String) {
        #expect(GRPCResponseHead.percentDecode(encoded) == decoded)
        #expect(GRPCResponseHead.parse("HTTP/2 200\r\ngrpc-status: 2\r\ngrpc-message: \(encoded)\r\n").grpcMessage
            == decoded.trimmingSpaces)
    }
}

@Suite struct GRPCWireTests {
    private func head(_ status: String?, _ message: String? = nil) -> GRPCResponseHead {
        GRPCResponseHead(httpStatus: 200, contentType: "application/grpc", grpcStatusText: status, grpcMessage: message)
    }

    @Test func framing() {
        #expect(GRPCWire.frame([]) == [0, 0, 0, 0, 0])
        #expect(GRPCWire.frame([0x0a, 0x01, 0x61]) == [0, 0, 0, 0, 3, 0x0a, 0x01, 0x61])
        #expect(Array(GRPCWire.frame([UInt8](repeating: 0, count: 0x01_02_03)).prefix(5)) == [0, 0, 1, 2, 3])
    }

    @Test func okAnswerYieldsTheMessage() throws {
        #expect(try GRPCWire.response(httpStatus: 200, head: head("0"), body: framed([1, 2, 3])) == [1, 2, 3])
        #expect(try GRPCWire.response(httpStatus: 200, head: head("0"), body: framed([])) == [])
    }

    @Test func errorStatusCarriesTheMessageAndIgnoresTheBody() {
        let e = grpcError { () throws(GRPCError) in
            try GRPCWire.response(httpStatus: 200, head: head("12", "unknown method Get for service v1.PodResourcesLister"),
                                  body: [9, 9])
        }
        #expect(e?.kind == .status(12))
        #expect(e?.statusCode == 12)
        #expect(e?.message == "unknown method Get for service v1.PodResourcesLister")
        #expect(e?.description == "gRPC status 12 (UNIMPLEMENTED): unknown method Get for service v1.PodResourcesLister")
        let bare = grpcError { () throws(GRPCError) in try GRPCWire.response(httpStatus: 200, head: head("5"), body: []) }
        #expect(bare?.description == "gRPC status 5 (NOT_FOUND)")
        let odd = grpcError { () throws(GRPCError) in try GRPCWire.response(httpStatus: 200, head: head("x1", "m"), body: []) }
        #expect(odd?.kind == .status(2))
        #expect(odd?.message == #"unparsable grpc-status "x1": m"#)
    }

    static let httpStatuses: [(Int, Int)] = [(400, 13), (401, 16), (403, 7), (404, 12), (429, 14), (502, 14),
                                             (503, 14), (504, 14), (500, 2), (415, 2)]

    @Test(arguments: httpStatuses)
    func httpStatusWithoutGRPCStatusMaps(http: Int, code: Int) {
        let e = grpcError { () throws(GRPCError) in
            try GRPCWire.response(httpStatus: http, head: GRPCResponseHead(httpStatus: http), body: [])
        }
        #expect(e?.kind == .status(code))
        #expect(e?.message == "HTTP status \(http) without a gRPC status")
    }

    @Test func grpcStatusWinsOverTheHTTPStatus() {
        let e = grpcError { () throws(GRPCError) in try GRPCWire.response(httpStatus: 503, head: head("8", "busy"), body: []) }
        #expect(e?.kind == .status(8))
    }

    static let unusable: [(String, Int, GRPCResponseHead, [UInt8], String)] = [
        ("no grpc-status", 200, GRPCResponseHead(httpStatus: 200), [0, 0, 0, 0, 0], "no grpc-status"),
        ("empty body", 200, GRPCResponseHead(httpStatus: 200, grpcStatusText: "0"), [], "not one message"),
        ("short body", 200, GRPCResponseHead(httpStatus: 200, grpcStatusText: "0"), [0, 0], "not one message"),
        ("compressed", 200, GRPCResponseHead(httpStatus: 200, grpcStatusText: "0"), [1, 0, 0, 0, 1, 7], "compressed"),
        ("length short", 200, GRPCResponseHead(httpStatus: 200, grpcStatusText: "0"), [0, 0, 0, 0, 4, 1], "declares 4 bytes but 1"),
        ("length long", 200, GRPCResponseHead(httpStatus: 200, grpcStatusText: "0"), [0, 0, 0, 0, 0, 1], "declares 0 bytes but 1"),
        ("over the cap", 200, GRPCResponseHead(httpStatus: 200, grpcStatusText: "0"), [0, 0x7f, 0, 0, 0], "exceeds the limit"),
    ]

    @Test(arguments: unusable)
    func unusableAnswers(name: String, http: Int, head: GRPCResponseHead, body: [UInt8], fragment: String) {
        let e = grpcError { () throws(GRPCError) in try GRPCWire.response(httpStatus: http, head: head, body: body) }
        #expect(e?.kind == .invalidResponse, "\(name)")
        #expect(e?.statusCode == 13)
        #expect(e?.message.contains(fragment) == true, "\(e?.message ?? "no error")")
    }

    @Test func sizeCapIsConfigurable() throws {
        #expect(try GRPCWire.response(httpStatus: 200, head: head("0"), body: framed([1, 2]), maxMessageBytes: 2) == [1, 2])
        let e = grpcError { () throws(GRPCError) in
            try GRPCWire.response(httpStatus: 200, head: head("0"), body: framed([1, 2, 3]), maxMessageBytes: 2)
        }
        #expect(e?.kind == .invalidResponse)
    }

    @Test(arguments: [
        (Int64(5_000_000_000), "5000m"), (1, "1m"), (2_500_001, "3m"), (1_000_000, "1m"), (0, "1m"),
        (99_999_999_000_000, "99999999m"), (100_000_000_000_000, "100000S"), (Int64.max, "99999999S"),
    ])
    func timeoutHeader(ns: Int64, value: String) {
        #expect(GRPCWire.timeoutHeaderValue(nanoseconds: ns) == value)
    }

    @Test func methodPaths() {
        #expect(GRPCWire.isValidMethodPath("/v1.PodResourcesLister/Get"))
        #expect(!GRPCWire.isValidMethodPath("v1.PodResourcesLister/Get"))
        #expect(!GRPCWire.isValidMethodPath("/"))
        #expect(!GRPCWire.isValidMethodPath("/a b"))
        #expect(!GRPCWire.isValidMethodPath("/a\r\nX-Injected: 1"))
    }

    @Test func errorStatusCodes() {
        #expect(GRPCError(.socketAbsent, "").statusCode == 14)
        #expect(GRPCError(.connection, "").statusCode == 14)
        #expect(GRPCError(.timeout, "").statusCode == 4)
        #expect(GRPCError(.setup, "").statusCode == 2)
        #expect(GRPCStatusCode.name(4) == "DEADLINE_EXCEEDED")
        #expect(GRPCStatusCode.name(17) == "CODE(17)")
        #expect(GRPCError(.connection, "Couldn't connect").description == "Couldn't connect")
    }
}

/// Creates a unix socket file nobody listens on (a kubelet that died without removing its socket).
private func makeStaleSocket(_ path: String) -> Bool {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var addr = sockaddr_un()
    addr.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { return false }
    withUnsafeMutableBytes(of: &addr.sun_path) { raw in
        for (i, b) in bytes.enumerated() { raw[i] = b }
        raw[bytes.count] = 0
    }
    let rc = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    return rc == 0
}

@Suite struct CurlGRPCTransportLocalTests {
    @Test func absentSocketIsDistinguishableAndSendsNothing() {
        let t = CurlGRPCTransport(socketPath: "/nonexistent-plexus-test/kubelet.sock")
        let e = grpcError { () throws(GRPCError) in
            try t.call(path: "/v1.PodResourcesLister/Get", message: [], timeoutNanoseconds: 1_000_000_000)
        }
        #expect(e?.kind == .socketAbsent)
        #expect(e?.statusCode == 14)
        #expect(e?.message == "socket /nonexistent-plexus-test/kubelet.sock does not exist")
    }

    @Test func unusableArgumentsAreSetupErrors() {
        let long = "/tmp/" + String(repeating: "s", count: 120)
        let cases: [(CurlGRPCTransport, String, Int64, GRPCError.Kind)] = [
            (CurlGRPCTransport(socketPath: "/tmp/x.sock"), "no-slash", 1_000_000_000, .setup),
            (CurlGRPCTransport(socketPath: "/tmp/x\u{0}.sock"), "/a/b", 1_000_000_000, .setup),
            (CurlGRPCTransport(socketPath: ""), "/a/b", 1_000_000_000, .setup),
            (CurlGRPCTransport(socketPath: long), "/a/b", 1_000_000_000, .setup),
            (CurlGRPCTransport(socketPath: "/tmp/x.sock"), "/a/b", 0, .timeout),
        ]
        for (t, path, timeout, kind) in cases {
            let e = grpcError { () throws(GRPCError) in try t.call(path: path, message: [], timeoutNanoseconds: timeout) }
            #expect(e?.kind == kind, "\(t.socketPath) \(path)")
        }
    }

    /// A socket file with no listener fails fast as a connection error (no checkpoint fallback, §7.2 case 10).
    @Test func staleSocketIsAConnectionError() throws {
        let dir = makeTempDir("grpc")
        defer { removeTree(dir) }
        let path = dir + "/kubelet.sock"
        try #require(makeStaleSocket(path))
        let t = CurlGRPCTransport(socketPath: path)
        let start = Clock.monotonicNanoseconds()
        let e = grpcError { () throws(GRPCError) in
            try t.call(path: "/v1.PodResourcesLister/List", message: [], timeoutNanoseconds: 5_000_000_000)
        }
        #expect(e?.kind == .connection)
        #expect(e?.curlCode == 7)
        #expect(e?.message.contains(path) == true)
        #expect(Clock.monotonicNanoseconds() - start < 2_000_000_000)
    }
}

// MARK: - Against a real gRPC server (opt-in)

/// A Python `grpcio` server with raw-bytes handlers (device-plugins.md §2.7), one per test process.
private final class LiveGRPCServer: @unchecked Sendable {
    static let enabled = ProcessInfo.processInfo.environment["PLEXUS_GRPC_LIVE"] == "1"

    static let shared: Result<LiveGRPCServer, LiveError> = {
        do { return .success(try LiveGRPCServer()) } catch let e as LiveError { return .failure(e) } catch {
            return .failure(LiveError(message: "\(error)"))
        }
    }()

    struct LiveError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    static let script = #"""
    import os, sys, time, threading, grpc
    from concurrent import futures
    sock, parent = sys.argv[1], int(sys.argv[2])
    calls = {}
    def count(name):
        calls[name] = calls.get(name, 0) + 1
        return calls[name]
    def get(req, ctx):
        count("Get")
        # GetPodResourcesRequest{pod_name="sriov-pod", pod_namespace="default"} -> a pod with one device
        if req != bytes.fromhex("0a09737269 6f762d706f64 1207 64656661756c74".replace(" ", "")):
            ctx.abort(grpc.StatusCode.UNKNOWN, "pod in namespace not found")
        return bytes.fromhex("0a 1f 0a 09 73 72 69 6f 76 2d 70 6f 64 12 07 64 65 66 61 75 6c 74 1a 09 0a 07 73 69 64 65 63 61 72".replace(" ", ""))
    def echo(req, ctx):
        count("Echo")
        return req
    def err(req, ctx):
        count("Err")
        ctx.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "rejected by rate limit 100% \u2014 \u00fc")
    def slow(req, ctx):
        time.sleep(3)
        return b""
    def big(req, ctx):
        return b"x" * (3 << 20)   # flow control across many DATA frames
    def calls_made(req, ctx):
        return ("%d" % calls.get("Echo", 0)).encode()
    h = grpc.method_handlers_generic_handler("test.Live", {
        "Get": grpc.unary_unary_rpc_method_handler(get),
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Err": grpc.unary_unary_rpc_method_handler(err),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
        "Big": grpc.unary_unary_rpc_method_handler(big),
        "Calls": grpc.unary_unary_rpc_method_handler(calls_made),
    })
    if os.path.exists(sock): os.unlink(sock)
    s = grpc.server(futures.ThreadPoolExecutor(8))
    s.add_generic_rpc_handlers((h,))
    s.add_insecure_port("unix://" + sock)
    s.start()
    def watch():
        # Exit with the test process (reparented once it is gone; a zombie parent still answers kill(pid, 0)).
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(0)
    threading.Thread(target=watch, daemon=True).start()
    s.wait_for_termination()
    """#

    /// Removed when the test process exits (the server exits with us).
    nonisolated(unsafe) static var dirToRemove: String?

    let dir: String
    let socketPath: String
    private let process: Process

    private init() throws {
        dir = makeTempDir("grpc-live")
        socketPath = dir + "/kubelet.sock"
        let scriptPath = dir + "/server.py"
        writeFile(scriptPath, Self.script)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", scriptPath, socketPath, String(getpid())]
        let log = dir + "/server.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle(forWritingAtPath: log)
        p.standardError = FileHandle(forWritingAtPath: log)
        try p.run()
        process = p
        LiveGRPCServer.dirToRemove = dir
        atexit { if let d = LiveGRPCServer.dirToRemove { removeTree(d) } }
        let deadline = Clock.monotonicNanoseconds() + 20_000_000_000
        while Clock.monotonicNanoseconds() < deadline {
            if !p.isRunning {
                let text = (try? FileSystem.readString(log)) ?? ""
                throw LiveError(message: "the grpcio server exited (is grpcio installed?):\n\(text.suffix(2000))")
            }
            // The socket file appears at bind, before the server listens and serves: ready once a call answers.
            if FileSystem.exists(socketPath),
               (try? CurlGRPCTransport(socketPath: socketPath).call(path: "/test.Live/Echo", message: [], timeoutNanoseconds: 2_000_000_000)) != nil {
                return
            }
            Clock.sleep(milliseconds: 20)
        }
        p.terminate()
        throw LiveError(message: "the grpcio server did not create \(socketPath)")
    }
}

private func live() throws -> LiveGRPCServer {
    switch LiveGRPCServer.shared {
    case .success(let s): return s
    case .failure(let e): throw e
    }
}

@Suite(.enabled(if: LiveGRPCServer.enabled, "set PLEXUS_GRPC_LIVE=1 to run against a Python grpcio server"), .serialized)
struct CurlGRPCTransportLiveTests {
    private let second: Int64 = 1_000_000_000

    @Test func repeatedCallsOnOneTransport() throws {
        let s = try live()
        let t = CurlGRPCTransport(socketPath: s.socketPath)
        let get = try t.call(path: "/test.Live/Get",
                             message: [0x0a, 0x09] + Array("sriov-pod".utf8) + [0x12, 0x07] + Array("default".utf8),
                             timeoutNanoseconds: 5 * second)
        #expect(get.count == 33)
        #expect(get.prefix(4) == [0x0a, 0x1f, 0x0a, 0x09])
        let t0 = Clock.monotonicNanoseconds()
        for i in 0..<20 {
            let m = [UInt8](repeating: UInt8(i), count: i * 100)
            #expect(try t.call(path: "/test.Live/Echo", message: m, timeoutNanoseconds: 5 * second) == m)
        }
        let perCall = Double(Clock.monotonicNanoseconds() - t0) / 20 / 1e6
        #expect(try t.call(path: "/test.Live/Echo", message: [], timeoutNanoseconds: 5 * second) == [])
        print("CurlGRPCTransport live: \(perCall) ms per warm unary call, libcurl \(CurlTransport.libraryVersion ?? "?")")
    }

    @Test func trailersOnlyErrorWithPercentEncodedMessage() throws {
        let s = try live()
        let t = CurlGRPCTransport(socketPath: s.socketPath)
        let e = grpcError { () throws(GRPCError) in try t.call(path: "/test.Live/Err", message: [], timeoutNanoseconds: 5 * second) }
        #expect(e?.kind == .status(8))
        #expect(e?.message == "rejected by rate limit 100% \u{2014} \u{FC}")
        let wrongPod = grpcError { () throws(GRPCError) in
            try t.call(path: "/test.Live/Get", message: [0x0a, 0x01, 0x78], timeoutNanoseconds: 5 * second)
        }
        #expect(wrongPod?.kind == .status(2))
        #expect(wrongPod?.message == "pod in namespace not found")
    }

    @Test func unknownMethodIsUnimplemented() throws {
        let s = try live()
        let t = CurlGRPCTransport(socketPath: s.socketPath)
        let e = grpcError { () throws(GRPCError) in
            try t.call(path: "/v1.PodResourcesLister/Get", message: [], timeoutNanoseconds: 5 * second)
        }
        // libcurl 7.88.1 may lose a Trailers-Only answer that comes with a stream reset (the server answers before
        // reading the request): then only the reset is reported (curl code 92). Newer libcurl delivers status 12.
        #expect(e?.kind == .status(12) || (e?.kind == .connection && e?.curlCode == 92))
        print("CurlGRPCTransport live: unknown service -> \(e?.description ?? "no error")")
    }

    @Test func slowServerHitsTheTimeout() throws {
        let s = try live()
        let t = CurlGRPCTransport(socketPath: s.socketPath)
        t.sendsTimeoutHeader = false
        let start = Clock.monotonicNanoseconds()
        let e = grpcError { () throws(GRPCError) in try t.call(path: "/test.Live/Slow", message: [], timeoutNanoseconds: 300_000_000) }
        let took = Clock.monotonicNanoseconds() - start
        #expect(e?.kind == .timeout)
        #expect(e?.curlCode == 28)
        #expect(took >= 250_000_000 && took < 2 * second)
        // With grpc-timeout the server gives up too; whichever side is first, the call ends near the timeout.
        let t2 = CurlGRPCTransport(socketPath: s.socketPath)
        let e2 = grpcError { () throws(GRPCError) in try t2.call(path: "/test.Live/Slow", message: [], timeoutNanoseconds: 300_000_000) }
        #expect(e2?.kind == .status(4) || e2?.kind == .timeout)
        #expect(e2?.statusCode == 4)
    }

    @Test func largeAnswersAndTheSizeCap() throws {
        let s = try live()
        let t = CurlGRPCTransport(socketPath: s.socketPath)
        #expect(try t.call(path: "/test.Live/Big", message: [], timeoutNanoseconds: 10 * second).count == 3 << 20)
        t.maxMessageBytes = 1 << 20
        let e = grpcError { () throws(GRPCError) in try t.call(path: "/test.Live/Big", message: [], timeoutNanoseconds: 10 * second) }
        #expect(e?.kind == .invalidResponse)
        // The handle is usable again afterwards.
        t.maxMessageBytes = GRPCWire.defaultMaxMessageBytes
        #expect(try t.call(path: "/test.Live/Echo", message: [7], timeoutNanoseconds: 5 * second) == [7])
    }
}
