import Testing
@testable import NetAttach

/// `ns/name=ifname#index` of each reference, default network first.
func summary(_ plan: SelectionPlan) -> [String] {
    plan.references.map { "\($0.qualifiedName)=\($0.ifname)#\($0.index)\($0.isDefaultNetwork ? "*" : "")" }
}

@Suite struct PlannerNamingTests {
    // (networks annotation, default-network annotation, preceding count, expected)
    static let cases: [(String?, String?, Int, [String])] = [
        (nil, nil, 1, []),
        ("", "", 1, []),
        ("a", nil, 1, ["pods/a=net1#1"]),
        ("a,b", nil, 1, ["pods/a=net1#1", "pods/b=net2#2"]),
        ("a,b", nil, 3, ["pods/a=net3#3", "pods/b=net4#4"]),
        ("a@macvlan1,b", nil, 1, ["pods/a=macvlan1#1", "pods/b=net2#2"]),
        ("a,b@ib0,c", nil, 1, ["pods/a=net1#1", "pods/b=ib0#2", "pods/c=net3#3"]),
        ("a,a", nil, 1, ["pods/a=net1#1", "pods/a=net2#2"]),
        ("a,b", "calico", 1, ["kube-system/calico=eth0#0*", "pods/a=net1#1", "pods/b=net2#2"]),
        (nil, "calico@eth0", 2, ["kube-system/calico=eth0#0*"]),
        ("a@net1", nil, 1, ["pods/a=net1#1"]),
        ("a@net9,b", nil, 1, ["pods/a=net9#1", "pods/b=net2#2"]),
        (#"[{"name":"a","interface":"net2"},{"name":"b","interface":"net1"}]"#, nil, 1,
         ["pods/a=net2#1", "pods/b=net1#2"]),
    ]

    @Test(arguments: cases)
    func names(networks: String?, defaultNetwork: String?, preceding: Int, expected: [String]) throws {
        let plan = try SelectionPlanner.plan(
            SelectionPlanInput(podNamespace: "pods", podName: "p1", networksAnnotation: networks,
                               defaultNetworkAnnotation: defaultNetwork),
            config: SelectionPlanConfig(clusterNetworkIfname: "eth0", precedingNetworkCount: preceding))
        #expect(summary(plan) == expected)
    }

    @Test func requestValuesAreCarried() throws {
        let plan = try SelectionPlanner.plan(
            SelectionPlanInput(podNamespace: "pods", podName: "p1",
                               networksAnnotation: #"[{"name":"a","ips":["10.0.0.5/24"],"mac":"02:00:00:00:00:05"}]"#),
            config: SelectionPlanConfig())
        let ref = try #require(plan.networks.first)
        #expect(ref.request.ips == ["10.0.0.5/24"])
        #expect(ref.request.mac == "02:00:00:00:00:05")
        #expect(!ref.ifnameRequested)
        #expect(plan.defaultNetwork == nil)
    }

    @Test func nonPositivePrecedingCountIsTreatedAsOne() throws {
        let plan = try SelectionPlanner.plan(
            SelectionPlanInput(podNamespace: "pods", podName: "p1", networksAnnotation: "a"),
            config: SelectionPlanConfig(precedingNetworkCount: 0))
        #expect(summary(plan) == ["pods/a=net1#1"])
    }
}

@Suite struct PlannerCollisionTests {
    // (networks, default network, cluster ifname, preceding, colliding ifname)
    static let cases: [(String, String?, String, Int, String)] = [
        ("a@eth0", nil, "eth0", 1, "eth0"),
        ("a@net1", nil, "eth0", 2, "net1"),  // net1 belongs to defaultNetworks[0]
        ("a@net2,b", nil, "eth0", 1, "net2"),  // b is generated net2
        ("a,b@net1", nil, "eth0", 1, "net1"),  // a is generated net1
        ("a@x0,b@x0", nil, "eth0", 1, "x0"),
        ("a@pod0", "calico", "pod0", 1, "pod0"),
        ("a", nil, "net1", 1, "net1"),  // odd CNI_IFNAME equal to a generated name
    ]

    @Test(arguments: cases)
    func rejects(networks: String, defaultNetwork: String?, clusterIf: String, preceding: Int, ifname: String) {
        #expect {
            _ = try SelectionPlanner.plan(
                SelectionPlanInput(podNamespace: "pods", podName: "p1", networksAnnotation: networks,
                                   defaultNetworkAnnotation: defaultNetwork),
                config: SelectionPlanConfig(clusterNetworkIfname: clusterIf, precedingNetworkCount: preceding))
        } throws: { error in
            guard case .duplicateInterface(let name, _, _) = error as? SelectionPlanError else { return false }
            return name == ifname
        }
    }

