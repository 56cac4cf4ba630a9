import DaemonWire
import Glibc
import SystemKit
import Testing
@testable import PlexusCore
@testable import PlexusDaemon

/// What the handler was called with.
struct Call: Sendable {
    var environment: [String]
    var stdin: [UInt8]
}

/// A `CNIServer` on a socket in a fresh temporary directory.
final class ServerFixture: @unchecked Sendable {
    let dir: String
    let socket: String
    let metrics = Metrics()
    let calls = Locked<[Call]>([])
    /// Handler calls that returned.
    let finished = Locked(0)
    /// While closed, the handler blocks after recording its call.
    let gate: CountingSemaphore?
    let server: CNIServer

    init(maxConcurrent: Int = 4, maxQueued: Int = 4, blocking: Bool = false,
         answer: @escaping @Sendable (Call) -> CNIOutcome = { _ in CNIOutcome(stdout: Array("{}".utf8), exitCode: 0) }) throws {
        dir = makeTempDir()
        // Directly in the private directory: see `makeTempDir` on why the tests create no directories while
        // sockets may be bound.
        socket = dir + "/plexus.sock"
        let gate = blocking ? CountingSemaphore(0) : nil
        self.gate = gate
        DaemonMetrics.declare(metrics)
        let calls = calls
        let finished = finished
        server = CNIServer(socketPath: socket, maxConcurrent: maxConcurrent, maxQueued: maxQueued, metrics: metrics,
                           logger: Logger(level: .error, toStderr: false)) { environment, stdin in
            let call = Call(environment: environment, stdin: stdin)
            calls.withLock { $0.append(call) }
            gate?.wait()
            defer { finished.withLock { $0 += 1 } }
            return answer(call)
        }
        try server.start()
    }

    var callCount: Int { calls.withLock { $0.count } }

    func forward(_ environment: [String] = ["CNI_COMMAND=ADD"], stdin: [UInt8] = [], admitMilliseconds: Int = 3000) -> DaemonClient.Outcome {
        DaemonClient.forward(socketPath: socket, environment: environment, stdin: stdin,
                             admitMilliseconds: admitMilliseconds, resultMilliseconds: 20_000)
    }

    /// A forward on a thread of its own; its outcome shows up in the returned box.
    func forwardInBackground(_ environment: [String] = ["CNI_COMMAND=ADD"]) -> Locked<DaemonClient.Outcome?> {
        let box = Locked<DaemonClient.Outcome?>(nil)
        Threads.detach { [self] in
            let o = forward(environment)
            box.withLock { $0 = o }
        }
        return box
    }

    func rejected(_ reason: String) -> Double { metrics.counter(DaemonMetrics.rejected, [reason]) }

    func close() {
        if let gate { for _ in 0..<8 { gate.signal() } }
        _ = server.drain(seconds: 5)
        removeTree(dir)
    }
}

/// The server dropped the connection without a byte of answer (a close with unread bytes is a reset on Linux).
private func closedWithoutAnswer(_ s: borrowing StreamSocket) -> Bool {
    do { return try s.readSome(max: 8, deadline: soon()).isEmpty } catch { return error.errno == ECONNRESET }
}

