import CNISpec
import Testing
@testable import PolicyRoute

@Suite struct AddressTests {
    @Test(arguments: [
        ("10.231.161.5", [10, 231, 161, 5] as [UInt8]),
        ("0.0.0.0", [0, 0, 0, 0]),
        ("255.255.255.255", [255, 255, 255, 255]),
    ])
    func ipv4(_ text: String, _ bytes: [UInt8]) throws {
        let a = try #require(InetAddress(text))
        #expect(a.bytes == bytes && a.family == .ipv4 && a.description == text)
    }

    @Test(arguments: [
        ("fd31:16::5", "fd31:16::5"),
        ("FD31:0016:0000:0000:0000:0000:0000:0005", "fd31:16::5"),
        ("::", "::"),
        ("::1", "::1"),
        ("fe80::", "fe80::"),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),     // RFC 5952: the first of two equal runs
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  // a single zero group is not compressed
        ("::ffff:10.231.160.5", "::ffff:ae7:a005"),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"),
    ])
    func ipv6(_ text: String, _ canonical: String) throws {
        let a = try #require(InetAddress(text))
        #expect(a.family == .ipv6 && a.bytes.count == 16 && a.description == canonical)
        #expect(InetAddress(canonical) == a)
    }

    @Test(arguments: ["", "10.231.161", "10.231.161.5.1", "10.231.161.256", "10.231.161.05", "10.231.161.-1", " 10.0.0.1",
                      "10.0.0.1 ", "1:2:3:4:5:6:7:8:9", "1::2::3", ":1::", "1:::2", "12345::", "fe80::1%eth0", "g::1",
                      "1:2:3:4:5:6:7", "::1.2.3", "1.2.3.4::", "0x0a.0.0.1"])
    func invalid(_ text: String) {
        #expect(InetAddress(text) == nil)
    }

    @Test func prefixes() throws {
        let p = try #require(InetPrefix("10.231.161.5/24"))
        #expect(p.address.description == "10.231.161.5" && p.length == 24)
        #expect(p.network.description == "10.231.161.0/24" && p.host.description == "10.231.161.5/32")
        #expect(InetPrefix("10.231.161.77/27")?.network.description == "10.231.161.64/27")
        #expect(InetPrefix("10.231.161.5/0")?.network.description == "0.0.0.0/0")
        #expect(InetPrefix("10.231.161.5/32")?.network.description == "10.231.161.5/32")
        #expect(InetPrefix("fd31:16:0:1::5/64")?.network.description == "fd31:16:0:1::/64")
        #expect(InetPrefix("fd31:16:0:1::5/61")?.network.description == "fd31:16::/61")
        #expect(InetPrefix("fd31:16::5/64")?.host.description == "fd31:16::5/128")
        for bad in ["10.231.161.5", "10.231.161.5/33", "10.231.161.5/", "10.231.161.5/2x", "10.231.161.5/-1",
                    "10.231.161.5/24/1", "fd31::5/129", "/24", "10.231.161.5/0024"] {
            #expect(InetPrefix(bad) == nil, "\(bad)")
        }
    }
}

@Suite struct OptionsTests {
    func options(_ json: String) throws(CNIError) -> PolicyOptions {
        guard let o = (try? JSON.parse(json))?.objectValue else { throw CNIError(.decodingFailure, "fixture") }
        return try PolicyOptions(o)
    }

    func code(_ json: String) -> Int? {
        do { _ = try options(json); return nil } catch { return error.code.rawValue }
    }

    @Test func defaults() throws {
        #expect(try options("{}") == PolicyOptions(tableBase: 100, rulePriority: 1000, interfaces: nil))
        #expect(try options(#"{"tableBase":null,"rulePriority":null,"interfaces":null}"#) == PolicyOptions())
    }

