import CNISpec

/// `from <address>/32|/128 lookup <table> priority <priority>`.
public struct PlannedRule: Sendable, Hashable, CustomStringConvertible {
    /// A host prefix.
    public var source: InetPrefix
    public var table: UInt32
    public var priority: UInt32

    public init(source: InetPrefix, table: UInt32, priority: UInt32) {
        self.source = source
        self.table = table
        self.priority = priority
    }

    public var family: InetFamily { source.family }
    public var description: String { "from \(source) lookup \(table) priority \(priority)" }
}

/// A route of an interface's table: the link-scope route of one of its subnets (`<network> dev <if> src <address>
/// scope link`) or its default route (`default via <gateway> dev <if>`).
public struct PlannedRoute: Sendable, Hashable, CustomStringConvertible {
    public enum Scope: Sendable, Hashable { case link, universe }

    public var interface: String
    public var table: UInt32
    /// The destination network (host bits clear); `/0` for the default route.
    public var destination: InetPrefix
    public var gateway: InetAddress?
    public var preferredSource: InetAddress?
    public var scope: Scope

    public init(interface: String, table: UInt32, destination: InetPrefix, gateway: InetAddress? = nil,
                preferredSource: InetAddress? = nil, scope: Scope) {
        self.interface = interface
        self.table = table
        self.destination = destination
        self.gateway = gateway
        self.preferredSource = preferredSource
        self.scope = scope
    }

    public var family: InetFamily { destination.family }
    public var isDefault: Bool { destination.length == 0 }

    /// `ip route` style: `10.231.161.0/24 dev net1 src 10.231.161.5 scope link table 100`.
    public var description: String {
        var s = isDefault ? "default" : destination.description
        if let gateway { s += " via \(gateway)" }
        s += " dev \(interface)"
        if let preferredSource { s += " src \(preferredSource)" }
        if scope == .link { s += " scope link" }
        return s + " table \(table)"
    }
}

/// One secondary interface with its table and the rules and routes that send its addresses' replies back out of it.
public struct PlannedInterface: Sendable, Equatable {
    public var name: String
    /// Its index in the prevResult's `interfaces`.
    public var resultIndex: Int
    public var table: UInt32
    public var priority: UInt32
    /// Its addresses in prevResult order (duplicates removed).
    public var addresses: [InetPrefix]
    public var rules: [PlannedRule]
    /// Subnet routes first, then at most one default route per family.
    public var routes: [PlannedRoute]

    /// The address families the plan puts in this interface's table.
    public var families: [InetFamily] { InetFamily.allCases.filter { f in routes.contains { $0.family == f } } }
}

/// What `plexus-policy-route` installs in a pod: for the k-th secondary interface (k = 1, 2, …) table
/// `tableBase + k - 1` holds a link-scope route to each of its subnets with that address as the source, plus a
/// default route via the address's gateway (the first one of each family); a rule `from <address> lookup <table>` at
/// priority `rulePriority + k - 1` sends every packet from one of its addresses to that table.
///
/// A prevResult interface is secondary, in prevResult order, when it is not `CNI_IFNAME` (the cluster network keeps
/// the main table), has a non-empty `sandbox` (host-side interfaces such as bridges and veth peers have none), owns
/// at least one `ips` entry (through `ips[].interface`; entries without an index are not attributed), and, when
/// `interfaces` is set, is listed there. Entries of the same name are merged (the first position counts).
public struct PolicyPlan: Sendable, Equatable {
    public var interfaces: [PlannedInterface]

    public init(interfaces: [PlannedInterface]) { self.interfaces = interfaces }

    public var rules: [PlannedRule] { interfaces.flatMap(\.rules) }
    public var routes: [PlannedRoute] { interfaces.flatMap(\.routes) }
    public var isEmpty: Bool { interfaces.isEmpty }

