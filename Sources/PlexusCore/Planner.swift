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
        var lists: [NetworkConfigList] = []
        for ref in Self.references(config: config, allDelegates: true, defaultNetworks: !isSystemPod) {
            lists.append(try load(ref))
        }
        return try Self.withAuxiliaryChain(Self.assignInterfaces(lists, config: config, invocation: invocation), config: config)
    }

    /// The type that heads the auxiliary chain (Multus uses its `passthru`): it answers ADD with an empty result.
    public static let passthruType = "plexus-passthru"

    /// Multus' `auxiliaryCNIChainName`: a list named so, with `cniVersion` of Plexus' configuration, holding
    /// `{"type":"plexus-passthru"}` and the plugin confs of `<baseDirectory>/<name>/*.conf`. Nil without that key or
    /// when the directory holds no conf (Multus adds the chain only when it has more than the passthru).
    public static func auxiliaryChain(config: PlexusConfig) throws(CNIError) -> NetworkConfigList? {
        guard let name = config.auxiliaryCNIChainName else { return nil }
        let dropIns = try PluginConfFiles.load(directory: config.baseDirectory + "/" + name)
        if dropIns.isEmpty { return nil }
        let head = JSON.object(JSONObject([("type", .string(passthruType)), ("name", .string("passthru-cni"))]))
        let list = JSONObject([("cniVersion", .string(config.cniVersion)), ("name", .string(name)),
                               ("plugins", .array([head] + dropIns.map { .object($0.plugin) }))])
        return try NetworkConfigList(json: .object(list), source: "auxiliaryCNIChainName \(name)")
    }

    /// `planned` with the auxiliary chain appended as the last network, on the next generated `net<i>` (the chain
    /// creates no interface; the name only identifies its cache entry).
    static func withAuxiliaryChain(_ planned: [PlannedNetwork], config: PlexusConfig) throws(CNIError) -> [PlannedNetwork] {
        guard let list = try auxiliaryChain(config: config) else { return planned }
        return planned + [PlannedNetwork(list: list, ifname: "net\(planned.count)", displayName: list.name,
                                         ifnameGenerated: true, isAuxiliary: true)]
    }

    /// Cluster network first with the runtime's ifname and runtimeConfig, then `net<i>`.
    static func assignInterfaces(_ lists: [NetworkConfigList], config: PlexusConfig, invocation: CNIInvocation) -> [PlannedNetwork] {
        lists.enumerated().map { i, list in
            PlannedNetwork(list: list, ifname: i == 0 ? invocation.ifname : "net\(i)",
                           capabilityArgs: i == 0 ? config.runtimeConfig : JSONObject(),
                           displayName: list.name, isDefault: i == 0, ifnameGenerated: i != 0)
        }
    }

    /// Where a configured network comes from.
    enum Reference {
        /// An inline `delegates` entry.
        case inline(JSON, source: String)
        /// `clusterNetwork`/`defaultNetworks`: a path or a network name.
        case named(String)
    }

    /// The networks Plexus' configuration names, in attachment order: `clusterNetwork` or the inline `delegates`
    /// (all of them, or only the first), then `defaultNetworks` when asked for.
    static func references(config: PlexusConfig, allDelegates: Bool, defaultNetworks: Bool) -> [Reference] {
        var refs: [Reference] = []
        if let cluster = config.clusterNetwork {
            refs.append(.named(cluster))
        } else {
            for (i, d) in config.delegates.enumerated() where allDelegates || i == 0 {
                refs.append(.inline(d, source: "delegates[\(i)]"))
            }
        }
        if defaultNetworks { refs += config.defaultNetworks.map { .named($0) } }
        return refs
    }

    func load(_ ref: Reference) throws(CNIError) -> NetworkConfigList {
        switch ref {
        case .inline(let json, let source): return try NetworkConfigList(json: json, source: source)
        case .named(let name): return try loader.load(reference: name)
        }
    }

    /// Every network Plexus' configuration names (all `delegates`, or `clusterNetwork`, plus `defaultNetworks`):
    /// the delegate networks GC must visit even when nothing of them is cached.
    public func configuredNetworks(config: PlexusConfig) throws(CNIError) -> [NetworkConfigList] {
        var lists: [NetworkConfigList] = []
        for ref in Self.references(config: config, allDelegates: true, defaultNetworks: true) { lists.append(try load(ref)) }
        if let aux = try Self.auxiliaryChain(config: config) { lists.append(aux) }
        return lists
    }

    /// The cluster network and `defaultNetworks`: what STATUS must ask, since every pod needs them. A network given
    /// by name that no file in confDir declares is a NAD, resolved through the API on ADD; STATUS (no pod, must
    /// stay cheap) leaves it out and returns its name in `unresolved`. A missing path is an error.
    public func requiredNetworks(config: PlexusConfig) throws(CNIError) -> (lists: [NetworkConfigList], unresolved: [String]) {
        var lists: [NetworkConfigList] = []
        var unresolved: [String] = []
        for ref in Self.references(config: config, allDelegates: false, defaultNetworks: true) {
            if case .named(let name) = ref, !name.contains("/"), try loader.find(name: name) == nil {
                unresolved.append(name)
                continue
            }
            lists.append(try load(ref))
        }
        if let aux = try Self.auxiliaryChain(config: config) { lists.append(aux) }
        return (lists, unresolved)
    }
}

/// Interfaces other attachments of the same container hold (another Plexus network the runtime attached, a
/// delegate attachment the cache attributes to someone else), each with who holds it.
public typealias InterfacesInUse = [String: String]

extension Array where Element == PlannedNetwork {
    /// Moves every generated name (`net<i>`) that another attachment of the container already uses to the lowest
    /// free `net<k>`; a name the runtime or the pod asked for that is in use is a configuration error (code 7), so
    /// an ADD never creates — and its rollback never deletes — an interface that is not its own.
    func avoiding(_ inUse: InterfacesInUse) throws(CNIError) -> [PlannedNetwork] {
        var taken = Set(inUse.keys)
        for n in self where !n.ifnameGenerated {
            if let holder = inUse[n.ifname] {
                throw CNIError(.invalidNetworkConfig,
                               "interface name \"\(n.ifname)\" of network \"\(n.displayName)\" is already taken in this container (by \(holder))")
            }
            taken.insert(n.ifname)
        }
        var out = self
        for i in out.indices where out[i].ifnameGenerated {
            if taken.contains(out[i].ifname) {
                var k = 1
                while taken.contains("net\(k)") { k += 1 }
                out[i].ifname = "net\(k)"
            }
            taken.insert(out[i].ifname)
        }
        return out
    }

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
