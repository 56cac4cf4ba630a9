/// The configuration values the selection planner needs (from the Plexus/Multus configuration and the runtime).
public struct SelectionPlanConfig: Sendable, Equatable {
    /// The cluster network's interface name: the runtime's `CNI_IFNAME` (usually `eth0`).
    public var clusterNetworkIfname: String
    /// How many networks precede the annotation networks in the combined list: the cluster network plus the
    /// configured `defaultNetworks`. Values below 1 are treated as 1 (the cluster network always exists).
    public var precedingNetworkCount: Int
    /// Multus `namespaceIsolation`: a pod may reference NADs only in its own namespace or in `globalNamespaces`.
    public var namespaceIsolation: Bool
    public var globalNamespaces: [String]
    /// The namespace of a `v1.multus-cni.io/default-network` reference that names none.
    public var multusNamespace: String

    public init(
        clusterNetworkIfname: String = "eth0", precedingNetworkCount: Int = 1, namespaceIsolation: Bool = false,
        globalNamespaces: [String] = [], multusNamespace: String = "kube-system"
    ) {
        self.clusterNetworkIfname = clusterNetworkIfname
        self.precedingNetworkCount = precedingNetworkCount
        self.namespaceIsolation = namespaceIsolation
        self.globalNamespaces = globalNamespaces
        self.multusNamespace = multusNamespace
    }
}

/// The pod-side input of the planner: identity and the raw annotation values (`nil` or blank = absent).
public struct SelectionPlanInput: Sendable, Equatable {
    public var podNamespace: String
    public var podName: String
    /// `k8s.v1.cni.cncf.io/networks`.
    public var networksAnnotation: String?
    /// `v1.multus-cni.io/default-network`.
    public var defaultNetworkAnnotation: String?

    public init(podNamespace: String, podName: String, networksAnnotation: String? = nil,
                defaultNetworkAnnotation: String? = nil) {
        self.podNamespace = podNamespace
        self.podName = podName
        self.networksAnnotation = networksAnnotation
        self.defaultNetworkAnnotation = defaultNetworkAnnotation
    }
}

/// One NAD-backed attachment the pod asked for, with its final interface name.
///
/// Invariant: `index` is the position in the combined delegate list (cluster network = 0, then `defaultNetworks`,
/// then annotation networks in annotation order). `ifname` is the requested name, or the cluster interface for the
/// default-network override, or `net<index>`; it is unique within a plan.
public struct NetworkReference: Sendable, Equatable {
    public var namespace: String
    public var name: String
    public var ifname: String
    /// Whether `ifname` was requested by the annotation (as opposed to generated or inherited).
    public var ifnameRequested: Bool
    public var index: Int
    /// True for the `v1.multus-cni.io/default-network` override, which replaces the cluster network.
    public var isDefaultNetwork: Bool
    /// The validated selection element with the per-network request values (ips, mac, cni-args, ...).
    public var request: NetworkSelectionElement

    public init(namespace: String, name: String, ifname: String, ifnameRequested: Bool, index: Int,
                isDefaultNetwork: Bool, request: NetworkSelectionElement) {
        self.namespace = namespace
        self.name = name
        self.ifname = ifname
        self.ifnameRequested = ifnameRequested
        self.index = index
        self.isDefaultNetwork = isDefaultNetwork
        self.request = request
    }

    /// `namespace/name`: the NAD to fetch and the network-status `name`.
    public var qualifiedName: String { "\(namespace)/\(name)" }
}

/// The planner's output: which NADs to attach, in order, with interface names. Nothing has been attached yet.
///
/// Invariant: interface names are unique across the cluster network, the configured `defaultNetworks` (`net1` ...
/// `net<precedingNetworkCount-1>`) and every reference; at most one reference carries `default-route`.
public struct SelectionPlan: Sendable, Equatable {
    /// The default-network override (index 0, the cluster interface), if the pod set the annotation.
    public var defaultNetwork: NetworkReference?
    /// Annotation networks in annotation order.
    public var networks: [NetworkReference]

