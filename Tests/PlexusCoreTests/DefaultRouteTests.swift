import CNIInvoke
import CNISpec
import NetAttach
import SystemKit
import Testing
@testable import PlexusCore

/// A pod netns as a table: default routes per family, changed by `setDefaultRoute` the way the kernel would.
final class FakeRouting: NetnsRouting, @unchecked Sendable {
    var routes: [DefaultRouteFact]
    var calls: [String] = []
    var failure: CNIError?
    var snapshots = 0

    init(routes: [DefaultRouteFact] = []) { self.routes = routes }

    func snapshot(netns: String) throws(CNIError) -> NetnsSnapshot {
        snapshots += 1
        var interfaces: [String: InterfaceFacts] = [:]
        for name in ["eth0", "net1", "net2"] {
            interfaces[name] = InterfaceFacts(name: name, mac: "02:00:00:00:01:0\(name.last.map(String.init) ?? "0")", mtu: 1400,
                                              ips: ["10.9.\(name == "eth0" ? 0 : 1).2"],
                                              defaultGateways: routes.filter { $0.interfaces == [name] }.compactMap(\.gateway))
        }
        return NetnsSnapshot(interfaces: interfaces, defaultRoutes: routes)
    }

    func setDefaultRoute(netns: String, ifname: String, gateway: IPAddress) throws(CNIError) {
        calls.append("\(ifname) via \(gateway)")
        if let failure { throw failure }
        let f = AddressFamily(gateway)
        routes.removeAll { $0.family == f }
        routes.append(DefaultRouteFact(family: f, interfaces: [ifname], gateway: gateway.description))
    }
}

struct FixedPlanner: NetworkPlanner {
    var networks: [PlannedNetwork]
    func plan(config: PlexusConfig, invocation: CNIInvocation) throws(CNIError) -> [PlannedNetwork] { networks }
}

/// Records what the reporter was given.
final class RecordingReporter: AttachmentReporter, @unchecked Sendable {
    var facts: [NetnsSnapshot?] = []
    var reports: [[(network: PlannedNetwork, result: JSON)]] = []
    func report(invocation: CNIInvocation, attached: [(network: PlannedNetwork, result: JSON)], facts: NetnsSnapshot?) throws(CNIError) {
        self.facts.append(facts)
        reports.append(attached)
    }
}

@Suite struct DefaultRouteTests {
    let clusterResult = try! JSON.parse(#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.9.0.2/24","interface":0},{"address":"fd00::2/64","interface":0}],"routes":[{"dst":"0.0.0.0/0","gw":"10.9.0.1"},{"dst":"::/0","gw":"fd00::1"},{"dst":"10.99.0.0/16","gw":"10.9.0.1"}]}"#)

    func planned(_ dir: TempDir, net1Route: [String]?, net2Route: [String]? = nil) throws -> [PlannedNetwork] {
        [PlannedNetwork(list: try NetworkConfigList(json: try JSON.parse(net("A")), source: "t"), ifname: "eth0", isDefault: true),
         PlannedNetwork(list: try NetworkConfigList(json: try JSON.parse(net("B")), source: "t"), ifname: "net1",
                        displayName: "ns1/b", defaultRoute: net1Route),
         PlannedNetwork(list: try NetworkConfigList(json: try JSON.parse(net("C")), source: "t"), ifname: "net2",
                        displayName: "ns1/c", defaultRoute: net2Route)]
    }

    func make(_ dir: TempDir, _ inv: CNIInvocation, _ exec: FakeExecutor, _ routing: FakeRouting,
              networks: [PlannedNetwork], reporter: RecordingReporter? = nil) throws -> Plexus {
        Plexus(config: try makeConfig(dir, delegates: [net("A")]), invocation: inv, executor: exec,
               planner: FixedPlanner(networks: networks), reporter: reporter, routing: routing,
               logger: Logger(level: .panic, toStderr: false), sleep: { _ in })
    }

    func cachedResult(_ dir: TempDir, _ network: String, _ ifname: String) -> JSON? {
        if case .entry(let e) = ResultCache(cniDir: dir.path + "/cache").read(network: network, containerID: "c1", ifname: ifname) {
            return e.result
        }
        return nil
    }

    @Test func theRequestedFamilyMovesAfterEveryNetworkAndResultsFollow() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        exec.results["A"] = clusterResult
        let routing = FakeRouting()
        let out = try make(dir, try invocation("ADD"), exec, routing, networks: try planned(dir, net1Route: ["10.9.1.1"])).add()
        #expect(routing.calls == ["net1 via 10.9.1.1"])
        #expect(exec.calls.map(\.ifname) == ["eth0", "net1", "net2"])  // all attached before the route moved
        // eth0 keeps its IPv6 default and its other routes; only the IPv4 default left it.
        let routes = out["routes"]?.arrayValue?.map { $0["dst"]?.stringValue ?? "" }
        #expect(routes == ["::/0", "10.99.0.0/16"])
        #expect(cachedResult(dir, "A", "eth0")?["routes"]?.arrayValue?.count == 2)
        let net1Routes = cachedResult(dir, "B", "net1")?["routes"]?.arrayValue ?? []
        #expect(net1Routes == [.object(JSONObject([("dst", .string("0.0.0.0/0")), ("gw", .string("10.9.1.1"))]))])
        #expect(cachedResult(dir, "C", "net2")?["routes"] == nil)
    }

