import CNISpec

/// Decides which networks an attachment gets. Pure apart from the loader it is given; the Kubernetes-aware planner
/// adds the pod's annotation networks on top of this one.
public protocol NetworkPlanner {
    /// The ordered networks for an ADD (cluster network first).
    func plan(config: PlexusConfig, invocation: CNIInvocation) throws(CNIError) -> [PlannedNetwork]
}

/// The networks Plexus' own configuration names: the cluster network (`clusterNetwork`, else `delegates[0]`),
/// the remaining inline `delegates` (only without `clusterNetwork`, as in Multus), then `defaultNetworks` (skipped
/// for pods in `systemNamespaces`). The cluster network gets the runtime's `CNI_IFNAME`; the network at position i
/// gets `net<i>`. The runtime's `runtimeConfig` goes to the cluster network only.
public struct LocalPlanner: NetworkPlanner {
    public var loader: NetworkLoader

    public init(loader: NetworkLoader) { self.loader = loader }

    public func plan(config: PlexusConfig, invocation: CNIInvocation) throws(CNIError) -> [PlannedNetwork] {
        let isSystemPod = invocation.pod.map { config.systemNamespaces.contains($0.namespace) } ?? false
        let lists = try configuredNetworks(config: config, allDelegates: true, defaultNetworks: !isSystemPod,
                                           resolve: loader.load(reference:))
        return Self.assignInterfaces(lists, config: config, invocation: invocation)
    }

    /// Cluster network first with the runtime's ifname and runtimeConfig, then `net<i>`.
    static func assignInterfaces(_ lists: [NetworkConfigList], config: PlexusConfig, invocation: CNIInvocation) -> [PlannedNetwork] {
        lists.enumerated().map { i, list in
            PlannedNetwork(list: list, ifname: i == 0 ? invocation.ifname : "net\(i)",
                           capabilityArgs: i == 0 ? config.runtimeConfig : JSONObject(),
                           displayName: list.name, isDefault: i == 0)
        }
    }

    /// The networks Plexus' configuration names, in attachment order: `clusterNetwork` (resolved with `resolve`)
    /// or the inline `delegates` (all of them, or only the first), then `defaultNetworks` when asked for.
    func configuredNetworks(config: PlexusConfig, allDelegates: Bool, defaultNetworks: Bool,
                            resolve: (String) throws(CNIError) -> NetworkConfigList) throws(CNIError) -> [NetworkConfigList] {
        var lists: [NetworkConfigList] = []
        if let cluster = config.clusterNetwork {
            lists.append(try resolve(cluster))
        } else {
            for (i, d) in config.delegates.enumerated() where allDelegates || i == 0 {
                lists.append(try NetworkConfigList(json: d, source: "delegates[\(i)]"))
            }
        }
        if defaultNetworks {
            for ref in config.defaultNetworks { lists.append(try resolve(ref)) }
        }
        return lists
    }

    /// Every network Plexus' configuration names (all `delegates`, or `clusterNetwork`, plus `defaultNetworks`):
    /// the delegate networks GC must visit even when nothing of them is cached.
    public func configuredNetworks(config: PlexusConfig) throws(CNIError) -> [NetworkConfigList] {
        try configuredNetworks(config: config, allDelegates: true, defaultNetworks: true, resolve: loader.load(reference:))
    }

    /// The cluster network and `defaultNetworks` only: what STATUS must ask, since every pod needs them.
    public func requiredNetworks(config: PlexusConfig) throws(CNIError) -> [NetworkConfigList] {
        try configuredNetworks(config: config, allDelegates: false, defaultNetworks: true, resolve: loader.load(reference:))
    }
}

extension Array where Element == PlannedNetwork {
    /// Interface names must be unique within an attachment (NPWG §4.1.2.1.5).
    func validateUniqueInterfaces() throws(CNIError) {
        var seen: [String: String] = [:]
        for n in self {
            if let other = seen[n.ifname] {
                throw CNIError(.invalidNetworkConfig, "interface name \"\(n.ifname)\" requested by both \(other) and \(n.displayName)")
            }
            seen[n.ifname] = n.displayName
        }
    }
}
