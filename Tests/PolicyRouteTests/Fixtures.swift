import CNISpec
@testable import PolicyRoute

/// Merged results as Plexus builds a finalizer's prevResult: each attachment's interfaces concatenated (the bridge
/// plugin reports the bridge and the host veth, without sandbox, then the pod interface), `ips[].interface`
/// re-indexed into the concatenation.
enum Fixture {
    static let netns = "/var/run/netns/pxprpod"

    /// eth0 (cluster, 10.231.160.5/24 via .1), net1 (10.231.161.5/24 via .1), net2 (10.231.162.7/24, no gateway).
    static let threeNetworks = """
        {"cniVersion":"1.0.0",
         "interfaces":[
           {"name":"cni0","mac":"aa:00:00:00:00:01"},
           {"name":"veth1","mac":"aa:00:00:00:00:02"},
           {"name":"eth0","mac":"aa:00:00:00:00:03","sandbox":"\(netns)"},
           {"name":"pxbr1","mac":"aa:00:00:00:00:04"},
           {"name":"veth2","mac":"aa:00:00:00:00:05"},
           {"name":"net1","mac":"aa:00:00:00:00:06","sandbox":"\(netns)"},
           {"name":"pxbr2","mac":"aa:00:00:00:00:07"},
           {"name":"veth3","mac":"aa:00:00:00:00:08"},
           {"name":"net2","mac":"aa:00:00:00:00:09","sandbox":"\(netns)"}],
         "ips":[
           {"address":"10.231.160.5/24","gateway":"10.231.160.1","interface":2},
           {"address":"10.231.161.5/24","gateway":"10.231.161.1","interface":5},
           {"address":"10.231.162.7/24","interface":8}],
         "routes":[{"dst":"0.0.0.0/0","gw":"10.231.160.1"}],
         "dns":{}}
        """

    /// eth0 and a dual-stack net1 (two IPv4 addresses in one subnet, one IPv6 address), in the 0.4.0 format.
    static let dualStack040 = """
        {"cniVersion":"0.4.0",
         "interfaces":[
           {"name":"eth0","sandbox":"\(netns)"},
           {"name":"net1","sandbox":"\(netns)"}],
         "ips":[
           {"version":"4","address":"10.231.160.5/24","gateway":"10.231.160.1","interface":0},
           {"version":"4","address":"10.231.161.5/24","gateway":"10.231.161.1","interface":1},
           {"version":"4","address":"10.231.161.6/24","gateway":"10.231.161.254","interface":1},
           {"version":"6","address":"fd31:16:0:1::5/64","gateway":"fd31:16:0:1::1","interface":1}],
         "dns":{}}
        """

    static func config(_ version: String = "1.0.0", prevResult: String? = threeNetworks, extra: String = "") -> String {
        var s = #"{"cniVersion":"\#(version)","name":"policy","type":"plexus-policy-route""#
        if !extra.isEmpty { s += "," + extra }
        if let prevResult { s += #","prevResult":"# + prevResult }
        return s + "}"
    }

    static func result(_ text: String, version: String = "1.0.0") throws -> CNIResult {
        try CNIResult.parse(try JSON.parse(text), defaultVersion: version)
    }

    static func plan(_ text: String = threeNetworks, options: PolicyOptions = PolicyOptions(), ifname: String = "eth0") throws -> PolicyPlan {
        try PolicyPlan.make(options: options, result: try result(text), clusterInterface: ifname)
    }

    static func prefix(_ s: String) -> InetPrefix {
        guard let p = InetPrefix(s) else { fatalError("bad fixture prefix \(s)") }
        return p
    }

    static func address(_ s: String) -> InetAddress {
        guard let a = InetAddress(s) else { fatalError("bad fixture address \(s)") }
        return a
    }

    static func environment(_ command: String, netns: String? = Fixture.netns, ifname: String = "eth0") -> [String: String] {
        var env = ["CNI_COMMAND": command, "CNI_CONTAINERID": "c0ffee", "CNI_IFNAME": ifname]
        if let netns { env["CNI_NETNS"] = netns }
        return env
    }
}

/// A namespace that behaves like the kernel for what the plugin does: rules are added unless identical (EXCL),
/// deleted by source/table/priority (the first in priority order), routes replaced by table and destination.
final class FakeNetns: PolicyNetns, PolicyNetnsSession {
    var exists = true
    var links: [String: Int32] = ["lo": 1, "eth0": 2, "net1": 3, "net2": 4]
    var rules: [ObservedRule] = [
        ObservedRule(source: nil, table: 255, priority: 0),
        ObservedRule(source: nil, table: 254, priority: 32766),
        ObservedRule(source: nil, table: 253, priority: 32767),
    ]
    var routes: [ObservedRoute] = []
    var operations: [String] = []
    var opened = 0
    /// Fail the n-th addRule (1-based) with this error.
    var failAddRule: (Int, CNIError)?
    var addRuleCalls = 0

    func open(_ path: String) throws(CNIError) -> (any PolicyNetnsSession)? {
        opened += 1
        return exists ? self : nil
    }

    func interfaceIndices() throws(CNIError) -> [String: Int32] { links }

    func rules(family: InetFamily) throws(CNIError) -> [ObservedRule] {
        rules.filter { $0.source == nil || $0.source?.family == family }
    }

    func routes(family: InetFamily) throws(CNIError) -> [ObservedRoute] { routes.filter { $0.destination.family == family } }

    func addRule(_ rule: PlannedRule) throws(CNIError) {
        addRuleCalls += 1
        if let (n, error) = failAddRule, n == addRuleCalls { throw error }
        operations.append("add rule \(rule)")
        let r = ObservedRule(source: rule.source, table: rule.table, priority: rule.priority)
        if rules.contains(r) { return }
        rules.append(r)
        rules.sort { $0.priority < $1.priority }
    }

    func deleteRule(_ rule: PlannedRule) throws(CNIError) {
        operations.append("delete rule \(rule)")
        if let i = rules.firstIndex(where: { $0.source == rule.source && $0.table == rule.table && $0.priority == rule.priority }) {
            rules.remove(at: i)
        }
    }

    func replaceRoute(_ route: PlannedRoute, interfaceIndex: Int32) throws(CNIError) {
        operations.append("replace route \(route)")
        let r = ObservedRoute(destination: route.destination, table: route.table, outputInterface: interfaceIndex,
                              gateway: route.gateway, preferredSource: route.preferredSource,
                              scope: route.family == .ipv6 ? 0 : (route.scope == .link ? 253 : 0),
                              metric: route.family == .ipv6 ? 1024 : nil)
        if let i = routes.firstIndex(where: { $0.table == r.table && $0.destination == r.destination }) {
            routes[i] = r
        } else {
            routes.append(r)
        }
    }

    func deleteRoute(_ route: ObservedRoute) throws(CNIError) {
        operations.append("delete route \(route.destination) table \(route.table)")
        routes.removeAll { $0 == route }
    }
}