@Suite struct CNIServerTests {
    @Test func callsRoundTripByteForByte() throws {
        let stdout: [UInt8] = Array(#"{"cniVersion":"1.0.0","interfaces":[]}"#.utf8) + [0, 0xFF, 0x0A]
        let f = try ServerFixture { call in
            CNIOutcome(stdout: call.environment.contains("CNI_COMMAND=DEL") ? [] : stdout,
                       exitCode: call.environment.contains("CNI_COMMAND=DEL") ? -3 : 0)
        }
        defer { f.close() }
        #expect(fileMode(f.socket).map { $0 & 0o777 } == 0o600)
        let env = ["CNI_COMMAND=ADD", "CNI_CONTAINERID=abc", "CNI_NETNS=/var/run/netns/x", "CNI_IFNAME=eth0",
                   "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAME=p=q", "CNI_PATH=/opt/cni/bin", "LANG=C.UTF-8 ünï"]
        let stdin = Array(#"{"cniVersion":"1.0.0","name":"plexus","type":"plexus"}"#.utf8) + [0, 1, 2]
        #expect(f.forward(env, stdin: stdin) == .answered(stdout: stdout, exitCode: 0))
        #expect(f.calls.current.first?.environment == env)
        #expect(f.calls.current.first?.stdin == stdin)

        #expect(f.forward(["CNI_COMMAND=DEL"]) == .answered(stdout: [], exitCode: -3))
        #expect(f.forward(["CNI_COMMAND=SOMETHING"]) == .answered(stdout: stdout, exitCode: 0))
        #expect(f.callCount == 3)
        #expect(f.metrics.counter(DaemonMetrics.requests, ["ADD", "ok"]) == 1)
        #expect(f.metrics.counter(DaemonMetrics.requests, ["DEL", "error"]) == 1)
        #expect(f.metrics.counter(DaemonMetrics.requests, ["other", "ok"]) == 1)
        let out = f.metrics.render()
        #expect(out.contains(#"plexus_daemon_request_duration_seconds_count{command="ADD"} 1"#))
        #expect(out.contains("plexus_daemon_inflight_requests 0\n"))

        // Frames larger than the socket buffers (5 MiB each way).
        let big = (0..<(5 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        let g = try ServerFixture { call in CNIOutcome(stdout: call.stdin.reversed(), exitCode: 0) }
        defer { g.close() }
        #expect(g.forward(stdin: big) == .answered(stdout: big.reversed(), exitCode: 0))
    }

    @Test func busyWhenAllSlotsAndTheQueueAreTaken() throws {
        let f = try ServerFixture(maxConcurrent: 1, maxQueued: 0, blocking: true)
        defer { f.close() }
        let first = f.forwardInBackground()
        #expect(waitUntil { f.callCount == 1 })
        #expect(f.forward() == .unavailable("the daemon is at its queue limit"))
        #expect(f.rejected("busy") == 1)
        #expect(f.callCount == 1)  // the busy call never reached the handler
        f.gate?.signal()
        #expect(waitUntil { first.current != nil })
        #expect(first.current == .answered(stdout: Array("{}".utf8), exitCode: 0))
        // The slot is free again.
        f.gate?.signal()
        #expect(f.forward() == .answered(stdout: Array("{}".utf8), exitCode: 0))
    }

    @Test func queuedCallsWaitForASlot() throws {
        let f = try ServerFixture(maxConcurrent: 1, maxQueued: 1, blocking: true)
        defer { f.close() }
        let first = f.forwardInBackground()
        #expect(waitUntil { f.callCount == 1 })
        let second = f.forwardInBackground()
        #expect(waitUntil { f.metrics.render().contains("plexus_daemon_queued_requests 1\n") })
        #expect(f.metrics.render().contains("plexus_daemon_inflight_requests 1\n"))
        #expect(f.callCount == 1)  // queued, not running
        #expect(f.forward() == .unavailable("the daemon is at its queue limit"))
        f.gate?.signal()
        #expect(waitUntil { f.callCount == 2 })
        f.gate?.signal()
        #expect(waitUntil { first.current != nil && second.current != nil })
        #expect(first.current == .answered(stdout: Array("{}".utf8), exitCode: 0))
        #expect(second.current == .answered(stdout: Array("{}".utf8), exitCode: 0))
        #expect(waitUntil { f.metrics.render().contains("plexus_daemon_queued_requests 0\n") })
    }

    @Test func aCallWithoutGoNeverRuns() throws {
        let f = try ServerFixture()
        defer { f.close() }
        // The plugin gave up right after `A`: it closes without sending `G`.
        do {
            let s = try StreamSocket.connect(unixPath: f.socket, timeoutMilliseconds: 2000)
            try s.write(DaemonWire.encodeRequest(environment: ["CNI_COMMAND=ADD"], stdin: []), deadline: soon())
            #expect(try s.read(exactly: 1, deadline: soon()) == [DaemonWire.admitted])
        }
        #expect(waitUntil { f.rejected("abandoned") == 1 })
        // Something else than `G`.
        do {
            let s = try StreamSocket.connect(unixPath: f.socket, timeoutMilliseconds: 2000)
            try s.write(DaemonWire.encodeRequest(environment: ["CNI_COMMAND=ADD"], stdin: []), deadline: soon())
            #expect(try s.read(exactly: 1, deadline: soon()) == [DaemonWire.admitted])
            try s.write(Array("X".utf8), deadline: soon())
            let dropped = closedWithoutAnswer(s)
            #expect(dropped)
        }
        #expect(waitUntil { f.rejected("malformed") == 1 })
        // Not a plexus request at all.
        do {
            let s = try StreamSocket.connect(unixPath: f.socket, timeoutMilliseconds: 2000)
            try s.write(Array("GET / HTTP/1.1\r\n\r\n".utf8), deadline: soon())
            let dropped = closedWithoutAnswer(s)
            #expect(dropped)
        }
        #expect(waitUntil { f.rejected("malformed") == 2 })
        #expect(f.callCount == 0)
        // The server still serves.
        #expect(f.forward() == .answered(stdout: Array("{}".utf8), exitCode: 0))
        #expect(f.callCount == 1)
    }

    @Test func drainRemovesTheSocketAndWaitsForRunningCalls() throws {
        let f = try ServerFixture(blocking: true)
        defer { f.close() }
        let running = f.forwardInBackground()
        #expect(waitUntil { f.callCount == 1 })
        let server = f.server
        let finished = f.finished
        let drained = Locked<(left: Int, handlerDone: Int)?>(nil)
        Threads.detach {
            let left = server.drain(seconds: 30)
            let done = finished.current
            drained.withLock { $0 = (left, done) }
        }
        #expect(waitUntil { !pathExists(f.socket) && server.acceptLoopDone.load(ordering: .acquiring) })
        #expect(!server.isServing)
        // New calls find nobody and run in the plugin.
        guard case .unavailable = f.forward(admitMilliseconds: 500) else {
            Issue.record("a call was admitted while draining")
            return
        }
        // The admitted call still runs: a drain with a short deadline reports it, the first one keeps waiting.
        #expect(server.drain(seconds: 0.1) == 1)
        #expect(drained.current == nil)
        f.gate?.signal()
        #expect(waitUntil { drained.current != nil })
        #expect(drained.current?.left == 0)
        #expect(drained.current?.handlerDone == 1)  // drain returned only once the call was done
        #expect(waitUntil { running.current != nil })
        #expect(running.current == .answered(stdout: Array("{}".utf8), exitCode: 0))
        #expect(f.callCount == 1)
    }

    @Test func drainReportsCallsStillRunningAtItsDeadline() throws {
        let f = try ServerFixture(blocking: true)
        defer { f.close() }
        let running = f.forwardInBackground()
        #expect(waitUntil { f.callCount == 1 })
        // Longer than the accept loop's 200 ms poll: the socket is gone well before the deadline, the call is not.
        #expect(f.server.drain(seconds: 1) == 1)
        #expect(waitUntil { !pathExists(f.socket) })
        f.gate?.signal()
        #expect(waitUntil { running.current != nil })
        #expect(running.current == .answered(stdout: Array("{}".utf8), exitCode: 0))
    }
}
