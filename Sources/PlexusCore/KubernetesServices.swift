import CNISpec
import KubeClient
import SystemKit

/// Builds the Kubernetes client for an ADD only when the API is configured (`kubeconfig`, or the in-cluster
/// service environment) and the call names a pod. libcurl is loaded at that moment, so VERSION, DEL, CHECK, STATUS,
/// GC and runs without Kubernetes never pay for it.
///
/// The node daemon passes `makeAPI` instead: its watch caches and shared connection stand behind the same
/// `KubeAPI`, so planning, reporting and claims are the very code the thin path runs.
public final class KubernetesServices {
    public typealias APIFactory = (PlexusConfig, CNIInvocation, Logger) throws(CNIError) -> (any KubeAPI)?
    let environment: [String: String]
    let makeAPI: APIFactory?
    private var client: (any KubeAPI)?
    private var built = false
    /// The pod the planner read, for the claim source.
    let podBox = PodObjectBox()

    public init(environment: [String: String], makeAPI: APIFactory? = nil) {
        self.environment = environment
        self.makeAPI = makeAPI
    }

    /// The API client for this invocation, or nil when Kubernetes is not configured or the call has no pod.
    public func client(config: PlexusConfig, invocation: CNIInvocation, logger: Logger) throws(CNIError) -> (any KubeAPI)? {
        if built { return client }
        built = true
        guard invocation.pod != nil else { return nil }
        if let makeAPI {
            client = try makeAPI(config, invocation, logger)
            return client
        }
        let kubeConfig: KubeConfig
        do {
            if let path = config.kubeconfig {
                kubeConfig = try KubeConfig.load(kubeconfigPath: path, converterSearchPaths: [config.binDir],
                                                 conversionCacheDir: config.cniDir)
            } else if environment["KUBERNETES_SERVICE_HOST"] != nil {
                kubeConfig = try KubeConfig.inCluster(environment: environment)
            } else {
                return nil
            }
        } catch {
            throw CNIError(.invalidNetworkConfig, "cannot load Kubernetes client configuration", details: error.description)
        }
        do { try CurlTransport.loadLibrary() } catch {
            throw CNIError(.internalError, "cannot load libcurl for the Kubernetes API", details: error.description)
        }
        let deadline = Clock.deadline(afterSeconds: config.apiDeadlineSeconds)
        let c = KubeHTTPClient(config: kubeConfig, deadline: deadline, logger: logger)
        client = c
        return c
    }

    public func planner(config: PlexusConfig, invocation: CNIInvocation, logger: Logger) throws(CNIError) -> (any NetworkPlanner)? {
        guard let api = try client(config: config, invocation: invocation, logger: logger) else { return nil }
        return KubernetesPlanner(api: api, loader: NetworkLoader(confDir: config.confDir), logger: logger, podBox: podBox)
    }

    /// DRA devices of the pod the planner read (its ResourceClaims); nil without Kubernetes.
    public func claimSource(config: PlexusConfig, invocation: CNIInvocation, logger: Logger) -> (any ClaimDeviceSource)? {
        guard let api = try? client(config: config, invocation: invocation, logger: logger) else { return nil }
        return KubernetesClaimDevices(api: api, podBox: podBox, logger: logger, deadlineSeconds: config.apiDeadlineSeconds)
    }

    /// The writer of claims' networkData (ADD with publishing on, DEL of an attachment that published).
    public func claimPublisher(config: PlexusConfig, invocation: CNIInvocation, logger: Logger) -> (any ClaimStatusPublisher)? {
        guard let api = try? client(config: config, invocation: invocation, logger: logger) else { return nil }
        return KubernetesClaimPublisher(api: api, deadlineSeconds: config.apiDeadlineSeconds)
    }

    public func reporter(config: PlexusConfig, invocation: CNIInvocation, logger: Logger) -> (any AttachmentReporter)? {
        guard let api = try? client(config: config, invocation: invocation, logger: logger) else { return nil }
        return NetworkStatusReporter(api: api, logger: logger, deadlineSeconds: config.apiDeadlineSeconds)
    }
}