    public init(defaultNetwork: NetworkReference?, networks: [NetworkReference]) {
        self.defaultNetwork = defaultNetwork
        self.networks = networks
    }

    /// All references in attach order: the override first (if any), then the annotation networks.
    public var references: [NetworkReference] {
        if let defaultNetwork { return [defaultNetwork] + networks }
        return networks
    }
}

/// Why a pod's network selection cannot be planned. Every case is detected before any delegate runs.
public enum SelectionPlanError: Error, Sendable, Equatable, CustomStringConvertible {
    case selection(SelectionError)
    /// Two attachments would get the same interface name; `first` and `second` describe them.
    case duplicateInterface(ifname: String, first: String, second: String)
    /// Namespace isolation forbids the pod in `podNamespace` from referencing `network` (`ns/name`).
    case namespaceIsolation(pod: String, network: String, annotation: String)
    /// The default-network override requested an interface other than the cluster interface.
    case defaultNetworkInterface(requested: String, expected: String)
    /// Both annotations ask for the default route of one address family.
    case multipleDefaultRoutes(first: String, second: String, family: String)
    /// The runtime's `CNI_IFNAME` is not a valid interface name.
    case invalidClusterInterface(String)
    /// The annotation names more networks than a pod may have (each one costs an API request and a delegate run).
    case tooManyNetworks(count: Int, maximum: Int)

    public var description: String {
        switch self {
        case .selection(let e): return e.description
        case .duplicateInterface(let ifname, let first, let second):
            return "interface name \(SelectionError.quote(ifname)) of \(second) is already used by \(first)"
        case .namespaceIsolation(let pod, let network, let annotation):
            return "namespace isolation: pod \(pod) may not reference network \(network) (\(annotation)); "
                + "only its own namespace and the global namespaces are allowed"
        case .defaultNetworkInterface(let requested, let expected):
            return "the default network must use the runtime's interface \(SelectionError.quote(expected)), "
                + "not \(SelectionError.quote(requested))"
        case .multipleDefaultRoutes(let first, let second, let family):
            return "the \(family) default route is requested by both \(first) and \(second); one attachment per address family may carry it"
        case .invalidClusterInterface(let name):
            return "CNI_IFNAME \(SelectionError.quote(name)) is not a valid interface name"
        case .tooManyNetworks(let count, let maximum):
            return "the pod asks for \(count) networks; at most \(maximum) are allowed"
        }
    }
}

/// Turns the pod's selection annotations into an ordered, validated attachment plan (pure).
///
/// Interface naming follows Multus `getIfname`: a requested name wins; the default-network override uses the
/// cluster interface; any other network at combined index `i` gets `net<i>`. A requested name does not renumber
/// the others (`macvlan1`, `net2`). Unlike Multus, collisions (a requested name equal to the cluster interface, to a
/// `defaultNetworks` `net<i>`, to another attachment's requested or generated name) fail the plan instead of
/// surfacing later as "interface already exists" after a partial attach.
///
/// Namespace isolation, when enabled, also applies to the default-network annotation (Multus checks only the
/// networks annotation); an operator who wants pods to pick default networks from `multusNamespace` lists it in
/// `globalNamespaces`. Unlike Multus, a requested interface on the default-network override must equal the
/// cluster interface, since the runtime reads the pod IP from `CNI_IFNAME`.
public enum SelectionPlanner {
    /// The most annotation networks one pod may ask for. Far beyond any real pod, and it bounds the API requests,
    /// delegate runs and cache files a single annotation can cause (a 96 KB shorthand annotation names 16 000).
    public static let maximumNetworks = 256

