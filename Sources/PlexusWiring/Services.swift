// The real I/O of a CNI call, shared by the `plexus` executable and the node daemon so both run one implementation.
import CNIInvoke
import CNISpec
import PlexusCore
import SystemKit

public enum PlexusWiring {
    /// The services of one CNI call: delegates spawned with `baseEnvironment` (the runtime's environment of that
    /// call), Kubernetes through `kubernetes`, netlink for the pod's netns. `wrapExecutor` lets the daemon count
    /// delegate failures.
    public static func services(baseEnvironment: [String], kubernetes: KubernetesServices, logger: Logger,
                                wrapExecutor: @escaping (any PluginExecutor) -> any PluginExecutor = { $0 }) -> PlexusServices {
        PlexusServices(
            makeExecutor: { config in
                wrapExecutor(ProcessPluginExecutor(baseEnvironment: baseEnvironment, timeoutSeconds: config.delegateTimeoutSeconds))
            },
            makePlanner: { config, invocation, logger throws(CNIError) in
                try kubernetes.planner(config: config, invocation: invocation, logger: logger)
            },
            makeReporter: { config, invocation, logger in
                kubernetes.reporter(config: config, invocation: invocation, logger: logger)
            },
            interfaceLister: NetlinkNetns(),
            routing: NetlinkNetns(),
            makeClaimSource: { config, invocation, logger in kubernetes.claimSource(config: config, invocation: invocation, logger: logger) },
            makeClaimPublisher: { config, invocation, logger in kubernetes.claimPublisher(config: config, invocation: invocation, logger: logger) },
            logger: logger)
    }
}
