import CNIInvoke
import CNISpec
import DaemonWire
import PlexusCore
import Synchronization
import SystemKit

/// Metric names, in one place.
public enum DaemonMetrics {
    public static let requests = "plexus_daemon_requests_total"
    public static let duration = "plexus_daemon_request_duration_seconds"
    public static let rejected = "plexus_daemon_rejected_total"
    public static let delegateFailures = "plexus_delegate_failures_total"
    public static let apiRequests = "plexus_api_requests_total"
    public static let watchRestarts = "plexus_watch_restarts_total"
    public static let cacheLookups = "plexus_cache_lookups_total"
    public static let watchEvents = "plexus_watch_events_total"
    public static let cacheObjects = "plexus_cache_objects"
    public static let inflight = "plexus_daemon_inflight_requests"
    public static let queued = "plexus_daemon_queued_requests"

    static func declare(_ m: Metrics) {
        m.declare(requests, type: "counter", help: "CNI calls served by the daemon, by command and result.", labels: ["command", "result"])
        m.declare(duration, type: "histogram", help: "Time to serve a CNI call (admission to result), by command.", labels: ["command"])
        m.declare(rejected, type: "counter", help: "Calls not served: busy (queue full), abandoned (the plugin gave up) or malformed.",
                  labels: ["reason"])
        m.declare(delegateFailures, type: "counter", help: "Delegate plugin invocations that failed, by network and command.",
                  labels: ["network", "command"])
        m.declare(apiRequests, type: "counter", help: "Kubernetes API requests sent for CNI calls, by call and result.", labels: ["call", "result"])
        m.declare(watchRestarts, type: "counter", help: "Watches started again, by resource and reason (closed, expired, error).",
                  labels: ["resource", "reason"])
        m.declare(watchEvents, type: "counter", help: "Watch events applied to the caches, by resource and type.",
                  labels: ["resource", "type"])
        m.declare(cacheLookups, type: "counter", help: "Watch-cache lookups of ADDs, by resource and outcome (hit, miss: read through).",
                  labels: ["resource", "result"])
    }
}

/// Counts delegate failures per network (the `name` of the configuration the delegate got).
struct MeteredExecutor: PluginExecutor {
    let inner: any PluginExecutor
    let metrics: Metrics

    func execute(_ request: ExecRequest) throws(CNIError) -> [UInt8] {
        do { return try inner.execute(request) } catch {
            let network = (try? JSON.parse(request.stdin))?["name"]?.stringValue ?? ""
            metrics.add(DaemonMetrics.delegateFailures, [network, request.command])
            throw error
        }
    }

    func find(_ type: String, in paths: [String]) throws(CNIError) -> String { try inner.find(type, in: paths) }
}

/// Serves CNI calls on the unix socket: one thread per connection, at most `maxConcurrent` calls running and
/// `maxQueued` waiting; beyond that a call is answered "busy" and the plugin runs it itself. `drain` stops
/// accepting and waits for every admitted call.
public final class CNIServer: Sendable {
    public typealias Handler = @Sendable (_ environment: [String], _ stdin: [UInt8]) -> CNIOutcome

    let socketPath: String
    let maxConcurrent: Int
    let maxQueued: Int
    let handler: Handler
    let metrics: Metrics
    let logger: Logger
    let slots: CountingSemaphore
    /// Connections being handled (reading, queued, running, answering).
    let connections = Atomic<Int>(0)
    /// Admitted calls: queued or running.
    let admitted = Atomic<Int>(0)
    let running = Atomic<Int>(0)
    let stopping = Atomic<Bool>(false)
    let acceptLoopDone = Atomic<Bool>(false)

    public init(socketPath: String, maxConcurrent: Int, maxQueued: Int, metrics: Metrics, logger: Logger, handler: @escaping Handler) {
        self.socketPath = socketPath
        self.maxConcurrent = max(1, maxConcurrent)
        self.maxQueued = max(0, maxQueued)
        self.metrics = metrics
        self.logger = logger
        self.handler = handler
        slots = CountingSemaphore(max(1, maxConcurrent))
    }

    public var isServing: Bool { !stopping.load(ordering: .relaxed) }

    /// Binds the socket (its directory is created 0700) and starts the accept loop on its own thread.
    public func start() throws(SystemError) {
        metrics.gauge(DaemonMetrics.inflight, help: "CNI calls running now.") { [self] in [([], Double(running.load(ordering: .relaxed)))] }
        metrics.gauge(DaemonMetrics.queued, help: "Admitted CNI calls waiting for a slot.") { [self] in
            [([], Double(max(0, admitted.load(ordering: .relaxed) - running.load(ordering: .relaxed))))]
        }
        try FileSystem.makeDirectories(FileSystem.directoryName(of: socketPath), mode: 0o700)
        let listener = try StreamSocket.listen(unixPath: socketPath, mode: 0o600)
        let box = ListenerBox(listener)
        Threads.detach { [self] in
            acceptLoop(box)
            acceptLoopDone.store(true, ordering: .releasing)
        }
    }