    public static func plan(_ input: SelectionPlanInput, config: SelectionPlanConfig)
        throws(SelectionPlanError) -> SelectionPlan
    {
        let clusterIf = config.clusterNetworkIfname
        guard AddressSyntax.isInterfaceName(clusterIf) else { throw .invalidClusterInterface(clusterIf) }
        let preceding = max(config.precedingNetworkCount, 1)
        let pod = "\(input.podNamespace)/\(input.podName)"

        var defaultElement: NetworkSelectionElement? = nil
        var elements: [NetworkSelectionElement] = []
        do {
            if let value = input.defaultNetworkAnnotation {
                defaultElement = try NetworkSelection.parseDefaultNetwork(value, multusNamespace: config.multusNamespace)
            }
            if let value = input.networksAnnotation, !NetworkSelection.isBlank(value) {
                elements = try NetworkSelection.parse(value, defaultNamespace: input.podNamespace)
            }
        } catch {
            throw .selection(error)
        }
        if elements.count > maximumNetworks { throw .tooManyNetworks(count: elements.count, maximum: maximumNetworks) }

        func checkIsolation(_ e: NetworkSelectionElement, annotation: String) throws(SelectionPlanError) {
            guard config.namespaceIsolation, e.namespace != input.podNamespace,
                !config.globalNamespaces.contains(e.namespace)
            else { return }
            throw .namespaceIsolation(pod: pod, network: e.qualifiedName, annotation: annotation)
        }

        // Interface owners, in combined-list order, for collision messages.
        var used: [String: String] = [:]
        func claim(_ ifname: String, owner: String) throws(SelectionPlanError) {
            if let prior = used[ifname] {
                throw .duplicateInterface(ifname: ifname, first: prior, second: owner)
            }
            used[ifname] = owner
        }

        var defaultRef: NetworkReference? = nil
        if let e = defaultElement {
            try checkIsolation(e, annotation: NetworkSelection.defaultNetworkAnnotation)
            if let requested = e.interfaceRequest, requested != clusterIf {
                throw .defaultNetworkInterface(requested: requested, expected: clusterIf)
            }
            defaultRef = NetworkReference(
                namespace: e.namespace, name: e.name, ifname: clusterIf, ifnameRequested: e.interfaceRequest != nil,
                index: 0, isDefaultNetwork: true, request: e)
            try claim(clusterIf, owner: "default network \(e.qualifiedName)")
        } else {
            try claim(clusterIf, owner: "the cluster network")
        }
        for i in 1..<preceding {
            try claim("net\(i)", owner: "defaultNetworks[\(i - 1)]")
        }

        // Generated names are claimed before requested ones are checked against them, so a requested `net3` that
        // collides with the generated name of a later element is reported as well.
        var refs: [NetworkReference] = []
        refs.reserveCapacity(elements.count)
        for (k, e) in elements.enumerated() {
            try checkIsolation(e, annotation: NetworkSelection.networksAnnotation)
            let index = preceding + k
            refs.append(NetworkReference(
                namespace: e.namespace, name: e.name, ifname: e.interfaceRequest ?? "net\(index)",
                ifnameRequested: e.interfaceRequest != nil, index: index, isDefaultNetwork: false, request: e))
        }
        for (k, r) in refs.enumerated() where !r.ifnameRequested {
            try claim(r.ifname, owner: "\(r.qualifiedName) (element \(k))")
        }
        for (k, r) in refs.enumerated() where r.ifnameRequested {
            try claim(r.ifname, owner: "\(r.qualifiedName) (element \(k))")
        }

        if let d = defaultRef {
            for family in DefaultRouteRequest.families(d.request.defaultRoute ?? []) {
                if let k = refs.firstIndex(where: { DefaultRouteRequest.families($0.request.defaultRoute ?? []).contains(family) }) {
                    throw .multipleDefaultRoutes(
                        first: "default network \(d.qualifiedName)", second: "\(refs[k].qualifiedName) (element \(k))",
                        family: family.description)
                }
            }
        }
        return SelectionPlan(defaultNetwork: defaultRef, networks: refs)
    }
}