    @Test func messageNamesBothOwners() throws {
        let error = #expect(throws: SelectionPlanError.self) {
            _ = try SelectionPlanner.plan(
                SelectionPlanInput(podNamespace: "pods", podName: "p1", networksAnnotation: "a@eth0"),
                config: SelectionPlanConfig())
        }
        let text = try #require(error).description
        #expect(text.contains("\"eth0\""))
        #expect(text.contains("the cluster network"))
        #expect(text.contains("pods/a (element 0)"))
    }

    @Test func defaultNetworkMustUseClusterInterface() {
        #expect(throws: SelectionPlanError.defaultNetworkInterface(requested: "eth1", expected: "eth0")) {
            _ = try SelectionPlanner.plan(
                SelectionPlanInput(podNamespace: "pods", podName: "p1", defaultNetworkAnnotation: "calico@eth1"),
                config: SelectionPlanConfig())
        }
    }

    @Test func defaultRouteOnBothAnnotations() {
        #expect {
            _ = try SelectionPlanner.plan(
                SelectionPlanInput(
                    podNamespace: "pods", podName: "p1",
                    networksAnnotation: #"[{"name":"a","default-route":["10.0.0.1"]}]"#,
                    defaultNetworkAnnotation: #"[{"name":"calico","default-route":["10.9.9.9"]}]"#),
                config: SelectionPlanConfig())
        } throws: { error in
            if case .multipleDefaultRoutes(_, _, "IPv4") = error as? SelectionPlanError { return true }
            return false
        }
    }

    /// One attachment per family: IPv4 on one network and IPv6 on another is fine, and an empty `default-route`
    /// claims no family (Multus #1011 removes every default route for it).
    @Test func defaultRoutePerFamily() throws {
        let plan = try SelectionPlanner.plan(
            SelectionPlanInput(
                podNamespace: "pods", podName: "p1",
                networksAnnotation: #"[{"name":"a","default-route":["10.0.0.1"]},{"name":"b","default-route":["fd00::1"]},{"name":"c","default-route":[]}]"#,
                defaultNetworkAnnotation: #"[{"name":"calico","default-route":[]}]"#),
            config: SelectionPlanConfig())
        #expect(plan.networks.map { $0.request.defaultRoute ?? ["-"] } == [["10.0.0.1"], ["fd00::1"], []])
    }

    @Test func selectionErrorsAreWrapped() {
        #expect {
            _ = try SelectionPlanner.plan(
                SelectionPlanInput(podNamespace: "pods", podName: "p1", networksAnnotation: "a,b/c/d"),
                config: SelectionPlanConfig())
        } throws: { error in
            guard case .selection(let e) = error as? SelectionPlanError else { return false }
            return e.index == 1
        }
    }

    @Test func invalidClusterInterface() {
        #expect(throws: SelectionPlanError.invalidClusterInterface("bad/if")) {
            _ = try SelectionPlanner.plan(SelectionPlanInput(podNamespace: "pods", podName: "p1"),
                                          config: SelectionPlanConfig(clusterNetworkIfname: "bad/if"))
        }
    }
}

@Suite struct PlannerIsolationTests {
    // (networks, default network, globals, allowed?)
    static let cases: [(String?, String?, [String], Bool)] = [
        ("a", nil, [], true),
        ("pods/a", nil, [], true),
        ("other/a", nil, [], false),
        ("other/a", nil, ["other"], true),
        ("a,other/b", nil, ["default"], false),
        (#"[{"name":"a","namespace":"other"}]"#, nil, [], false),
        (nil, "calico", [], false),  // default network lives in kube-system: isolation applies
        (nil, "calico", ["kube-system"], true),
        (nil, "pods/calico", [], true),
    ]

    @Test(arguments: cases)
    func isolation(networks: String?, defaultNetwork: String?, globals: [String], allowed: Bool) throws {
        let input = SelectionPlanInput(podNamespace: "pods", podName: "p1", networksAnnotation: networks,
                                       defaultNetworkAnnotation: defaultNetwork)
        let isolated = SelectionPlanConfig(namespaceIsolation: true, globalNamespaces: globals)
        if allowed {
            _ = try SelectionPlanner.plan(input, config: isolated)
        } else {
            #expect {
                _ = try SelectionPlanner.plan(input, config: isolated)
            } throws: { error in
                if case .namespaceIsolation(let pod, _, _) = error as? SelectionPlanError { return pod == "pods/p1" }
                return false
            }
        }
        // Without isolation every case plans.
        _ = try SelectionPlanner.plan(input, config: SelectionPlanConfig(namespaceIsolation: false))
    }
}

@Suite struct SelectionSizeTests {
    func annotation(_ n: Int) -> String { Array(repeating: "pxn-a", count: n).enumerated().map { "\($1)@if\($0)" }.joined(separator: ",") }

    @Test func atMostTheMaximumNumberOfNetworks() throws {
        let limit = SelectionPlanner.maximumNetworks
        let ok = try SelectionPlanner.plan(SelectionPlanInput(podNamespace: "ns", podName: "p", networksAnnotation: annotation(limit)),
                                           config: SelectionPlanConfig())
        #expect(ok.networks.count == limit)
        #expect(throws: SelectionPlanError.tooManyNetworks(count: limit + 1, maximum: limit)) {
            try SelectionPlanner.plan(SelectionPlanInput(podNamespace: "ns", podName: "p", networksAnnotation: annotation(limit + 1)),
                                      config: SelectionPlanConfig())
        }
    }

    @Test func aHugeAnnotationIsRefusedRatherThanPlanned() {
        // 16 000 references in 96 KB: planning them used to take seconds (quadratic), past every deadline.
        let huge = Array(repeating: "pxn-a", count: 16_000).joined(separator: ",")
        #expect(throws: SelectionPlanError.tooManyNetworks(count: 16_000, maximum: SelectionPlanner.maximumNetworks)) {
            try SelectionPlanner.plan(SelectionPlanInput(podNamespace: "ns", podName: "p", networksAnnotation: huge),
                                      config: SelectionPlanConfig())
        }
    }
}
