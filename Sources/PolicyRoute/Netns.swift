import CNISpec

/// A FIB rule as the pod's kernel reports it.
public struct ObservedRule: Sendable, Equatable {
    /// nil: `from all`.
    public var source: InetPrefix?
    public var table: UInt32
    public var priority: UInt32
    /// Whether the rule is `from <source> lookup <table>` and nothing else (no destination, interface, mark, tos,
    /// inversion or other selector). Only such a rule counts as a planned one.
    public var isPlainSourceLookup: Bool

    public init(source: InetPrefix?, table: UInt32, priority: UInt32, isPlainSourceLookup: Bool = true) {
        self.source = source
        self.table = table
        self.priority = priority
        self.isPlainSourceLookup = isPlainSourceLookup
    }

    /// Whether this is exactly `rule`.
    public func matches(_ rule: PlannedRule) -> Bool {
        isPlainSourceLookup && source == rule.source && table == rule.table && priority == rule.priority
    }
}

/// A route as the pod's kernel reports it, with what an exact delete needs (metric, tos, protocol, type).
public struct ObservedRoute: Sendable, Equatable {
    /// The kernel's RT_SCOPE_LINK and RT_SCOPE_UNIVERSE.
    public static let scopeLink: UInt8 = 253
    public static let scopeUniverse: UInt8 = 0
    /// RTN_UNICAST.
    public static let typeUnicast: UInt8 = 1

    public var destination: InetPrefix
    public var table: UInt32
    public var outputInterface: Int32?
    public var gateway: InetAddress?
    public var preferredSource: InetAddress?
    public var scope: UInt8
    public var type: UInt8
    public var isMultipath: Bool
    public var metric: UInt32?
    public var tos: UInt8
    public var protocolID: UInt8

    public init(destination: InetPrefix, table: UInt32, outputInterface: Int32?, gateway: InetAddress? = nil,
                preferredSource: InetAddress? = nil, scope: UInt8, type: UInt8 = ObservedRoute.typeUnicast,
                isMultipath: Bool = false, metric: UInt32? = nil, tos: UInt8 = 0, protocolID: UInt8 = 4) {
        self.destination = destination
        self.table = table
        self.outputInterface = outputInterface
        self.gateway = gateway
        self.preferredSource = preferredSource
        self.scope = scope
        self.type = type
        self.isMultipath = isMultipath
        self.metric = metric
        self.tos = tos
        self.protocolID = protocolID
    }

    /// Whether this is `route` out of the interface with index `interfaceIndex`. IPv6 keeps no route scope, so the
    /// scope is compared for IPv4 only.
    public func matches(_ route: PlannedRoute, interfaceIndex: Int32) -> Bool {
        guard table == route.table, destination == route.destination, type == ObservedRoute.typeUnicast, !isMultipath,
              tos == 0, outputInterface == interfaceIndex, gateway == route.gateway,
              preferredSource == route.preferredSource else { return false }
        guard route.family == .ipv4 else { return true }
        return scope == (route.scope == .link ? ObservedRoute.scopeLink : ObservedRoute.scopeUniverse)
    }
}

/// The pod's network namespace as policy routing sees it. The executable implements it over netlink; tests with a
/// table. Implementations make the changes idempotent: adding a rule the kernel has, deleting a rule or route it
/// lacks, succeed.
public protocol PolicyNetnsSession: AnyObject {
    /// Interface name → index.
    func interfaceIndices() throws(CNIError) -> [String: Int32]
    func rules(family: InetFamily) throws(CNIError) -> [ObservedRule]
    /// The routes of `family` in every table.
    func routes(family: InetFamily) throws(CNIError) -> [ObservedRoute]
    func addRule(_ rule: PlannedRule) throws(CNIError)
    func deleteRule(_ rule: PlannedRule) throws(CNIError)
    /// Installs `route` out of `interfaceIndex`, replacing the route of the same destination in its table.
    func replaceRoute(_ route: PlannedRoute, interfaceIndex: Int32) throws(CNIError)
    func deleteRoute(_ route: ObservedRoute) throws(CNIError)
}