    /// Computes the plan. Every `ips` entry is validated, not only the secondary interfaces' ones: an address that
    /// is not CIDR text, a gateway that is not an address of that family, an `interface` index outside
    /// `interfaces`, a secondary interface name the kernel would refuse, or a table or priority the numbering pushes
    /// out of range is a code-7 error.
    public static func make(options: PolicyOptions, result: CNIResult, clusterInterface: String) throws(CNIError) -> PolicyPlan {
        // Validate and attribute every address.
        var byInterface: [Int: [(prefix: InetPrefix, gateway: InetAddress?)]] = [:]
        for (i, ip) in result.ips.enumerated() {
            guard let prefix = InetPrefix(ip.address) else {
                throw CNIError(.invalidNetworkConfig, "prevResult.ips[\(i)].address is not an address in CIDR notation",
                               details: CNIValidation.visible(ip.address))
            }
            var gateway: InetAddress?
            if let g = ip.gateway {
                guard let parsed = InetAddress(g) else {
                    throw CNIError(.invalidNetworkConfig, "prevResult.ips[\(i)].gateway is not an IP address",
                                   details: CNIValidation.visible(g))
                }
                guard parsed.family == prefix.family else {
                    throw CNIError(.invalidNetworkConfig, "prevResult.ips[\(i)].gateway is not of its address's family",
                                   details: "\(g) for \(ip.address)")
                }
                gateway = parsed
            }
            guard let index = ip.interface else { continue }
            guard index >= 0, index < result.interfaces.count else {
                throw CNIError(.invalidNetworkConfig, "prevResult.ips[\(i)].interface is out of range",
                               details: "index \(index), \(result.interfaces.count) interfaces")
            }
            byInterface[index, default: []].append((prefix, gateway))
        }

        // Pick the secondary interfaces, in prevResult order, merging entries of one name.
        var order: [(name: String, index: Int)] = []
        var addresses: [String: [(prefix: InetPrefix, gateway: InetAddress?)]] = [:]
        for (index, iface) in result.interfaces.enumerated() {
            guard iface.name != clusterInterface, !(iface.sandbox ?? "").isEmpty,
                  let owned = byInterface[index], !owned.isEmpty else { continue }
            if let only = options.interfaces, !only.contains(iface.name) { continue }
            if let problem = PolicyOptions.interfaceNameProblem(iface.name) {
                throw CNIError(.invalidNetworkConfig, "prevResult.interfaces[\(index)].name is not an interface name: \(problem)",
                               details: CNIValidation.visible(iface.name))
            }
            if addresses[iface.name] == nil { order.append((iface.name, index)) }
            addresses[iface.name, default: []] += owned
        }

        var planned: [PlannedInterface] = []
        for (k, entry) in order.enumerated() {
            let (table, tableOverflow) = options.tableBase.addingReportingOverflow(UInt32(k))
            if tableOverflow || PolicyOptions.reservedTables.contains(table) {
                throw CNIError(.invalidNetworkConfig,
                               "interface \(entry.name) would get routing table \(tableOverflow ? "beyond 4294967295" : String(table)), which is reserved",
                               details: "tableBase \(options.tableBase) with \(order.count) secondary interfaces; tables 253, 254 and 255 belong to the kernel")
            }
            let priority = options.rulePriority + UInt32(min(k, 40_000))
            if priority > PolicyOptions.maximumRulePriority {
                throw CNIError(.invalidNetworkConfig, "interface \(entry.name) would get rule priority \(priority), above \(PolicyOptions.maximumRulePriority)",
                               details: "rulePriority \(options.rulePriority) with \(order.count) secondary interfaces; the main table's rule is 32766")
            }
            planned.append(plan(interface: entry.name, index: entry.index, table: table, priority: priority,
                                addresses: addresses[entry.name] ?? []))
        }
        return PolicyPlan(interfaces: planned)
    }

    static func plan(interface: String, index: Int, table: UInt32, priority: UInt32,
                     addresses: [(prefix: InetPrefix, gateway: InetAddress?)]) -> PlannedInterface {
        var seenAddresses: Set<InetAddress> = []
        var prefixes: [InetPrefix] = []
        var rules: [PlannedRule] = []
        var subnets: [PlannedRoute] = []
        var defaults: [PlannedRoute] = []
        for (prefix, gateway) in addresses {
            guard seenAddresses.insert(prefix.address).inserted else { continue }
            prefixes.append(prefix)
            rules.append(PlannedRule(source: prefix.host, table: table, priority: priority))
            let network = prefix.network
            // One route per destination: a second address in the same subnet would only replace the first's.
            if !subnets.contains(where: { $0.destination == network }) {
                subnets.append(PlannedRoute(interface: interface, table: table, destination: network,
                                            preferredSource: prefix.address, scope: .link))
            }
            if let gateway, !defaults.contains(where: { $0.family == prefix.family }),
               let all = InetPrefix(address: InetAddress(bytes: [UInt8](repeating: 0, count: prefix.family.byteCount)) ?? prefix.address, length: 0) {
                defaults.append(PlannedRoute(interface: interface, table: table, destination: all, gateway: gateway, scope: .universe))
            }
        }
        return PlannedInterface(name: interface, resultIndex: index, table: table, priority: priority, addresses: prefixes,
                                rules: rules, routes: subnets + defaults)
    }
}