    final class ListenerBox: @unchecked Sendable {
        var socket: StreamSocket?
        init(_ s: consuming StreamSocket) { socket = consume s }
    }

    func acceptLoop(_ box: ListenerBox) {
        while !stopping.load(ordering: .relaxed) {
            let conn: StreamSocket?
            do { conn = try box.socket?.accept(timeoutMilliseconds: 200) } catch {
                logger.error("accept failed", [("error", error.description)])
                Clock.sleep(milliseconds: 100)
                continue
            }
            guard let conn else { continue }
            connections.add(1, ordering: .relaxed)
            let c = ConnectionBox(conn)
            if !Threads.detach({ [self] in serve(c); connections.subtract(1, ordering: .relaxed) }) {
                connections.subtract(1, ordering: .relaxed)
                metrics.add(DaemonMetrics.rejected, ["busy"])
            }
        }
        // Closing the listener and removing the socket file: new ADDs see no daemon and run in the plugin.
        FileSystem.removeSocket(socketPath)
        box.socket = nil
    }

    final class ConnectionBox: @unchecked Sendable {
        let socket: StreamSocket
        init(_ s: consuming StreamSocket) { socket = s }
    }

    func serve(_ c: ConnectionBox) {
        let request: (environment: [String], stdin: [UInt8])
        do { request = try DaemonWire.readRequest(c.socket, deadline: Clock.deadline(afterSeconds: 5)) } catch {
            metrics.add(DaemonMetrics.rejected, ["malformed"])
            logger.warning("dropped a malformed request", [("error", error.description)])
            return
        }
        func busy() {
            metrics.add(DaemonMetrics.rejected, ["busy"])
            try? c.socket.write([DaemonWire.busy], deadline: Clock.deadline(afterSeconds: 1))
        }
        if stopping.load(ordering: .relaxed) { return busy() }
        if admitted.add(1, ordering: .relaxed).newValue > maxConcurrent + maxQueued {
            admitted.subtract(1, ordering: .relaxed)
            return busy()
        }
        defer { admitted.subtract(1, ordering: .relaxed) }
        let go: [UInt8]
        do {
            try c.socket.write([DaemonWire.admitted], deadline: Clock.deadline(afterSeconds: 1))
            go = try c.socket.read(exactly: 1, deadline: Clock.deadline(afterSeconds: 2))
        } catch {
            metrics.add(DaemonMetrics.rejected, ["abandoned"])
            return
        }
        guard go == [DaemonWire.go] else {
            metrics.add(DaemonMetrics.rejected, ["malformed"])
            return
        }
        let started = Clock.monotonicNanoseconds()
        slots.wait()
        running.add(1, ordering: .relaxed)
        let outcome = handler(request.environment, request.stdin)
        running.subtract(1, ordering: .relaxed)
        slots.signal()
        let command = ProcessEnvironment.dictionary(request.environment)["CNI_COMMAND"] ?? ""
        let label = CNIInvocation.Command(rawValue: command)?.rawValue ?? "other"
        metrics.add(DaemonMetrics.requests, [label, outcome.exitCode == 0 ? "ok" : "error"])
        metrics.observe(DaemonMetrics.duration, [label], seconds: Double(Clock.monotonicNanoseconds() - started) / 1e9)
        do { try c.socket.write(DaemonWire.encodeResponse(exitCode: outcome.exitCode, stdout: outcome.stdout),
                         deadline: Clock.deadline(afterSeconds: 10)) } catch {
            logger.warning("the plugin went away before the result was sent", [("command", label), ("error", error.description)])
        }
    }

    /// Stops accepting (the socket file goes away) and waits up to `seconds` for every connection to finish.
    /// Returns the number of calls still running when the time ran out.
    public func drain(seconds: Double) -> Int {
        // Stop admitting first: a call that is mid-read is answered "busy" and runs in the plugin.
        _ = stopping.exchange(true, ordering: .relaxed)
        let deadline = Clock.deadline(afterSeconds: seconds)
        while Clock.monotonicNanoseconds() < deadline {
            if acceptLoopDone.load(ordering: .acquiring) && connections.load(ordering: .relaxed) == 0 { return 0 }
            Clock.sleep(milliseconds: 20)
        }
        return admitted.load(ordering: .relaxed)
    }
}
