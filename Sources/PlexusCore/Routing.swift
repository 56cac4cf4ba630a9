import CNIInvoke
import CNISpec
import NetAttach
import SystemKit

/// One main-table default route of a pod's netns.
public struct DefaultRouteFact: Sendable, Equatable {
    public var family: AddressFamily
    /// The interfaces it leaves through (more than one for a multipath route).
    public var interfaces: [String]
    /// Canonical gateway text, nil for a device route.
    public var gateway: String?

    public init(family: AddressFamily, interfaces: [String], gateway: String?) {
        self.family = family
        self.interfaces = interfaces
        self.gateway = gateway
    }
}

/// What the kernel says about a pod's netns after the ADD: its interfaces and its default routes.
public struct NetnsSnapshot: Sendable, Equatable {
    public var interfaces: [String: InterfaceFacts]
    public var defaultRoutes: [DefaultRouteFact]

    public init(interfaces: [String: InterfaceFacts] = [:], defaultRoutes: [DefaultRouteFact] = []) {
        self.interfaces = interfaces
        self.defaultRoutes = defaultRoutes
    }
}

/// Reads and changes a pod netns' routes (netlink in the real binary, a table in tests). Only ADDs and CHECKs that
/// need it call it: VERSION, DEL, GC and STATUS never do.
public protocol NetnsRouting: Sendable {
    /// The netns' interfaces (MAC, MTU, global addresses, default gateways) and its main-table default routes.
    func snapshot(netns: String) throws(CNIError) -> NetnsSnapshot
    /// Makes the route via `gateway` on `ifname` the only default route of the gateway's address family; the other
    /// family's routes stay untouched.
    func setDefaultRoute(netns: String, ifname: String, gateway: IPAddress) throws(CNIError)
}

/// One `default-route` request of a planned attachment.
struct DefaultRouteRequestItem {
    var index: Int
    var network: PlannedNetwork
    var family: AddressFamily
    var gateway: IPAddress
}

extension Plexus {
    /// Every family a network's `default-route` names, in network order. The selection parser already refused two
    /// networks claiming one family; this re-checks plans from any planner (code 7, before anything is attached).
    static func defaultRouteRequests(_ networks: [PlannedNetwork]) throws(CNIError) -> [DefaultRouteRequestItem] {
        var out: [DefaultRouteRequestItem] = []
        for (i, n) in networks.enumerated() {
            for (family, gw) in DefaultRouteRequest.gateways(n.defaultRoute ?? []) {
                if let other = out.first(where: { $0.family == family }) {
                    throw CNIError(.invalidNetworkConfig,
                                   "the \(family) default route is requested by both \"\(other.network.displayName)\" and \"\(n.displayName)\"")
                }
                out.append(DefaultRouteRequestItem(index: i, network: n, family: family, gateway: gw))
            }
        }
        return out
    }

    /// After every network is attached: moves each requested family's default route to the requested attachment
    /// and rewrites the results (returned, cached) to match the kernel. A failure is thrown for the ADD to roll back.
    func applyDefaultRoutes(_ attached: inout [(network: PlannedNetwork, result: JSON)],
                            requests: [DefaultRouteRequestItem]) throws(CNIError) {
        guard !requests.isEmpty else { return }
        guard let routing else {
            throw CNIError(.internalError, "default-route was requested but this build of Plexus cannot change routes")
        }
        let started = Clock.monotonicNanoseconds()
        var changed = Set<Int>()
        for r in requests {
            do { try routing.setDefaultRoute(netns: invocation.netns, ifname: r.network.ifname, gateway: r.gateway) } catch {
                throw error.prefixed("network \"\(r.network.displayName)\" (\(r.network.ifname)): default-route \(r.gateway)")
            }
            for i in attached.indices {
                guard case .object(let o) = attached[i].result else { continue }
                let moved = JSON.object(ResultRoutes.movingDefault(o, family: r.family, to: i == r.index ? r.gateway : nil))
                if moved != attached[i].result {
                    attached[i].result = moved
                    changed.insert(i)
                }
            }
        }
        let routed = millis(since: started)
        for i in changed.sorted() {
            let n = attached[i].network
            try writeCache(n, result: attached[i].result, netns: invocation.netns,
                           cniArgs: Plexus.cniArgs(for: n, runtimeArgs: invocation.cniArgs, clusterIfname: invocation.ifname))
        }
        logger.verbose("default routes set", [("requests", String(requests.count)), ("results", String(changed.count)),
                                              ("routes_ms", routed), ("ms", millis(since: started))])
    }

    /// The netns as the kernel sees it, for network-status; nil (logged) when it cannot be read, so the status is
    /// built from the results instead.
    func interfaceFacts() -> NetnsSnapshot? {
        guard let routing else { return nil }
        do { return try routing.snapshot(netns: invocation.netns) } catch {
            logger.warning("cannot read the pod's interfaces, network-status is built from the results",
                           [("netns", invocation.netns), ("error", error.description)])
            return nil
        }
    }

    /// CHECK of the requested default routes: for each requested family exactly one default route, via the
    /// requested gateway, out of the requested interface.
    func checkDefaultRoutes(_ networks: [PlannedNetwork]) throws(CNIError) {
        let requests = try Plexus.defaultRouteRequests(networks)
        guard !requests.isEmpty else { return }
        guard let routing else {
            logger.warning("default routes not checked: this build of Plexus cannot read routes")
            return
        }
        let snapshot = try routing.snapshot(netns: invocation.netns)
        for r in requests {
            let routes = snapshot.defaultRoutes.filter { $0.family == r.family }
            let expected = DefaultRouteFact(family: r.family, interfaces: [r.network.ifname], gateway: r.gateway.description)
            if routes != [expected] {
                let found = routes.isEmpty ? "none" : routes.map { "via \($0.gateway ?? "-") dev \($0.interfaces.joined(separator: ","))" }.joined(separator: "; ")
                throw CNIError(.internalError,
                               "network \"\(r.network.displayName)\" (\(r.network.ifname)): the \(r.family) default route should be only via \(r.gateway) dev \(r.network.ifname); the pod has \(found)")
            }
        }
    }
}
