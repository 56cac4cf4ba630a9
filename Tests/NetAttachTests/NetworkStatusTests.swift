import CNISpec
import Testing
@testable import NetAttach

@Suite struct NetworkStatusBuildTests {
    static let clusterResult = """
        {"cniVersion":"1.1.0",
         "interfaces":[{"name":"cali12ab","mac":"ee:ee:ee:ee:ee:ee"},
                       {"name":"eth0","mac":"82:74:3c:aa:bb:cc","mtu":1450,"sandbox":"/var/run/netns/cni-1"}],
         "ips":[{"address":"10.244.0.148/24","gateway":"10.244.0.1","interface":1},
                {"address":"fd00:10:244:0:0:0:0:94/64","gateway":"fd00:10:244::1","interface":1}],
         "routes":[{"dst":"10.96.0.0/12"},{"dst":"0.0.0.0/0","gw":"10.244.0.1"},{"dst":"::/0","gw":"fd00:10:244::1"}],
         "dns":{"nameservers":["10.96.0.10"],"domain":"","search":["default.svc.cluster.local"]}}
        """
    static let macvlanResult = """
        {"cniVersion":"1.1.0","interfaces":[{"name":"net1","mac":"a6:70:00:00:00:01","sandbox":"/var/run/netns/cni-1"}],
         "ips":[{"address":"10.10.1.33/24","interface":0}],"dns":{}}
        """
    /// A static-IP attachment whose plugin also reports a host-side interface and a host-side address.
    static let staticResult = """
        {"cniVersion":"1.1.0",
         "interfaces":[{"name":"veth9f","mac":"0a:00:00:00:00:01"},
                       {"name":"static0","mac":"02:00:00:00:50:10","sandbox":"/var/run/netns/cni-1"}],
         "ips":[{"address":"169.254.1.1/32","interface":0},
                {"address":"192.168.50.10/24","gateway":"192.168.50.1","interface":1},
                {"address":"2001:DB8:0:0::10/64","interface":1}],
         "routes":[{"dst":"0.0.0.0/0","gw":"192.168.50.254"}]}
        """

    static let golden = #"[{"name":"k8s-pod-network","interface":"eth0","ips":["10.244.0.148","fd00:10:244::94"],"# +
        #""mac":"82:74:3c:aa:bb:cc","mtu":1450,"default":true,"# +
        #""dns":{"nameservers":["10.96.0.10"],"search":["default.svc.cluster.local"]},"# +
        #""gateway":["10.244.0.1","fd00:10:244::1"]},"# +
        #"{"name":"default/macvlan-conf","interface":"net1","ips":["10.10.1.33"],"mac":"a6:70:00:00:00:01","dns":{}},"# +
        #"{"name":"net/static-net","interface":"static0","ips":["192.168.50.10","2001:db8::10"],"# +
        #""mac":"02:00:00:00:50:10","dns":{},"# +
        #""device-info":{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:00.1"}},"# +
        #""gateway":["192.168.50.1"]}]"#

