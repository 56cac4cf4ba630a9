import CNISpec
import KubeClient
import PlexusCore
import PlexusWiring
import Synchronization
import SystemKit

/// `plexus-daemon`: one process per node that keeps the API connection and watch caches of the NADs and of this
/// node's pods, and serves the thin plugin's ADDs on a unix socket with the same code the plugin runs.
public final class Daemon: Sendable {
    public let options: DaemonOptions
    public let logger: Logger
    public let metrics = Metrics()
    public let pods: WatchCache<CachedPod>
    public let nads: WatchCache<JSON>
    let kubeConfig: KubeConfig
    let pool: ClientPool
    let stop = Atomic<Bool>(false)
    let server: CNIServer

    public static let nadPath = "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions"

    public static func podPath(node: String) -> String {
        "/api/v1/pods?fieldSelector=" + KubePaths.escape("spec.nodeName=" + node)
    }

    public init(options: DaemonOptions, environment: [String: String], logger: Logger) throws(KubeError) {
        self.options = options
        self.logger = logger
        if let path = options.kubeconfig {
            kubeConfig = try KubeConfig.load(kubeconfigPath: path, converterSearchPaths: [options.binDir])
        } else {
            kubeConfig = try KubeConfig.inCluster(environment: environment)
        }
        do { try CurlTransport.loadLibrary() } catch {
            throw KubeError(.config, operation: "load libcurl", detail: error.description)
        }
        pods = WatchCache(resource: "pods", path: Self.podPath(node: options.nodeName)) { CachedPod(pod: $0) }
        nads = WatchCache(resource: "network-attachment-definitions", path: Self.nadPath) { CachedNAD.trim($0) }
        let config = kubeConfig
        pool = ClientPool { Daemon.client(config, logger: logger) }
        let metrics = self.metrics
        DaemonMetrics.declare(metrics)
        let (pods, nads, pool) = (pods, nads, pool)
        metrics.gauge(DaemonMetrics.cacheObjects, help: "Objects in the watch caches.", labels: ["resource"]) {
            [(["pods"], Double(pods.count)), (["network-attachment-definitions"], Double(nads.count))]
        }
        server = CNIServer(socketPath: options.socket, maxConcurrent: options.maxConcurrent, maxQueued: options.maxQueued,
                           metrics: metrics, logger: logger) { environment, stdin in
            Daemon.handle(environment: environment, stdin: stdin, pods: pods, nads: nads, pool: pool, metrics: metrics)
        }
    }

    static func client(_ config: KubeConfig, logger: Logger) -> KubeHTTPClient {
        let c = KubeHTTPClient(config: config, deadline: Clock.deadline(afterSeconds: 30), userAgent: "plexus-daemon", logger: logger)
        c.tokenMaxAgeNanoseconds = 60_000_000_000
        return c
    }

    /// One CNI call: exactly what the plugin's `main.swift` does, with the caches behind `KubeAPI`.
    static func handle(environment entries: [String], stdin: [UInt8], pods: WatchCache<CachedPod>, nads: WatchCache<JSON>,
                       pool: ClientPool, metrics: Metrics) -> CNIOutcome {
        let environment = ProcessEnvironment.dictionary(entries)
        let logger = Logger(level: .error, toStderr: true)
        let kubernetes = KubernetesServices(environment: environment) { config, _, _ in
            // As in the plugin: Kubernetes only when the configuration or the environment names an API server.
            guard config.kubeconfig != nil || environment["KUBERNETES_SERVICE_HOST"] != nil else { return nil }
            return DaemonKubeAPI(pods: pods, nads: nads, pool: pool, metrics: metrics,
                                 deadline: Clock.deadline(afterSeconds: config.apiDeadlineSeconds))
        }
        let services = PlexusWiring.services(baseEnvironment: entries, kubernetes: kubernetes, logger: logger) {
            MeteredExecutor(inner: $0, metrics: metrics)
        }
        return Dispatcher.run(environment: environment, stdin: stdin, services: services)
    }

    /// Starts the watches, the socket and the metrics endpoint. Returns the metrics TCP port when bound to one.
    @discardableResult
    public func start() throws(SystemError) -> UInt16? {
        guard Threads.detach({ [self] in runWatch(pods) }), Threads.detach({ [self] in runWatch(nads) }) else {
            throw SystemError("start the watch threads", errno: 11)
        }
        try server.start()
        logger.info("serving CNI calls", [("socket", options.socket), ("node", options.nodeName)])
        guard let address = HTTPEndpoint.Address(options.metricsAddress) else { return nil }
        let endpoint = HTTPEndpoint(logger: logger) { [self] path in route(path) }
        let port = try endpoint.start(address)
        logger.info("serving metrics", [("address", options.metricsAddress)])
        return port
    }

    func runWatch<E: Sendable>(_ cache: WatchCache<E>) {
        let client = Daemon.client(kubeConfig, logger: logger)
        let metrics = metrics
        cache.run(client: client, pageSize: options.pageSize, watchTimeoutSeconds: options.watchTimeoutSeconds, logger: logger,
                  shouldStop: { [self] in stop.load(ordering: .relaxed) },
                  onRestart: { reason in metrics.add(DaemonMetrics.watchRestarts, [cache.resource, reason]) },
                  onRequest: { metrics.add(DaemonMetrics.apiRequests, ["watch_" + cache.resource, "ok"]) },
                  onEvent: { kind in metrics.add(DaemonMetrics.watchEvents, [cache.resource, kind.rawValue]) })
    }

    func route(_ path: String) -> HTTPEndpoint.Response? {
        switch path {
        case "/metrics":
            return HTTPEndpoint.Response(status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: metrics.render())
        case "/healthz":
            // Alive while serving: the API being down is no reason to restart the daemon (cached ADDs still work).
            return server.isServing ? HTTPEndpoint.Response(status: 200, body: "ok\n") : HTTPEndpoint.Response(status: 503, body: "draining\n")
        case "/readyz":
            let synced = pods.isSynced && nads.isSynced
            return synced && server.isServing ? HTTPEndpoint.Response(status: 200, body: "ok\n")
                : HTTPEndpoint.Response(status: 503, body: server.isServing ? "watch caches not synced yet\n" : "draining\n")
        default:
            return nil
        }
    }

    /// Stops accepting calls and waits for those admitted; returns how many were still running at the deadline.
    public func drain() -> Int {
        let left = server.drain(seconds: options.drainSeconds)
        stop.store(true, ordering: .relaxed)
        return left
    }
}