/// Opens sessions in network namespaces.
public protocol PolicyNetns {
    /// A session in the namespace at `path`; nil when that namespace does not exist (any more).
    func open(_ path: String) throws(CNIError) -> (any PolicyNetnsSession)?
}

extension PolicyPlan {
    /// The index of every planned interface (code 7 naming those the namespace lacks).
    func interfaceIndices(in session: any PolicyNetnsSession) throws(CNIError) -> [String: Int32] {
        let all = try session.interfaceIndices()
        let missing = interfaces.map(\.name).filter { all[$0] == nil }
        if !missing.isEmpty {
            throw CNIError(.invalidNetworkConfig,
                           "prevResult names interface\(missing.count == 1 ? "" : "s") \(missing.joined(separator: ", ")), not in the pod's netns",
                           details: "the netns has \(all.keys.sorted().joined(separator: ", "))")
        }
        return all
    }

    /// ADD: every planned route (replacing what the tables hold for the same destinations), then every planned
    /// rule the kernel lacks, so a rule never points at an incomplete table and a repeated ADD changes nothing.
    /// When a step fails, the rules this call added are removed again (the tables are inert without them) and the
    /// error is thrown.
    public func install(in session: any PolicyNetnsSession) throws(CNIError) {
        guard !isEmpty else { return }
        let indices = try interfaceIndices(in: session)
        var added: [PlannedRule] = []
        do throws(CNIError) {
            for route in routes {
                guard let index = indices[route.interface] else { continue }  // checked above
                try session.replaceRoute(route, interfaceIndex: index)
            }
            for family in InetFamily.allCases {
                let wanted = rules.filter { $0.family == family }
                if wanted.isEmpty { continue }
                let existing = try session.rules(family: family)
                for rule in wanted where !existing.contains(where: { $0.matches(rule) }) {
                    try session.addRule(rule)
                    added.append(rule)
                }
            }
        } catch {
            for rule in added.reversed() { try? session.deleteRule(rule) }
            throw error
        }
    }

    /// CHECK: every planned rule and route is in place; otherwise a code-999 error naming each missing one.
    public func verify(in session: any PolicyNetnsSession) throws(CNIError) {
        guard !isEmpty else { return }
        let indices = try interfaceIndices(in: session)
        var missing: [String] = []
        for family in InetFamily.allCases {
            let wantedRules = rules.filter { $0.family == family }
            let wantedRoutes = routes.filter { $0.family == family }
            if !wantedRules.isEmpty {
                let existing = try session.rules(family: family)
                for rule in wantedRules where !existing.contains(where: { $0.matches(rule) }) {
                    missing.append("rule \(rule)")
                }
            }
            if !wantedRoutes.isEmpty {
                let existing = try session.routes(family: family)
                for route in wantedRoutes {
                    let index = indices[route.interface] ?? -1
                    if !existing.contains(where: { $0.matches(route, interfaceIndex: index) }) {
                        missing.append("route \(route)")
                    }
                }
            }
        }
        if !missing.isEmpty {
            throw CNIError(.internalError, "policy routing is not in place: missing \(missing.joined(separator: "; "))")
        }
    }

    /// DEL: every rule that is exactly a planned one (each copy of it), then every route of the planned families in
    /// the planned tables. Rules at other priorities or with other selectors, other tables, and families a table was
    /// not planned for are never touched. Interfaces need not exist any more.
    public func remove(from session: any PolicyNetnsSession) throws(CNIError) {
        guard !isEmpty else { return }
        for family in InetFamily.allCases {
            let planned = rules.filter { $0.family == family }
            if !planned.isEmpty {
                let existing = try session.rules(family: family)
                for rule in planned {
                    for _ in existing.filter({ $0.matches(rule) }) { try session.deleteRule(rule) }
                }
            }
            let tables = Set(interfaces.filter { $0.families.contains(family) }.map(\.table))
            if !tables.isEmpty {
                for route in try session.routes(family: family) where tables.contains(route.table) {
                    try session.deleteRoute(route)
                }
            }
        }
    }
}