    @Test func threeNetworkPodGolden() throws {
        // The static network was selected with
        // {"name":"static-net","namespace":"net","interface":"static0","ips":["192.168.50.10/24","2001:db8::10/64"],
        //  "default-route":["192.168.50.1"]}
        let inputs = [
            AttachmentStatusInput(networkName: "k8s-pod-network", requestedIfname: "eth0", isDefault: true,
                                  result: try object(Self.clusterResult)),
            AttachmentStatusInput(networkName: "default/macvlan-conf", requestedIfname: "net1", isDefault: false,
                                  result: try object(Self.macvlanResult)),
            AttachmentStatusInput(networkName: "net/static-net", requestedIfname: "static0", isDefault: false,
                                  result: try object(Self.staticResult), defaultRouteGateways: ["192.168.50.1"],
                                  deviceInfo: try JSON.parse(#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:00.1"}}"#)),
        ]
        let value = NetworkStatus.annotationValue(for: inputs)
        #expect(value == Self.golden)

        // And it reads back to the same entries.
        let parsed = try NetworkStatus.parse(value)
        #expect(parsed == inputs.map(NetworkStatus.entry(for:)))
        #expect(parsed.map(\.isDefault) == [true, false, false])
        #expect(NetworkStatus.encode(parsed) == value)
    }

    // (result JSON or nil, isDefault, gateway override, expected entry JSON)
    static let cases: [(String?, Bool, [String]?, String)] = [
        // no result: minimal entry
        (nil, false, nil, #"{"name":"n","interface":"net1","dns":{}}"#),
        (nil, true, [], #"{"name":"n","interface":"net1","default":true,"dns":{}}"#),
        // no sandbox interface: requested ifname, IPs without (or with negative) interface index
        (#"{"interfaces":[{"name":"host0"}],"ips":[{"address":"10.0.0.2/24"},{"address":"10.0.0.3/24","interface":0},{"address":"10.0.0.4/24","interface":-1}]}"#,
         false, nil, #"{"name":"n","interface":"net1","ips":["10.0.0.2","10.0.0.4"],"dns":{}}"#),
        // default network without routes: gateway from ips[].gateway
        (#"{"interfaces":[{"name":"eth0","sandbox":"/ns"}],"ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1","interface":0}]}"#,
         true, nil, #"{"name":"n","interface":"eth0","ips":["10.0.0.2"],"default":true,"dns":{},"gateway":["10.0.0.1"]}"#),
        // ... but not for a secondary network
        (#"{"interfaces":[{"name":"eth0","sandbox":"/ns"}],"ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1","interface":0}]}"#,
         false, nil, #"{"name":"n","interface":"eth0","ips":["10.0.0.2"],"dns":{}}"#),
        // ... and not when routes exist without a default route
        (#"{"interfaces":[{"name":"eth0","sandbox":"/ns"}],"ips":[{"address":"10.0.0.2/24","gateway":"10.0.0.1","interface":0}],"routes":[{"dst":"10.1.0.0/16","gw":"10.0.0.1"}]}"#,
         true, nil, #"{"name":"n","interface":"eth0","ips":["10.0.0.2"],"default":true,"dns":{}}"#),
        // route gateways deduplicated and canonical; a default route without gw and a /1 are ignored; mtu 0 omitted
        (#"{"interfaces":[{"name":"eth0","sandbox":"/ns","mtu":0,"mac":""}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"},{"dst":"0.0.0.0/0","gw":"10.0.0.1"},{"dst":"::/0"},{"dst":"0.0.0.0/1","gw":"10.0.0.9"},{"dst":"::/0","gw":"FD00::0:1"}]}"#,
         false, nil, #"{"name":"n","interface":"eth0","dns":{},"gateway":["10.0.0.1","fd00::1"]}"#),
        // explicit gateways replace the result's; [] removes them
        (#"{"interfaces":[{"name":"eth0","sandbox":"/ns"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.0.0.1"}]}"#,
         true, [], #"{"name":"n","interface":"eth0","default":true,"dns":{}}"#),
        // the first sandbox interface wins; dns keys filtered and kept in canonical order
        (#"{"interfaces":[{"name":"a0","sandbox":"/ns","mac":"02:00:00:00:00:0a"},{"name":"b0","sandbox":"/ns"}],"ips":[{"address":"10.0.0.2/24","interface":1}],"dns":{"search":["s"],"nameservers":["1.1.1.1"],"options":["ndots:5"],"other":1}}"#,
         false, nil, #"{"name":"n","interface":"a0","mac":"02:00:00:00:00:0a","dns":{"nameservers":["1.1.1.1"],"search":["s"],"options":["ndots:5"]}}"#),
    ]

    @Test(arguments: cases)
    func entry(result: String?, isDefault: Bool, gateways: [String]?, expected: String) throws {
        let input = AttachmentStatusInput(
            networkName: "n", requestedIfname: "net1", isDefault: isDefault,
            result: try result.map(object), defaultRouteGateways: gateways)
        #expect(NetworkStatus.entry(for: input).json().serializedForTest == expected)
    }
}

@Suite struct NetworkStatusParseTests {
    @Test func readsSpecShapeAndMultusIndentedShape() throws {
        let value = """
            [{
                "name": "cbr0",
                "interface": "eth0",
                "ips": ["10.244.0.148"],
                "mac": "82:74:3c:aa:bb:cc",
                "mtu": 1450,
                "default": true,
                "dns": {},
                "gateway": ["10.244.0.1"]
            },{"name":"default/sriov","interface":"net1","ips":["10.56.217.171/24"],"mac":"da:e3:c9:83:30:a3",
               "dns":{},"default-route":["10.56.217.1"],"example.com/x":{"k":1}}]
            """
        let entries = try NetworkStatus.parse(value)
        #expect(entries.count == 2)
        #expect(entries[0] == NetworkStatusEntry(
            name: "cbr0", interface: "eth0", ips: ["10.244.0.148"], mac: "82:74:3c:aa:bb:cc", mtu: 1450,
            isDefault: true, gateway: ["10.244.0.1"]))
        #expect(entries[1].gateway == ["10.56.217.1"])
        #expect(entries[1].isDefault == false)
        #expect(entries[1].extra.keys == ["default-route", "example.com/x"])
        #expect(entries[1].json().serializedForTest == #"{"name":"default/sriov","interface":"net1","ips":["10.56.217.171/24"],"mac":"da:e3:c9:83:30:a3","dns":{},"gateway":["10.56.217.1"],"default-route":["10.56.217.1"],"example.com/x":{"k":1}}"#)
    }

    // (value, element index at fault)
    static let invalid: [(String, Int?)] = [
        ("", nil),
        (#"{"name":"a"}"#, nil),
        (#"[1]"#, 0),
        (#"[{"name":"a"},{"interface":"eth0"}]"#, 1),
        (#"[{"name":""}]"#, 0),
        (#"[{"name":"a","default":"true"}]"#, 0),
        (#"[{"name":"a","ips":"10.0.0.1"}]"#, 0),
        (#"[{"name":"a","ips":[1]}]"#, 0),
        (#"[{"name":"a","mtu":"1500"}]"#, 0),
        (#"[{"name":"a","dns":[]}]"#, 0),
        (#"[{"name":"a","gateway":[null]}]"#, 0),
    ]

    @Test(arguments: invalid)
    func rejects(value: String, index: Int?) throws {
        let error = #expect(throws: NetworkStatusError.self) { _ = try NetworkStatus.parse(value) }
        #expect(try #require(error).index == index)
    }

    @Test func emptyList() throws {
        #expect(try NetworkStatus.parse("[]").isEmpty)
        #expect(NetworkStatus.encode([]) == "[]")
    }
}
