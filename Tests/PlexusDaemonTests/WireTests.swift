import Glibc
import SystemKit
import Testing
@testable import DaemonWire

/// A socket that can be handed to another thread.
final class SocketBox: @unchecked Sendable {
    let socket: StreamSocket
    init(_ s: consuming StreamSocket) { socket = s }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// Both ends of one unix-socket connection (the listener is closed again).
func connectedPair(_ dir: String) throws -> (client: SocketBox, server: SocketBox) {
    let path = dir + "/pair.sock"
    let l = try StreamSocket.listen(unixPath: path)
    let c = try StreamSocket.connect(unixPath: path, timeoutMilliseconds: 2000)
    guard let s = try l.accept(timeoutMilliseconds: 2000) else { throw TestFailure("no connection to accept") }
    return (SocketBox(c), SocketBox(s))
}

func soon(_ seconds: Double = 5) -> Int64 { Clock.deadline(afterSeconds: seconds) }

private func u32(_ v: Int) -> [UInt8] { [UInt8(v >> 24 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

@Suite struct WireFramingTests {
    @Test func frameLayoutAndRoundTrip() throws {
        let req = DaemonWire.encodeRequest(environment: ["A=1", "B=x=y", "BAD\u{0}X"], stdin: [1, 2, 3])
        #expect(req == Array("PXD1".utf8) + u32(10) + Array("A=1".utf8) + [0] + Array("B=x=y".utf8) + [0] + u32(3) + [1, 2, 3])
        #expect(DaemonWire.encodeRequest(environment: [], stdin: []) == Array("PXD1".utf8) + u32(0) + u32(0))
        #expect(DaemonWire.encodeResponse(exitCode: 7, stdout: Array("ok".utf8)) == Array("PXR1".utf8) + u32(7) + u32(2) + Array("ok".utf8))
        #expect(DaemonWire.encodeResponse(exitCode: -1, stdout: []) == Array("PXR1".utf8) + [0xFF, 0xFF, 0xFF, 0xFF] + u32(0))
        #expect([DaemonWire.admitted, DaemonWire.busy, DaemonWire.go] == Array("ABG".utf8))

        // Both frames round-trip over a socket.
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let p = try connectedPair(dir)
        let env = ["CNI_COMMAND=ADD", "CNI_ARGS=K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns", "UNICODE=ünï", "EMPTY="]
        let stdin: [UInt8] = Array(0...255) + Array(#"{"cniVersion":"1.0.0"}"#.utf8)
        try p.client.socket.write(DaemonWire.encodeRequest(environment: env, stdin: stdin), deadline: soon())
        let r = try DaemonWire.readRequest(p.server.socket, deadline: soon())
        #expect(r.environment == env)
        #expect(r.stdin == stdin)

        for code: Int32 in [0, 1, -1, Int32.max, Int32.min] {
            try p.server.socket.write(DaemonWire.encodeResponse(exitCode: code, stdout: [0, 0xFF, 10]), deadline: soon())
            let answer = try DaemonWire.readResponse(p.client.socket, deadline: soon())
            #expect(answer?.exitCode == code)
            #expect(answer?.stdout == [0, 0xFF, 10])
        }
        try p.server.socket.write(Array("HTTP".utf8), deadline: soon())
        #expect(try DaemonWire.readResponse(p.client.socket, deadline: soon()) == nil)
    }

    @Test(arguments: [
        ("bad magic", Array("PXD2".utf8) + u32(0) + u32(0), "not a plexus request"),
        ("huge environment", Array("PXD1".utf8) + u32(DaemonWire.maxEnvironmentBytes + 1), "too large"),
        ("huge stdin", Array("PXD1".utf8) + u32(0) + u32(DaemonWire.maxStdinBytes + 1), "too large"),
        ("truncated", Array("PXD1".utf8) + u32(100) + Array("A=1".utf8), "cannot read the request"),
    ])
    func malformedRequestsAreRejected(_ what: String, _ bytes: [UInt8], _ message: String) throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let p = try connectedPair(dir)
        try p.client.socket.write(bytes, deadline: soon())
        p.client.socket.shutdownWrite()
        let error = #expect(throws: DaemonWire.FrameError.self, "\(what)") {
            _ = try DaemonWire.readRequest(p.server.socket, deadline: soon())
        }
        #expect(error?.description.contains(message) == true, "\(what): \(error?.description ?? "")")
    }
}

@Suite struct StreamSocketTests {
    @Test func listenReplacesStaleSocketsOnlyAndIsPrivate() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/d.sock"
        do { _ = try StreamSocket.listen(unixPath: path) }  // closed again: a stale socket file stays
        #expect(pathExists(path))
        let l = try StreamSocket.listen(unixPath: path)
        #expect(fileMode(path).map { $0 & 0o777 } == 0o600)
        #expect(fileMode(path).map { $0 & UInt32(S_IFMT) } == UInt32(S_IFSOCK))
        _ = l.fd

        // A regular file is never replaced.
        writeFile(dir + "/file", "data")
        #expect(throws: SystemError.self) { _ = try StreamSocket.listen(unixPath: dir + "/file") }
        #expect(fileMode(dir + "/file").map { $0 & UInt32(S_IFMT) } == UInt32(S_IFREG))
        // No address for paths a sockaddr_un cannot hold.
        #expect(throws: SystemError.self) { _ = try StreamSocket.listen(unixPath: dir + "/" + String(repeating: "x", count: 120)) }
        #expect(throws: SystemError.self) { _ = try StreamSocket.connect(unixPath: "", timeoutMilliseconds: 100) }
    }

    @Test func deadlinesAndClosedPeers() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let l = try StreamSocket.listen(unixPath: dir + "/idle.sock")
        let accepted: Bool
        switch try l.accept(timeoutMilliseconds: 20) {
        case .some: accepted = true
        case .none: accepted = false
        }
        #expect(!accepted)

        let p = try connectedPair(dir)
        // Nothing sent: the read gives up at its deadline.
        let timedOut = #expect(throws: SystemError.self) { _ = try p.server.socket.read(exactly: 1, deadline: soon(0.05)) }
        #expect(timedOut?.errno == ETIMEDOUT)
        // A large write completes while the peer reads it in pieces.
        let big = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let writer = p.client
        let wrote = Locked(false)
        Threads.detach {
            do { try writer.socket.write(big, deadline: soon(20)); wrote.withLock { $0 = true } } catch {}
        }
        #expect(try p.server.socket.read(exactly: big.count, deadline: soon(20)) == big)
        #expect(waitUntil { wrote.current })
        // Once the peer closed: EPIPE for an exact read, empty for readSome.
        p.client.socket.shutdownWrite()
        #expect(try p.server.socket.readSome(max: 16, deadline: soon()) == [])
        let closed = #expect(throws: SystemError.self) { _ = try p.server.socket.read(exactly: 4, deadline: soon()) }
        #expect(closed?.errno == EPIPE)
    }
}

/// A hand-written daemon: accepts one connection on `path` and runs `script` on it.
func fakeDaemon(_ path: String, _ script: @escaping @Sendable (SocketBox) -> Void) throws -> Locked<Bool> {
    let listener = SocketBox(try StreamSocket.listen(unixPath: path))
    let done = Locked(false)
    Threads.detach {
        do {
            if let c = try listener.socket.accept(timeoutMilliseconds: 10_000) { script(SocketBox(c)) }
        } catch {}
        done.withLock { $0 = true }
    }
    return done
}

@Suite struct DaemonClientTests {
    @Test func nobodyServingMeansUnavailable() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/file", "")
        do { _ = try StreamSocket.listen(unixPath: dir + "/stale.sock") }  // nobody listens any more
        for path in [dir + "/none.sock", dir + "/file", dir + "/stale.sock", dir + "/" + String(repeating: "n", count: 120)] {
            let o = DaemonClient.forward(socketPath: path, environment: ["CNI_COMMAND=ADD"], stdin: [],
                                         admitMilliseconds: 500, resultMilliseconds: 500)
            guard case .unavailable = o else {
                Issue.record("\(path): \(o)")
                continue
            }
        }
    }

