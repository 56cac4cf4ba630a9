import CNISpec
import Testing
@testable import NetAttach

/// `namespace/name@interface` (or `@-`) of each parsed element.
func triples(_ elements: [NetworkSelectionElement]) -> [String] {
    elements.map { "\($0.namespace)/\($0.name)@\($0.interfaceRequest ?? "-")" }
}

@Suite struct ShorthandSelectionTests {
    static let valid: [(String, [String])] = [
        ("", []),
        ("   ", []),
        ("macvlan-conf", ["pods/macvlan-conf@-"]),
        ("a,b", ["pods/a@-", "pods/b@-"]),
        (" a , other/b ", ["pods/a@-", "other/b@-"]),
        ("a@net5", ["pods/a@net5"]),
        ("ns1/a@eth1,a", ["ns1/a@eth1", "pods/a@-"]),
        ("a,,b,", ["pods/a@-", "pods/b@-"]),
        ("ns1 / a @ if0", ["ns1/a@if0"]),
        ("a,a", ["pods/a@-", "pods/a@-"]),
        ("null", ["pods/null@-"]),
    ]

    @Test(arguments: valid)
    func parses(value: String, expected: [String]) throws {
        let parsed = try NetworkSelection.parse(value, defaultNamespace: "pods")
        #expect(triples(parsed) == expected)
    }

    // (value, reason, offending value)
    static let invalid: [(String, SelectionError.Reason, String?)] = [
        ("a/b/c", .malformedShorthand("more than one '/'"), "a/b/c"),
        ("a@b@c", .malformedShorthand("more than one '@'"), "a@b@c"),
        ("Macvlan", .invalidName, "Macvlan"),
        ("a_b", .invalidName, "a_b"),
        ("/a", .invalidNamespace, ""),
        ("NS/a", .invalidNamespace, "NS"),
        ("a@", .invalidInterfaceName, ""),
        ("a@this-name-is-too-long", .invalidInterfaceName, "this-name-is-too-long"),
        ("a@x:y", .invalidInterfaceName, "x:y"),
        ("ns/@x", .invalidName, ""),
        ("good,bad!", .invalidName, "bad!"),
    ]

    @Test(arguments: invalid)
    func rejects(value: String, reason: SelectionError.Reason, offending: String?) {
        #expect {
            _ = try NetworkSelection.parse(value, defaultNamespace: "pods")
        } throws: { error in
            guard let e = error as? SelectionError else { return false }
            return e.reason == reason && e.value == offending && e.annotation == NetworkSelection.networksAnnotation
        }
    }

    @Test func errorQuotesIndexAndValue() throws {
        let error = #expect(throws: SelectionError.self) {
            _ = try NetworkSelection.parse("a, b ,Bad", defaultNamespace: "pods")
        }
        let e = try #require(error)
        #expect(e.index == 2)
        #expect(e.description.contains("element 2"))
        #expect(e.description.contains("\"Bad\""))
        #expect(e.description.hasPrefix("invalid k8s.v1.cni.cncf.io/networks annotation"))
    }

    @Test func invalidDefaultNamespaceIsRejected() {
        #expect(throws: SelectionError.self) { _ = try NetworkSelection.parse("a", defaultNamespace: "Bad_NS") }
    }
}