    @Test func bothFamiliesOnOneNetwork() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        exec.results["A"] = clusterResult
        let routing = FakeRouting()
        let out = try make(dir, try invocation("ADD"), exec, routing, networks: try planned(dir, net1Route: ["fd01::1", "10.9.1.1"])).add()
        #expect(routing.calls == ["net1 via fd01::1", "net1 via 10.9.1.1"])
        #expect(out["routes"]?.arrayValue?.map { $0["dst"]?.stringValue ?? "" } == ["10.99.0.0/16"])
    }

    @Test func twoNetworksOneFamilyIsCode7BeforeAnythingRuns() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let routing = FakeRouting()
        do {
            _ = try make(dir, try invocation("ADD"), exec, routing, networks: try planned(dir, net1Route: ["10.9.1.1"], net2Route: ["10.9.2.1"])).add()
            Issue.record("ADD succeeded")
        } catch let e as CNIError {
            #expect(e.code == .invalidNetworkConfig && e.msg.contains("IPv4") && e.msg.contains("ns1/b") && e.msg.contains("ns1/c"))
            #expect(e.msg.contains("ns1/pod1"))
        }
        #expect(exec.calls.isEmpty && routing.calls.isEmpty)
    }

    @Test func differentFamiliesOnTwoNetworks() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let routing = FakeRouting()
        _ = try make(dir, try invocation("ADD"), exec, routing, networks: try planned(dir, net1Route: ["10.9.1.1"], net2Route: ["fd02::1"])).add()
        #expect(routing.calls == ["net1 via 10.9.1.1", "net2 via fd02::1"])
    }

    @Test func aFailureRollsTheWholeAddBack() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let routing = FakeRouting()
        routing.failure = CNIError(.invalidNetworkConfig, "gateway 192.0.2.1 is not reachable through net1")
        do {
            _ = try make(dir, try invocation("ADD"), exec, routing, networks: try planned(dir, net1Route: ["192.0.2.1"])).add()
            Issue.record("ADD succeeded")
        } catch let e as CNIError {
            #expect(e.code == .invalidNetworkConfig)
            #expect(e.msg.contains("ns1/pod1") && e.msg.contains("ns1/b") && e.msg.contains("192.0.2.1"))
        }
        #expect(exec.live.isEmpty)
        #expect(exec.calls.map(\.command) == ["ADD", "ADD", "ADD", "DEL", "DEL", "DEL"])
        #expect(dir.files("cache/results").isEmpty && dir.files("cache/attachments").isEmpty)
    }

    @Test func emptyRequestAndNoRequestTouchNothing() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let routing = FakeRouting()
        _ = try make(dir, try invocation("ADD"), exec, routing, networks: try planned(dir, net1Route: [])).add()
        #expect(routing.calls.isEmpty && routing.snapshots == 0)
    }

    @Test func kernelFactsOnlyWhenAPodStatusIsWritten() throws {
        let dir = TempDir()
        let routing = FakeRouting()
        let reporter = RecordingReporter()
        _ = try make(dir, try invocation("ADD"), FakeExecutor(), routing, networks: try planned(dir, net1Route: nil), reporter: reporter).add()
        #expect(routing.snapshots == 1 && reporter.facts.count == 1 && reporter.facts[0]?.interfaces["net1"]?.mtu == 1400)
        let dir2 = TempDir()
        let reporter2 = RecordingReporter()
        _ = try make(dir2, try invocation("ADD", args: ""), FakeExecutor(), routing, networks: try planned(dir2, net1Route: nil), reporter: reporter2).add()
        #expect(routing.snapshots == 1 && reporter2.facts == [nil])
    }

    @Test func checkVerifiesTheRequestedRoutes() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let routing = FakeRouting(routes: [DefaultRouteFact(family: .ipv6, interfaces: ["eth0"], gateway: "fd00::1")])
        let nets = try planned(dir, net1Route: ["10.9.1.1"])
        _ = try make(dir, try invocation("ADD"), exec, routing, networks: nets).add()
        try make(dir, try invocation("CHECK"), exec, routing, networks: nets).check()

        // Someone put a second IPv4 default on eth0: CHECK names pod, network and what it found.
        routing.routes.append(DefaultRouteFact(family: .ipv4, interfaces: ["eth0"], gateway: "10.9.0.1"))
        do {
            try make(dir, try invocation("CHECK"), exec, routing, networks: nets).check()
            Issue.record("CHECK passed")
        } catch let e as CNIError {
            #expect(e.msg.contains("ns1/pod1") && e.msg.contains("ns1/b") && e.msg.contains("via 10.9.0.1 dev eth0"))
        }
        routing.routes.removeAll { $0.family == .ipv4 }
        #expect(throws: CNIError.self) { try make(dir, try invocation("CHECK"), exec, routing, networks: nets).check() }
    }
}

