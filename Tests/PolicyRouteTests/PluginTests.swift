import CNISpec
import Testing
@testable import PolicyRoute

@Suite struct PluginTests {
    struct Run {
        var outcome: PolicyRouteOutcome
        var log: [String]
        var json: JSON? { try? JSON.parse(outcome.stdout) }
        var code: Int? { json?["code"]?.intValue }
        var msg: String { json?["msg"]?.stringValue ?? "" }
    }

    func run(_ command: String, _ config: String, _ netns: FakeNetns, env: [String: String]? = nil) -> Run {
        var log: [String] = []
        let outcome = PolicyRoutePlugin.run(environment: env ?? Fixture.environment(command), stdin: Array(config.utf8),
                                            netns: netns, log: { log.append($0) })
        return Run(outcome: outcome, log: log)
    }

    func planned(_ netns: FakeNetns) -> [ObservedRule] { netns.rules.filter { $0.table >= 100 && $0.table < 200 } }

    @Test func addInstallsRoutesThenRulesAndPrintsThePrevResult() throws {
        let ns = FakeNetns()
        let r = run("ADD", Fixture.config(), ns)
        #expect(r.outcome.exitCode == 0, "\(r.outcome.text)")
        #expect(ns.operations == [
            "replace route 10.231.161.0/24 dev net1 src 10.231.161.5 scope link table 100",
            "replace route default via 10.231.161.1 dev net1 table 100",
            "replace route 10.231.162.0/24 dev net2 src 10.231.162.7 scope link table 101",
            "add rule from 10.231.161.5/32 lookup 100 priority 1000",
            "add rule from 10.231.162.7/32 lookup 101 priority 1001",
        ])
        #expect(ns.routes.map(\.outputInterface) == [3, 3, 4])
        // The prevResult, unchanged (same version: value for value), one line.
        #expect(r.outcome.stdout.last == 0x0A)
        #expect(r.json == (try JSON.parse(Fixture.threeNetworks)))
        #expect(r.log.isEmpty)
    }

    @Test func addConvertsThePrevResultToTheConfigVersion() throws {
        let ns = FakeNetns()
        let r = run("ADD", Fixture.config("0.4.0"), ns)
        #expect(r.outcome.exitCode == 0)
        #expect(r.json?["cniVersion"]?.stringValue == "0.4.0")
        #expect(r.json?["ips"]?.arrayValue?.first?["version"]?.stringValue == "4")
        let v11 = run("ADD", Fixture.config("1.1.0", prevResult: Fixture.dualStack040), FakeNetns())
        #expect(v11.json?["cniVersion"]?.stringValue == "1.1.0" && v11.json?["ips"]?.arrayValue?.first?["version"] == nil)
    }

    @Test func repeatedAddChangesNothing() {
        let ns = FakeNetns()
        #expect(run("ADD", Fixture.config(), ns).outcome.exitCode == 0)
        let (rules, routes) = (ns.rules, ns.routes)
        ns.operations = []
        #expect(run("ADD", Fixture.config(), ns).outcome.exitCode == 0)
        #expect(ns.rules == rules && ns.routes == routes)
        #expect(!ns.operations.contains { $0.hasPrefix("add rule") }, "existing rules are not added again")
        #expect(ns.operations.filter { $0.hasPrefix("replace route") }.count == 3)
    }

    @Test func addWithoutSecondaryInterfacesDoesNotOpenTheNetns() {
        let ns = FakeNetns()
        let only = #"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/ns"}],"ips":[{"address":"10.231.160.5/24","interface":0}]}"#
        let r = run("ADD", Fixture.config(prevResult: only), ns)
        #expect(r.outcome.exitCode == 0 && ns.opened == 0)
        #expect(r.json?["ips"]?.arrayValue?.count == 1)
    }

    @Test func addFailures() {
        #expect(run("ADD", Fixture.config(prevResult: nil), FakeNetns()).code == 7)
        #expect(run("ADD", Fixture.config(extra: #""tableBase":0"#), FakeNetns()).code == 7)
        #expect(run("ADD", Fixture.config(extra: #""interfaces":"net1""#), FakeNetns()).code == 7)
        #expect(run("ADD", "not json", FakeNetns()).code == 6)
        #expect(run("ADD", #"{"cniVersion":"0.2.0","prevResult":{}}"#, FakeNetns()).code == 1)
        let gone = FakeNetns()
        gone.exists = false
        let r = run("ADD", Fixture.config(), gone)
        #expect(r.code == 4 && r.msg.contains(Fixture.netns))
        let lacking = FakeNetns()
        lacking.links["net2"] = nil
        let m = run("ADD", Fixture.config(), lacking)
        #expect(m.code == 7 && m.msg.contains("net2") && lacking.operations.isEmpty)
        // Error JSON carries the config's version and is the only output.
        let e = run("ADD", Fixture.config("0.4.0", prevResult: nil), FakeNetns())
        #expect(e.outcome.exitCode == 1 && e.json?["cniVersion"]?.stringValue == "0.4.0" && e.outcome.stdout.last == 0x0A)
    }

    @Test func failedAddRemovesTheRulesItAdded() {
        let ns = FakeNetns()
        ns.failAddRule = (2, CNIError(.ioFailure, "injected"))
        let r = run("ADD", Fixture.config(), ns)
        #expect(r.code == 5 && r.msg == "injected")
        #expect(planned(ns).isEmpty)
        #expect(ns.operations.last == "delete rule from 10.231.161.5/32 lookup 100 priority 1000")
    }

    @Test func checkPassesThenNamesWhatIsMissing() throws {
        let ns = FakeNetns()
        #expect(run("ADD", Fixture.config(), ns).outcome.exitCode == 0)
        let ok = run("CHECK", Fixture.config(), ns)
        #expect(ok.outcome.exitCode == 0 && ok.outcome.stdout.isEmpty)

        ns.rules.removeAll { $0.table == 101 }
        ns.routes.removeAll { $0.destination.length == 0 }
        let bad = run("CHECK", Fixture.config(), ns)
        #expect(bad.code == 999)
        #expect(bad.msg == "policy routing is not in place: missing rule from 10.231.162.7/32 lookup 101 priority 1001; "
                    + "route default via 10.231.161.1 dev net1 table 100")
    }

    @Test func checkComparesEveryField() throws {
        let ns = FakeNetns()
        #expect(run("ADD", Fixture.config(), ns).outcome.exitCode == 0)
        let good = ns.routes
        // The subnet route on another interface, without its source, with another scope; a narrower rule.
        for change in [{ (r: inout ObservedRoute) in r.outputInterface = 2 }, { $0.preferredSource = nil }, { $0.scope = 0 },
                       { $0.isMultipath = true }, { $0.type = 2 }] as [(inout ObservedRoute) -> Void] {
            ns.routes = good
            change(&ns.routes[0])
            #expect(run("CHECK", Fixture.config(), ns).code == 999)
        }
        ns.routes = good
        let i = try #require(ns.rules.firstIndex { $0.table == 100 })
        ns.rules[i].isPlainSourceLookup = false
        let r = run("CHECK", Fixture.config(), ns)
        #expect(r.code == 999 && r.msg.contains("rule from 10.231.161.5/32 lookup 100 priority 1000"))
    }

    /// IPv6 keeps no route scope: the kernel reports the link route as universe, and CHECK still passes.
    @Test func dualStackAddCheckDel() {
        let ns = FakeNetns()
        let config = Fixture.config("0.4.0", prevResult: Fixture.dualStack040)
        #expect(run("ADD", config, ns).outcome.exitCode == 0)
        #expect(ns.routes.filter { $0.destination.family == .ipv6 }.map(\.scope) == [0, 0])
        #expect(planned(ns).map(\.source?.description) == ["10.231.161.5/32", "10.231.161.6/32", "fd31:16:0:1::5/128"])
        #expect(run("CHECK", config, ns).outcome.exitCode == 0)
        ns.routes.removeAll { $0.destination.family == .ipv6 && $0.destination.length == 0 }
        #expect(run("CHECK", config, ns).msg.hasSuffix("missing route default via fd31:16:0:1::1 dev net1 table 100"))
        #expect(run("DEL", config, ns).outcome.exitCode == 0)
        #expect(planned(ns).isEmpty && ns.routes.isEmpty)
    }

    @Test func checkRules() {
        #expect(run("CHECK", Fixture.config("0.3.1"), FakeNetns()).code == 1)
        #expect(run("CHECK", Fixture.config(prevResult: nil), FakeNetns()).code == 7)
        let gone = FakeNetns()
        gone.exists = false
        #expect(run("CHECK", Fixture.config(), gone).code == 4)
    }

    @Test func delRemovesOnlyWhatThePlanNames() throws {
        let ns = FakeNetns()
        #expect(run("ADD", Fixture.config(), ns).outcome.exitCode == 0)
        // Someone else's state: the same source at another priority, another table, a v6 route in table 100.
        let foreignRule = ObservedRule(source: Fixture.prefix("10.231.161.5/32"), table: 100, priority: 500)
        let foreignTable = ObservedRoute(destination: Fixture.prefix("10.231.170.0/24"), table: 300, outputInterface: 3, scope: 253)
        let foreignFamily = ObservedRoute(destination: Fixture.prefix("fd31:16::/64"), table: 100, outputInterface: 3, scope: 0)
        ns.rules.append(foreignRule)
        ns.routes += [foreignTable, foreignFamily]
        ns.operations = []
        let r = run("DEL", Fixture.config(), ns)
        #expect(r.outcome.exitCode == 0 && r.outcome.stdout.isEmpty)
        #expect(planned(ns) == [foreignRule])
        #expect(ns.routes == [foreignTable, foreignFamily])
        #expect(ns.rules.filter { $0.source == nil }.count == 3, "the kernel's rules stay")
        // A second DEL finds nothing and succeeds.
        ns.operations = []
        #expect(run("DEL", Fixture.config(), ns).outcome.exitCode == 0)
        #expect(ns.operations.isEmpty)
    }

    @Test func delDeletesEveryCopyOfAPlannedRule() {
        let ns = FakeNetns()
        #expect(run("ADD", Fixture.config(), ns).outcome.exitCode == 0)
        ns.rules.append(ObservedRule(source: Fixture.prefix("10.231.161.5/32"), table: 100, priority: 1000))
        #expect(run("DEL", Fixture.config(), ns).outcome.exitCode == 0)
        #expect(planned(ns).isEmpty && ns.routes.isEmpty)
    }

    @Test func delTolerates() {
        // netns gone, empty CNI_NETNS, no prevResult, unusable options or prevResult: success, nothing touched.
        let gone = FakeNetns()
        gone.exists = false
        #expect(run("DEL", Fixture.config(), gone).outcome.exitCode == 0)
        let ns = FakeNetns()
        #expect(run("ADD", Fixture.config(), ns).outcome.exitCode == 0)
        let before = (ns.rules, ns.routes)
        #expect(run("DEL", Fixture.config(), ns, env: Fixture.environment("DEL", netns: nil)).outcome.exitCode == 0)
        #expect(run("DEL", Fixture.config(), ns, env: Fixture.environment("DEL", netns: "")).outcome.exitCode == 0)
        let noPrev = run("DEL", Fixture.config(prevResult: nil), ns)
        #expect(noPrev.outcome.exitCode == 0 && noPrev.log.contains { $0.contains("nothing is known to delete") })
        let badOptions = run("DEL", Fixture.config(extra: #""rulePriority":0"#), ns)
        #expect(badOptions.outcome.exitCode == 0 && badOptions.log.contains { $0.contains("rulePriority") })
        #expect(run("DEL", Fixture.config(prevResult: #"{"cniVersion":"1.0.0","ips":[{"address":"x","interface":0}]}"#), ns).outcome.exitCode == 0)
        #expect(ns.rules == before.0 && ns.routes == before.1)
        // Malformed stdin is still an error: nothing can be known from it.
        #expect(run("DEL", "{", ns).code == 6)
        #expect(run("DEL", Fixture.config(), ns, env: ["CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c"]).code == 4)
    }

    @Test func gcStatusVersion() throws {
        let ns = FakeNetns()
        for verb in ["GC", "STATUS"] {
            let ok = run(verb, Fixture.config("1.1.0"), ns, env: ["CNI_COMMAND": verb])
            #expect(ok.outcome.exitCode == 0 && ok.outcome.stdout.isEmpty)
            #expect(run(verb, Fixture.config("1.0.0"), ns, env: ["CNI_COMMAND": verb]).code == 1)
        }
        #expect(ns.opened == 0)
        let v = run("VERSION", "", ns, env: ["CNI_COMMAND": "VERSION"])
        #expect(v.outcome.text == #"{"cniVersion":"1.1.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"# + "\n")
        let echoed = run("VERSION", #"{"cniVersion":"0.4.0"}"#, ns, env: ["CNI_COMMAND": "VERSION"])
        #expect(echoed.json?["cniVersion"]?.stringValue == "0.4.0")
    }

    @Test func environmentErrorsAreCode4() {
        let ns = FakeNetns()
        #expect(run("ADD", Fixture.config(), ns, env: [:]).code == 4)
        #expect(run("ADD", Fixture.config(), ns, env: ["CNI_COMMAND": "FROB"]).code == 4)
        #expect(run("ADD", Fixture.config(), ns, env: Fixture.environment("ADD", netns: nil)).code == 4)
        #expect(run("ADD", Fixture.config(), ns, env: Fixture.environment("ADD", ifname: "a/b")).code == 4)
        var env = Fixture.environment("ADD")
        env["CNI_CONTAINERID"] = "-bad"
        #expect(run("ADD", Fixture.config(), ns, env: env).code == 4)
        #expect(ns.opened == 0)
    }
}