@Suite struct JSONSelectionTests {
    @Test func fullElement() throws {
        let value = """
            [{"name":"sriov","namespace":"net","interface":"ib0","ips":["10.1.1.5/24","2001:db8::5"],
              "mac":"02:00:00:00:00:01","default-route":["10.1.1.1"],
              "portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"UDP","hostIP":"192.0.2.1"},
                              {"hostPort":9090,"containerPort":90}],
              "bandwidth":{"ingressRate":1000,"ingressBurst":2000,"egressRate":3000},
              "cni-args":{"foo":"bar","n":1.50},
              "infiniband-guid":"00:11:22:33:44:55:66:77","deviceID":"0000:03:00.1",
              "example.com/extension":"ignored"}]
            """
        let parsed = try NetworkSelection.parse(value, defaultNamespace: "pods")
        let e = try #require(parsed.first)
        #expect(parsed.count == 1)
        #expect(e.name == "sriov")
        #expect(e.namespace == "net")
        #expect(e.interfaceRequest == "ib0")
        #expect(e.ips == ["10.1.1.5/24", "2001:db8::5"])
        #expect(e.mac == "02:00:00:00:00:01")
        #expect(e.defaultRoute == ["10.1.1.1"])
        #expect(e.portMappings == [
            PortMapping(hostPort: 8080, containerPort: 80, protocolName: "udp", hostIP: "192.0.2.1"),
            PortMapping(hostPort: 9090, containerPort: 90, protocolName: "tcp", hostIP: nil),
        ])
        #expect(e.bandwidth == BandwidthRequest(ingressRate: 1000, ingressBurst: 2000, egressRate: 3000))
        #expect(e.cniArgs?.serializedForTest == #"{"foo":"bar","n":1.50}"#)
        #expect(e.infinibandGUID == "00:11:22:33:44:55:66:77")
        #expect(e.deviceID == "0000:03:00.1")
        #expect(e.ipamClaimReference == nil)
    }

    static let valid: [(String, [String])] = [
        ("[]", []),
        (#"[{"name":"a"}]"#, ["pods/a@-"]),
        (#"[{"name":"a","namespace":""}]"#, ["pods/a@-"]),
        (#"[{"name":"a","namespace":null,"interface":null}]"#, ["pods/a@-"]),
        (#"[{"name":"a","interfaceRequest":"legacy0"}]"#, ["pods/a@legacy0"]),
        (#"[{"name":"a","interface":"x0","interfaceRequest":"x0"}]"#, ["pods/a@x0"]),
        (#"[{"name":"a","interface":""}]"#, ["pods/a@-"]),
        (#"[{"name":"a"},{"name":"b","namespace":"other","interface":"net9"}]"#, ["pods/a@-", "other/b@net9"]),
        (#"[{"name":"a","default-route":[]}]"#, ["pods/a@-"]),
        (#"[{"name":"a","default-route":["10.0.0.1","fd00::1"]}]"#, ["pods/a@-"]),
        (#"[{"name":"a","ips":[]}]"#, ["pods/a@-"]),
        (#"[{"name":"a","ipam-claim-reference":"claim-1"}]"#, ["pods/a@-"]),
        (#"[{"name":"a","portMappings":[{"hostPort":1,"containerPort":65535,"protocol":"Sctp"}]}]"#, ["pods/a@-"]),
        (#"[{"name":"a","bandwidth":{"egressRate":1,"egressBurst":1}}]"#, ["pods/a@-"]),
        (#"  [ {"name":"a"} ]  "#, ["pods/a@-"]),
    ]

    @Test(arguments: valid)
    func parses(value: String, expected: [String]) throws {
        #expect(triples(try NetworkSelection.parse(value, defaultNamespace: "pods")) == expected)
    }

    @Test func emptyDefaultRouteIsPresent() throws {
        let e = try NetworkSelection.parse(#"[{"name":"a","default-route":[]}]"#, defaultNamespace: "p")
        #expect(e.first?.defaultRoute == [])
        let f = try NetworkSelection.parse(#"[{"name":"a"}]"#, defaultNamespace: "p")
        #expect(f.first?.defaultRoute == nil)
    }

    // (value, element index, reason, offending value)
    static let invalid: [(String, Int?, SelectionError.Reason, String?)] = [
        (#"{"name":"a"}"#, nil, .notAList(found: "object"), nil),
        (#""a""#, nil, .notAList(found: "string"), nil),
        (#"["a"]"#, 0, .elementNotObject(found: "string"), #""a""#),
        (#"[{"name":"a"},null]"#, 1, .elementNotObject(found: "null"), "null"),
        (#"[{"namespace":"x"}]"#, 0, .missingName, nil),
        (#"[{"name":""}]"#, 0, .missingName, nil),
        (#"[{"name":5}]"#, 0, .wrongType(expected: "string", found: "number"), "5"),
        (#"[{"name":"UPPER"}]"#, 0, .invalidName, "UPPER"),
        (#"[{"name":"a","namespace":"x/y"}]"#, 0, .invalidNamespace, "x/y"),
        (#"[{"name":"a","interface":"toolonginterface"}]"#, 0, .invalidInterfaceName, "toolonginterface"),
        (#"[{"name":"a","interface":".."}]"#, 0, .invalidInterfaceName, ".."),
        (#"[{"name":"a","interfaceRequest":"a b"}]"#, 0, .invalidInterfaceName, "a b"),
        (#"[{"name":"a","interface":"x0","interfaceRequest":"y0"}]"#, 0, .conflictingInterface(other: "y0"), "x0"),
        (#"[{"name":"a"},{"name":"b","ips":["10.1.1.300"]}]"#, 1, .invalidIP, "10.1.1.300"),
        (#"[{"name":"a","ips":["10.1.1.1/33"]}]"#, 0, .invalidIP, "10.1.1.1/33"),
        (#"[{"name":"a","ips":["fe80::1%eth0"]}]"#, 0, .invalidIP, "fe80::1%eth0"),
        (#"[{"name":"a","ips":"10.1.1.1"}]"#, 0, .wrongType(expected: "list of strings", found: "string"), #""10.1.1.1""#),
        (#"[{"name":"a","ips":[1]}]"#, 0, .wrongType(expected: "string", found: "number"), "1"),
        (#"[{"name":"a","mac":"02:00:00:00:00"}]"#, 0, .invalidMAC, "02:00:00:00:00"),
        (#"[{"name":"a","mac":"00:11:22:33:44:55:66:77"}]"#, 0, .invalidMAC, "00:11:22:33:44:55:66:77"),
        (#"[{"name":"a","infiniband-guid":"02:00:00:00:00:01"}]"#, 0, .invalidInfinibandGUID, "02:00:00:00:00:01"),
        (#"[{"name":"a","default-route":["10.0.0.0/8"]}]"#, 0, .invalidGateway, "10.0.0.0/8"),
        (#"[{"name":"a","default-route":["10.0.0.1","10.0.0.2"]}]"#, 0, .multipleGatewaysPerFamily,
         #"["10.0.0.1","10.0.0.2"]"#),
        (#"[{"name":"a","default-route":["10.0.0.9"]},{"name":"b","default-route":["10.0.0.1"]}]"#, 1,
         .multipleDefaultRoutes(firstIndex: 0, family: "IPv4"), nil),
        (#"[{"name":"a","default-route":["fd00::1"]},{"name":"b"},{"name":"c","default-route":["10.0.0.1","fd00::9"]}]"#, 2,
         .multipleDefaultRoutes(firstIndex: 0, family: "IPv6"), nil),
        (#"[{"name":"a","portMappings":[{"hostPort":0,"containerPort":80}]}]"#, 0,
         .invalidPortMapping("\"hostPort\" must be an integer in 1-65535"), #"{"hostPort":0,"containerPort":80}"#),
        (#"[{"name":"a","portMappings":[{"hostPort":80,"containerPort":65536}]}]"#, 0,
         .invalidPortMapping("\"containerPort\" must be an integer in 1-65535"), #"{"hostPort":80,"containerPort":65536}"#),
        (#"[{"name":"a","portMappings":[{"hostPort":80}]}]"#, 0,
         .invalidPortMapping("\"containerPort\" is required"), #"{"hostPort":80}"#),
        (#"[{"name":"a","portMappings":[{"hostPort":80.5,"containerPort":80}]}]"#, 0,
         .invalidPortMapping("\"hostPort\" must be an integer in 1-65535"), #"{"hostPort":80.5,"containerPort":80}"#),
        (#"[{"name":"a","portMappings":[{"hostPort":"80","containerPort":80}]}]"#, 0,
         .invalidPortMapping("\"hostPort\" must be an integer in 1-65535"), #"{"hostPort":"80","containerPort":80}"#),
        (#"[{"name":"a","portMappings":[{"hostPort":1,"containerPort":1,"protocol":"icmp"}]}]"#, 0,
         .invalidPortMapping("\"protocol\" must be tcp, udp or sctp"), #"{"hostPort":1,"containerPort":1,"protocol":"icmp"}"#),
        (#"[{"name":"a","portMappings":[{"hostPort":1,"containerPort":1,"hostIP":"x"}]}]"#, 0,
         .invalidPortMapping("\"hostIP\" is not an IP address"), #"{"hostPort":1,"containerPort":1,"hostIP":"x"}"#),
        (#"[{"name":"a","portMappings":{"hostPort":1}}]"#, 0,
         .wrongType(expected: "list of objects", found: "object"), #"{"hostPort":1}"#),
        (#"[{"name":"a","bandwidth":{"ingressBurst":10}}]"#, 0,
         .invalidBandwidth("\"ingressBurst\" requires \"ingressRate\""), #"{"ingressBurst":10}"#),
        (#"[{"name":"a","bandwidth":{"ingressRate":10,"egressBurst":10}}]"#, 0,
         .invalidBandwidth("\"egressBurst\" requires \"egressRate\""), #"{"ingressRate":10,"egressBurst":10}"#),
        (#"[{"name":"a","bandwidth":{"ingressRate":-1}}]"#, 0,
         .invalidBandwidth("\"ingressRate\" must be a positive integer"), #"{"ingressRate":-1}"#),
        (#"[{"name":"a","bandwidth":{"egressRate":0}}]"#, 0,
         .invalidBandwidth("\"egressRate\" must be a positive integer"), #"{"egressRate":0}"#),
        (#"[{"name":"a","bandwidth":{}}]"#, 0, .invalidBandwidth("no rate given"), "{}"),
        (#"[{"name":"a","cni-args":["x"]}]"#, 0, .wrongType(expected: "object", found: "array"), #"["x"]"#),
        (#"[{"name":"a","ips":["10.0.0.1"],"ipam-claim-reference":"c"}]"#, 0, .ipsWithIPAMClaim, "c"),
        (#"[{"name":"a","deviceID":7}]"#, 0, .wrongType(expected: "string", found: "number"), "7"),
    ]

    @Test(arguments: invalid)
    func rejects(value: String, index: Int?, reason: SelectionError.Reason, offending: String?) throws {
        let error = #expect(throws: SelectionError.self) {
            _ = try NetworkSelection.parse(value, defaultNamespace: "pods")
        }
        let e = try #require(error)
        #expect(e.reason == reason)
        #expect(e.index == index)
        #expect(e.value == offending)
        if let index { #expect(e.description.contains("element \(index)")) }
        if let offending { #expect(e.description.contains(JSON.string(offending).serialized())) }
    }

    /// The whole selection fails; no partial list is returned even when earlier elements are valid.
    @Test func invalidElementFailsWholeSelection() {
        var result: [NetworkSelectionElement]? = nil
        #expect(throws: SelectionError.self) {
            result = try NetworkSelection.parse(#"[{"name":"ok"},{"name":"ok2","mac":"bad"}]"#, defaultNamespace: "p")
        }
        #expect(result == nil)
    }

    @Test(arguments: [#"[{"name":"a"}"#, #"[{"name":"a",}]"#, "[", #"{"name""#])
    func invalidJSON(value: String) throws {
        let error = #expect(throws: SelectionError.self) {
            _ = try NetworkSelection.parse(value, defaultNamespace: "pods")
        }
        let e = try #require(error)
        guard case .invalidJSON = e.reason else {
            Issue.record("expected invalidJSON, got \(e.reason)")
            return
        }
        #expect(e.index == nil)
    }

    @Test func lastDuplicateKeyWins() throws {
        let e = try NetworkSelection.parse(#"[{"name":"a","name":"b"}]"#, defaultNamespace: "p")
        #expect(e.map(\.name) == ["b"])
    }
}

@Suite struct DefaultNetworkSelectionTests {
    static let valid: [(String, String?)] = [
        ("", nil),
        ("  ", nil),
        ("calico", "kube-system/calico@-"),
        ("other/calico", "other/calico@-"),
        (#"[{"name":"calico"}]"#, "kube-system/calico@-"),
        (#"[{"name":"calico","namespace":"x","interface":"eth0"}]"#, "x/calico@eth0"),
    ]

    @Test(arguments: valid)
    func parses(value: String, expected: String?) throws {
        let e = try NetworkSelection.parseDefaultNetwork(value, multusNamespace: "kube-system")
        #expect(e.map { triples([$0])[0] } == expected)
    }

    static let invalid: [(String, SelectionError.Reason)] = [
        ("a,b", .multipleDefaultNetworks(count: 2)),
        (#"[{"name":"a"},{"name":"b"}]"#, .multipleDefaultNetworks(count: 2)),
        ("[]", .noDefaultNetwork),
        (",", .noDefaultNetwork),
        ("Bad", .invalidName),
    ]

    @Test(arguments: invalid)
    func rejects(value: String, reason: SelectionError.Reason) throws {
        let error = #expect(throws: SelectionError.self) {
            _ = try NetworkSelection.parseDefaultNetwork(value, multusNamespace: "kube-system")
        }
        let e = try #require(error)
        #expect(e.reason == reason)
        #expect(e.annotation == NetworkSelection.defaultNetworkAnnotation)
    }
}

extension JSONObject {
    var serializedForTest: String { JSON.object(self).serialized() }
}