@Suite struct NetworkStatusKernelFactsTests {
    @Test func kernelWinsOverTheResult() {
        let result = try! JSON.parse(#"{"interfaces":[{"name":"net1","mac":"02:00:00:00:00:99","sandbox":"/x"}],"ips":[{"address":"10.1.1.5/24","interface":0}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.1.1"}]}"#).objectValue
        let kernel = InterfaceFacts(name: "net1", mac: "02:00:00:00:00:0a", mtu: 1400, ips: ["10.1.1.5", "fd00:0::5"], defaultGateways: [])
        let e = NetworkStatus.entry(for: AttachmentStatusInput(networkName: "ns/b", requestedIfname: "net1", isDefault: false,
                                                               result: result, kernel: kernel))
        #expect(e.mac == "02:00:00:00:00:0a" && e.mtu == 1400 && e.ips == ["10.1.1.5", "fd00::5"])
        #expect(e.gateway.isEmpty)  // the result claims a default route the kernel does not have
        let noIPs = NetworkStatus.entry(for: AttachmentStatusInput(networkName: "ns/b", requestedIfname: "net1", isDefault: false,
                                                                   result: result, kernel: InterfaceFacts(name: "net1")))
        #expect(noIPs.ips == ["10.1.1.5"] && noIPs.mac == "02:00:00:00:00:99")
    }
}

@Suite struct ResultRoutesTests {
    @Test func legacyResultsAreRewrittenToo() throws {
        let old = try JSON.parse(#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.1.5/24","routes":[{"dst":"0.0.0.0/0"},{"dst":"10.2.0.0/16"}]},"ip6":{"ip":"fd00::5/64","routes":[{"dst":"::/0"}]}}"#).objectValue ?? JSONObject()
        let moved = ResultRoutes.movingDefault(old, family: .ipv4, to: nil)
        #expect(moved["ip4"]?["routes"]?.arrayValue?.count == 1 && moved["ip6"]?["routes"]?.arrayValue?.count == 1)
        let added = ResultRoutes.movingDefault(old, family: .ipv6, to: IPAddress("fd00::1"))
        #expect(added["ip6"]?["routes"]?.arrayValue?.map { $0["gw"]?.stringValue } == ["fd00::1"])
    }
}