    @Test func answeredByAHandWrittenDaemon() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let got = Locked<(env: [String], stdin: [UInt8], go: [UInt8])?>(nil)
        let done = try fakeDaemon(dir + "/d.sock") { c in
            guard let r = try? DaemonWire.readRequest(c.socket, deadline: soon()) else { return }
            try? c.socket.write([DaemonWire.admitted], deadline: soon())
            let go = (try? c.socket.read(exactly: 1, deadline: soon())) ?? []
            got.withLock { $0 = (r.environment, r.stdin, go) }
            try? c.socket.write(DaemonWire.encodeResponse(exitCode: 3, stdout: [1, 0, 2]), deadline: soon())
        }
        let o = DaemonClient.forward(socketPath: dir + "/d.sock", environment: ["CNI_COMMAND=DEL", "X=y"], stdin: [9, 8],
                                     admitMilliseconds: 2000, resultMilliseconds: 5000)
        #expect(o == .answered(stdout: [1, 0, 2], exitCode: 3))
        #expect(waitUntil { done.current })
        #expect(got.current?.env == ["CNI_COMMAND=DEL", "X=y"])
        #expect(got.current?.stdin == [9, 8])
        #expect(got.current?.go == [DaemonWire.go])
    }

    enum Misbehaviour: String, CaseIterable, Sendable {
        case closesAfterGo, busy, unexpectedAnswer, neverAdmits, malformedResult, truncatedResult
    }

    @Test(arguments: Misbehaviour.allCases)
    func misbehavingDaemons(_ m: Misbehaviour) throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let done = try fakeDaemon(dir + "/d.sock") { c in
            guard (try? DaemonWire.readRequest(c.socket, deadline: soon())) != nil else { return }
            func admitAndWaitForGo() -> Bool {
                guard (try? c.socket.write([DaemonWire.admitted], deadline: soon())) != nil else { return false }
                return (try? c.socket.read(exactly: 1, deadline: soon())) == [DaemonWire.go]
            }
            switch m {
            case .closesAfterGo: _ = admitAndWaitForGo()
            case .busy: try? c.socket.write([DaemonWire.busy], deadline: soon())
            case .unexpectedAnswer: try? c.socket.write(Array("X".utf8), deadline: soon())
            case .neverAdmits: _ = try? c.socket.read(exactly: 1, deadline: soon())  // until the client gives up
            case .malformedResult:
                if admitAndWaitForGo() { try? c.socket.write(Array("HTTP/1.1 500 Oops\r\n\r\n".utf8), deadline: soon()) }
            case .truncatedResult:
                if admitAndWaitForGo() {
                    try? c.socket.write(Array("PXR1".utf8) + u32(0) + u32(100) + Array(repeating: 1, count: 10), deadline: soon())
                }
            }
        }
        let o = DaemonClient.forward(socketPath: dir + "/d.sock", environment: ["CNI_COMMAND=ADD"], stdin: [],
                                     admitMilliseconds: m == .neverAdmits ? 200 : 3000, resultMilliseconds: 3000)
        switch m {
        case .closesAfterGo, .truncatedResult:
            guard case .lost = o else { Issue.record("\(m): \(o)"); break }
        case .malformedResult:
            #expect(o == .lost("the daemon sent a malformed result"))
        case .busy:
            #expect(o == .unavailable("the daemon is at its queue limit"))
        case .unexpectedAnswer:
            #expect(o == .unavailable("unexpected answer"))
        case .neverAdmits:
            guard case .unavailable = o else { Issue.record("\(m): \(o)"); break }
        }
        #expect(waitUntil { done.current })
    }
}