    @Test func values() throws {
        let o = try options(#"{"tableBase":4000000000,"rulePriority":32000,"interfaces":["net1","net2"]}"#)
        #expect(o == PolicyOptions(tableBase: 4_000_000_000, rulePriority: 32000, interfaces: ["net1", "net2"]))
        #expect(try options(#"{"tableBase":1,"rulePriority":1}"#) == PolicyOptions(tableBase: 1, rulePriority: 1))
        #expect(try options(#"{"tableBase":256}"#).tableBase == 256)
    }

    @Test(arguments: [
        #"{"tableBase":0}"#, #"{"tableBase":253}"#, #"{"tableBase":254}"#, #"{"tableBase":255}"#,
        #"{"tableBase":4000000001}"#, #"{"tableBase":-1}"#, #"{"tableBase":1.5}"#, #"{"tableBase":1e2}"#,
        #"{"tableBase":"100"}"#, #"{"tableBase":99999999999999999999999}"#, #"{"tableBase":true}"#,
        #"{"rulePriority":0}"#, #"{"rulePriority":32001}"#, #"{"rulePriority":"1000"}"#,
        #"{"interfaces":"net1"}"#, #"{"interfaces":[]}"#, #"{"interfaces":[1]}"#, #"{"interfaces":[""]}"#,
        #"{"interfaces":["a/b"]}"#, #"{"interfaces":["net 1"]}"#, #"{"interfaces":["0123456789abcdef"]}"#,
        #"{"interfaces":[".."]}"#, #"{"interfaces":["net1\u0000"]}"#,
    ])
    func invalidIsCode7(_ json: String) {
        #expect(code(json) == 7)
    }

    @Test func messagesNameTheKey() {
        do { _ = try options(#"{"rulePriority":40000}"#); Issue.record("accepted") } catch {
            #expect(error.msg.contains("rulePriority") && error.details == "1...32000")
        }
    }
}

@Suite struct InputTests {
    func code(_ text: String, prevResult: Bool = false) -> Int? {
        do {
            let input = try PolicyRouteInput(bytes: Array(text.utf8))
            if prevResult { _ = try input.parsedPrevResult() }
            return nil
        } catch {
            return error.code.rawValue
        }
    }

    @Test func envelope() throws {
        let input = try PolicyRouteInput(bytes: Array(Fixture.config("0.4.0").utf8))
        #expect(input.cniVersion == "0.4.0" && input.prevResult != nil)
        #expect(try PolicyRouteInput(bytes: Array(Fixture.config(prevResult: "null").utf8)).prevResult == nil)
        #expect(try input.parsedPrevResult()?.interfaces.count == 9)
    }

    @Test func codes() {
        #expect(code("") == 6)
        #expect(code("{") == 6)
        #expect(code("{\"cniVersion\":\"1.0.0\"} x") == 6)
        #expect(code("[1]") == 7)
        #expect(code(#"{"cniVersion":1}"#) == 7)
        #expect(code(#"{"type":"x"}"#) == 1)
        #expect(code(#"{"cniVersion":"0.2.0"}"#) == 1)
        #expect(code(#"{"cniVersion":"2.0.0"}"#) == 1)
        #expect(code(#"{"cniVersion":"1.1.0"}"#) == nil)
    }

    @Test func malformedPrevResults() {
        #expect(code(Fixture.config(prevResult: "[]"), prevResult: true) == 6)
        #expect(code(Fixture.config(prevResult: #"{"cniVersion":"v1.0"}"#), prevResult: true) == 1)
        #expect(code(Fixture.config(prevResult: #"{"cniVersion":"1.0.0","ips":{}}"#), prevResult: true) == 7)
        #expect(code(Fixture.config(prevResult: #"{"cniVersion":"1.0.0","ips":[{"interface":0}]}"#), prevResult: true) == 7)
        #expect(code(Fixture.config(prevResult: #"{"cniVersion":"1.0.0","ips":["10.0.0.1/24"]}"#), prevResult: true) == 7)
        #expect(code(Fixture.config(prevResult: #"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/24","interface":"1"}]}"#), prevResult: true) == 7)
        #expect(code(Fixture.config(prevResult: #"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/24","interface":1.5}]}"#), prevResult: true) == 7)
        #expect(code(Fixture.config(prevResult: #"{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.1/24","gateway":1}]}"#), prevResult: true) == 7)
        #expect(code(Fixture.config(prevResult: #"{"cniVersion":"1.0.0","interfaces":{}}"#), prevResult: true) == 7)
    }
}

@Suite struct PlanTests {
    @Test func threeNetworks() throws {
        let plan = try Fixture.plan()
        #expect(plan.interfaces.map(\.name) == ["net1", "net2"])
        #expect(plan.interfaces.map(\.table) == [100, 101])
        #expect(plan.interfaces.map(\.priority) == [1000, 1001])
        #expect(plan.interfaces.map(\.resultIndex) == [5, 8])
        #expect(plan.rules.map(\.description) == [
            "from 10.231.161.5/32 lookup 100 priority 1000",
            "from 10.231.162.7/32 lookup 101 priority 1001",
        ])
        #expect(plan.routes.map(\.description) == [
            "10.231.161.0/24 dev net1 src 10.231.161.5 scope link table 100",
            "default via 10.231.161.1 dev net1 table 100",
            "10.231.162.0/24 dev net2 src 10.231.162.7 scope link table 101",  // no gateway: no default route
        ])
        #expect(plan.interfaces[0].families == [.ipv4])
    }

    @Test func deterministic() throws {
        #expect(try Fixture.plan() == Fixture.plan())
    }

    @Test func options() throws {
        let plan = try Fixture.plan(options: PolicyOptions(tableBase: 4_000_000_000, rulePriority: 32000))
        #expect(plan.interfaces.map(\.table) == [4_000_000_000, 4_000_000_001])
        #expect(plan.interfaces.map(\.priority) == [32000, 32001])
    }

    @Test func restriction() throws {
        let plan = try Fixture.plan(options: PolicyOptions(interfaces: ["net2", "eth0", "absent"]))
        // Only net2, numbered as the first: the cluster interface never qualifies, absent names are ignored.
        #expect(plan.interfaces.map(\.name) == ["net2"] && plan.interfaces.map(\.table) == [100])
        #expect(plan.rules.map(\.description) == ["from 10.231.162.7/32 lookup 100 priority 1000"])
        #expect(try Fixture.plan(options: PolicyOptions(interfaces: ["absent"])).isEmpty)
    }

    /// Another CNI_IFNAME makes eth0 secondary: the cluster interface is whichever the runtime names.
    @Test func clusterInterfaceFromTheEnvironment() throws {
        let plan = try Fixture.plan(ifname: "net1")
        #expect(plan.interfaces.map(\.name) == ["eth0", "net2"])
        #expect(plan.routes.first?.description == "10.231.160.0/24 dev eth0 src 10.231.160.5 scope link table 100")
    }

    @Test func dualStackAndSharedSubnet() throws {
        let plan = try PolicyPlan.make(options: PolicyOptions(), result: try Fixture.result(Fixture.dualStack040, version: "0.4.0"),
                                       clusterInterface: "eth0")
        #expect(plan.interfaces.count == 1)
        let net1 = try #require(plan.interfaces.first)
        #expect(net1.families == [.ipv4, .ipv6])
        #expect(net1.rules.map(\.description) == [
            "from 10.231.161.5/32 lookup 100 priority 1000",
            "from 10.231.161.6/32 lookup 100 priority 1000",
            "from fd31:16:0:1::5/128 lookup 100 priority 1000",
        ])
        // One route per subnet (the first address is its source), one default per family (the first gateway).
        #expect(net1.routes.map(\.description) == [
            "10.231.161.0/24 dev net1 src 10.231.161.5 scope link table 100",
            "fd31:16:0:1::/64 dev net1 src fd31:16:0:1::5 scope link table 100",
            "default via 10.231.161.1 dev net1 table 100",
            "default via fd31:16:0:1::1 dev net1 table 100",
        ])
        #expect(net1.routes[3].destination.description == "::/0")
    }

    @Test func whichInterfacesQualify() throws {
        let text = """
            {"cniVersion":"1.0.0","interfaces":[
              {"name":"eth0","sandbox":"/ns"},
              {"name":"hostveth"},
              {"name":"emptysb","sandbox":""},
              {"name":"noips","sandbox":"/ns"},
              {"name":"net1","sandbox":"/proc/42/ns/net"},
              {"name":"net1","sandbox":"/ns"}],
             "ips":[
              {"address":"10.231.160.5/24","interface":0},
              {"address":"10.231.163.1/24","interface":1},
              {"address":"10.231.164.1/24","interface":2},
              {"address":"10.231.165.1/24"},
              {"address":"10.231.161.5/24","interface":4},
              {"address":"10.231.166.5/24","interface":5},
              {"address":"10.231.161.5/24","interface":5}]}
            """
        let plan = try Fixture.plan(text)
        // No sandbox (host side) or an empty one, no addresses, no interface index: skipped. Two entries of one name
        // are one interface (the first position), its repeated address one rule.
        #expect(plan.interfaces.map(\.name) == ["net1"])
        #expect(plan.interfaces[0].resultIndex == 4)
        #expect(plan.interfaces[0].addresses.map(\.description) == ["10.231.161.5/24", "10.231.166.5/24"])
        #expect(plan.rules.map(\.source.description) == ["10.231.161.5/32", "10.231.166.5/32"])
    }

    @Test func noSecondaryInterfaces() throws {
        let text = #"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/ns"}],"ips":[{"address":"10.231.160.5/24","interface":0}]}"#
        #expect(try Fixture.plan(text).isEmpty)
        #expect(try Fixture.plan(#"{"cniVersion":"1.0.0"}"#).isEmpty)
    }

    func code(_ text: String, options: PolicyOptions = PolicyOptions()) -> Int? {
        do { _ = try Fixture.plan(text, options: options); return nil } catch let error as CNIError {
            return error.code.rawValue
        } catch {
            return -1
        }
    }

    static func result(ips: String, interfaces: String = #"[{"name":"eth0","sandbox":"/ns"},{"name":"net1","sandbox":"/ns"}]"#) -> String {
        #"{"cniVersion":"1.0.0","interfaces":\#(interfaces),"ips":\#(ips)}"#
    }

    @Test(arguments: [
        #"[{"address":"10.231.161.5","interface":1}]"#,              // no prefix length
        #"[{"address":"10.231.161.5/33","interface":1}]"#,
        #"[{"address":"net1","interface":1}]"#,
        #"[{"address":"10.231.160.5/24x","interface":0}]"#,          // the cluster interface's addresses are checked too
        #"[{"address":"10.231.161.5/24","gateway":"10.231.161","interface":1}]"#,
        #"[{"address":"10.231.161.5/24","gateway":"fd31:16::1","interface":1}]"#,  // other family
        #"[{"address":"10.231.161.5/24","interface":2}]"#,           // index out of range
        #"[{"address":"10.231.161.5/24","interface":-1}]"#,
    ])
    func badAddressesAreCode7(_ ips: String) {
        #expect(code(PlanTests.result(ips: ips)) == 7)
    }

    @Test func badInterfaceNameIsCode7() {
        let text = PlanTests.result(ips: #"[{"address":"10.231.161.5/24","interface":1}]"#,
                                    interfaces: #"[{"name":"eth0","sandbox":"/ns"},{"name":"net/1","sandbox":"/ns"}]"#)
        #expect(code(text) == 7)
    }

    @Test func tablesNeverReachReservedOnes() {
        // 252 and 253: the second interface would get table 253 (default).
        #expect(code(Fixture.threeNetworks, options: PolicyOptions(tableBase: 252)) == 7)
        #expect(code(Fixture.threeNetworks, options: PolicyOptions(tableBase: 251)) == nil)
        #expect(code(Fixture.threeNetworks, options: PolicyOptions(tableBase: 256)) == nil)
        #expect(code(Fixture.threeNetworks, options: PolicyOptions(tableBase: UInt32.max)) == 7)  // wraps to 0
    }

    @Test func prioritiesStayBelowTheMainRule() {
        var interfaces = [#"{"name":"eth0","sandbox":"/ns"}"#]
        var ips: [String] = []
        for k in 1...767 {
            interfaces.append(#"{"name":"n\#(k)","sandbox":"/ns"}"#)
            ips.append(#"{"address":"10.\#(k / 256).\#(k % 256).1/24","interface":\#(k)}"#)
        }
        let text = PlanTests.result(ips: "[" + ips.joined(separator: ",") + "]", interfaces: "[" + interfaces.joined(separator: ",") + "]")
        // 32000 + 766 = 32766 is the main table's rule.
        #expect(code(text, options: PolicyOptions(tableBase: 1000, rulePriority: 32000)) == 7)
        #expect(code(text, options: PolicyOptions(tableBase: 1000, rulePriority: 31999)) == nil)
    }
}
