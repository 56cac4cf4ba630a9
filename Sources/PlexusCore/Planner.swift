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
        var lists: [NetworkConfigList] = []
        if let cluster = config.clusterNetwork {
            lists.append(try loader.load(reference: cluster))
        } else {
            for (i, d) in config.delegates.enumerated() {
                lists.append(try NetworkConfigList(json: d, source: "delegates[\(i)]"))
            }
        }
        let isSystemPod = invocation.pod.map { config.systemNamespaces.contains($0.namespace) } ?? false
        if !isSystemPod {
            for ref in config.defaultNetworks {
                lists.append(try loader.load(reference: ref))
            }
        }
        return lists.enumerated().map { i, list in
            PlannedNetwork(list: list, ifname: i == 0 ? invocation.ifname : "net\(i)",
                           capabilityArgs: i == 0 ? config.runtimeConfig : JSONObject(),
                           displayName: list.name, isDefault: i == 0)
        }
    }

    /// Every network Plexus' configuration names (all `delegates`, or `clusterNetwork`, plus `defaultNetworks`):
    /// the delegate networks GC must visit even when nothing of them is cached.
    public func configuredNetworks(config: PlexusConfig) throws(CNIError) -> [NetworkConfigList] {
        var lists: [NetworkConfigList] = []
        if let cluster = config.clusterNetwork {
            lists.append(try loader.load(reference: cluster))
        } else {
            for (i, d) in config.delegates.enumerated() {
                lists.append(try NetworkConfigList(json: d, source: "delegates[\(i)]"))
            }
        }
        for ref in config.defaultNetworks { lists.append(try loader.load(reference: ref)) }
        return lists
    }

    /// The cluster network and `defaultNetworks` only: what STATUS must ask, since every pod needs them.
    public func requiredNetworks(config: PlexusConfig) throws(CNIError) -> [NetworkConfigList] {
        var lists: [NetworkConfigList] = []
        if let cluster = config.clusterNetwork {
            lists.append(try loader.load(reference: cluster))
        } else if let first = config.delegates.first {
            lists.append(try NetworkConfigList(json: first, source: "delegates[0]"))
        }
        for ref in config.defaultNetworks { lists.append(try loader.load(reference: ref)) }
        return lists
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
