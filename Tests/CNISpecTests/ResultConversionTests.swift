import Testing
@testable import CNISpec

/// Golden conversions from the libcni observations in shared/reference/cni-spec.md §A.9.
@Suite struct ResultConversionTests {
    static let v031 = #"{"cniVersion":"0.3.1","interfaces":[{"name":"br0","mac":"00:11:22:33:44:55"},{"name":"net1","mac":"0a:58:0a:01:00:05","sandbox":"/var/run/netns/p1"}],"ips":[{"version":"4","address":"10.1.0.5/16","gateway":"10.1.0.1","interface":1},{"version":"6","address":"fd00::5/64","interface":1}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"10.2.0.0/16"}],"dns":{"nameservers":["10.1.0.1"]}}"#

    func canonical(_ text: String) throws -> CNIResult { try CNIResult.parse(JSON.parse(text), defaultVersion: "") }

    @Test func upConvert031To110() throws {
        let out = try CNIResult.convert(JSON.parse(Self.v031), to: "1.1.0", defaultVersion: "1.1.0")
        let expected = try JSON.parse(#"{"cniVersion":"1.1.0","dns":{"nameservers":["10.1.0.1"]},"interfaces":[{"mac":"00:11:22:33:44:55","name":"br0"},{"mac":"0a:58:0a:01:00:05","name":"net1","sandbox":"/var/run/netns/p1"}],"ips":[{"address":"10.1.0.5/16","gateway":"10.1.0.1","interface":1},{"address":"fd00::5/64","interface":1}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"10.2.0.0/16"}]}"#)
        #expect(try CNIResult.parse(out, defaultVersion: "") == CNIResult.parse(expected, defaultVersion: ""))
        #expect(out["ips"]?.arrayValue?.allSatisfy { $0["version"] == nil } == true)
        #expect(out["cniVersion"] == .string("1.1.0"))
    }

    @Test func downConvertTo020KeepsFirstAddressPerFamily() throws {
        let out = try CNIResult.convert(JSON.parse(Self.v031), to: "0.2.0", defaultVersion: "")
        let expected = try JSON.parse(#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/16","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"},{"dst":"10.2.0.0/16"}]},"ip6":{"ip":"fd00::5/64"},"dns":{"nameservers":["10.1.0.1"]}}"#)
        #expect(out == expected)
    }

    @Test func v110To040DropsNewInterfaceFieldsKeepsRouteFields() throws {
        let v110 = #"{"cniVersion":"1.1.0","interfaces":[{"name":"eth0","mac":"02:00:00:00:00:01","mtu":1400,"sandbox":"/ns","socketPath":"/s","pciID":"0000:00:01.0"}],"ips":[{"address":"10.0.0.2/24","interface":0}],"routes":[{"dst":"10.9.0.0/16","gw":"10.0.0.1","mtu":1300,"advmss":1200,"priority":5,"table":100,"scope":0}]}"#
        let out = try CNIResult.convert(JSON.parse(v110), to: "0.4.0", defaultVersion: "")
        let iface = try #require(out["interfaces"]?.arrayValue?.first)
        #expect(iface["mtu"] == nil && iface["socketPath"] == nil && iface["pciID"] == nil)
        #expect(out["ips"]?.arrayValue?.first?["version"] == .string("4"))
        let route = try #require(out["routes"]?.arrayValue?.first)
        #expect(route["mtu"] == .number("1300") && route["table"] == .number("100") && route["scope"] == .number("0"))
        #expect(out["dns"] == .object(JSONObject()))
    }

    @Test func sameVersionIsUnchanged() throws {
        let raw = try JSON.parse(#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","x-extra":1}],"ips":[]}"#)
        #expect(try CNIResult.convert(raw, to: "1.0.0", defaultVersion: "") == raw)
    }

    @Test func noAddressCannotGoTo020() throws {
        let raw = try JSON.parse(#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0"}]}"#)
        #expect(throws: CNIError.self) { try CNIResult.convert(raw, to: "0.2.0", defaultVersion: "") }
    }

    @Test func missingVersionTakesDefault() throws {
        let raw = try JSON.parse(#"{"ips":[{"version":"4","address":"10.0.0.2/24"}]}"#)
        let out = try CNIResult.convert(raw, to: "1.0.0", defaultVersion: "0.4.0")
        #expect(out["ips"]?.arrayValue?.first?["version"] == nil)
    }

    @Test(arguments: CNIVersion.supported)
    func roundTripThroughEveryVersionKeepsPrimaryAddress(_ version: String) throws {
        let out = try CNIResult.convert(JSON.parse(Self.v031), to: version, defaultVersion: "")
        let back = try CNIResult.parse(out, defaultVersion: version)
        #expect(back.ips.first?.address == "10.1.0.5/16")
        #expect(out["cniVersion"] == .string(version))
    }

    @Test func upConvert020To100() throws {
        let raw = try JSON.parse(#"{"cniVersion":"0.2.0","ip4":{"ip":"10.1.0.5/16","gateway":"10.1.0.1","routes":[{"dst":"0.0.0.0/0"}]}}"#)
        let out = try CNIResult.convert(raw, to: "1.0.0", defaultVersion: "")
        #expect(out["ips"] == (try JSON.parse(#"[{"address":"10.1.0.5/16","gateway":"10.1.0.1"}]"#)))
        #expect(out["routes"] == (try JSON.parse(#"[{"dst":"0.0.0.0/0"}]"#)))
    }
}

@Suite struct NetworkConfigTests {
    @Test func confIsWrappedIntoList() throws {
        let l = try NetworkConfigList(json: JSON.parse(#"{"cniVersion":"0.3.1","name":"n1","type":"bridge","x":{"y":1.50}}"#), source: "t")
        #expect(l.name == "n1" && l.cniVersion == "0.3.1" && l.plugins.count == 1)
        let req = try JSON.parse(l.request(plugin: 0, prevResult: nil, capabilityArgs: JSONObject()))
        #expect(req.serialized() == #"{"cniVersion":"0.3.1","name":"n1","type":"bridge","x":{"y":1.50}}"#)
    }

    @Test func requestInjectsOnlyDeclaredCapabilities() throws {
        let l = try NetworkConfigList(json: JSON.parse(#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true,"bandwidth":false},"runtimeConfig":{"static":1}}]}"#), source: "t")
        let caps = JSONObject([("portMappings", try JSON.parse(#"[{"HostPort":80}]"#)), ("bandwidth", .object(JSONObject()))])
        let first = try JSON.parse(l.request(plugin: 0, prevResult: nil, capabilityArgs: caps))
        #expect(first["runtimeConfig"] == nil)
        let second = try JSON.parse(l.request(plugin: 1, prevResult: .object(JSONObject()), capabilityArgs: caps))
        #expect(second["runtimeConfig"]?.serialized() == #"{"portMappings":[{"HostPort":80}]}"#)
        #expect(second["prevResult"] != nil)
        #expect(second["name"] == .string("n"))
    }

    @Test(arguments: [
        #"{"name":"n","plugins":[]}"#, #"{"name":"n","plugins":[{"x":1}]}"#, #"{"plugins":[{"type":"a"}]}"#,
        #"{"name":"bad name","type":"a"}"#, #"{"name":"n","type":"../x"}"#, #"{"name":"n"}"#, #"[1]"#,
        #"{"name":"n","type":"a","disableCheck":"maybe"}"#,
    ])
    func invalidConfigs(_ text: String) throws {
        #expect(throws: CNIError.self) { try NetworkConfigList(json: JSON.parse(text), source: "t") }
    }

    @Test func flagsAcceptStrings() throws {
        let l = try NetworkConfigList(json: JSON.parse(#"{"name":"n","cniVersion":"1.1.0","disableCheck":"TRUE","disableGC":true,"plugins":[{"type":"a"}]}"#), source: "t")
        #expect(l.disableCheck && l.disableGC)
    }

    @Test func gcRequestCarriesBothKeys() throws {
        let l = try NetworkConfigList(json: JSON.parse(#"{"name":"n","cniVersion":"1.1.0","plugins":[{"type":"a"}]}"#), source: "t")
        let req = try JSON.parse(l.gcRequest(plugin: 0, validAttachments: [("c1", "net1")]))
        #expect(req["cni.dev/valid-attachments"]?.serialized() == #"[{"containerID":"c1","ifname":"net1"}]"#)
        #expect(req["cni.dev/attachments"] == req["cni.dev/valid-attachments"])
    }
}

@Suite struct ResultMergeTests {
    @Test func mergeConcatenatesAndReindexes() throws {
        let a = try JSON.parse(#"{"cniVersion":"1.0.0","interfaces":[{"name":"br0"},{"name":"eth0","sandbox":"/n"}],"ips":[{"address":"10.1.0.2/24","gateway":"10.1.0.1","interface":1}],"routes":[{"dst":"0.0.0.0/0","gw":"10.1.0.1"}],"dns":{"nameservers":["10.1.0.53"]}}"#)
        let b = try JSON.parse(#"{"cniVersion":"0.3.1","interfaces":[{"name":"net1","sandbox":"/n"}],"ips":[{"version":"4","address":"10.2.0.2/24","interface":0},{"version":"4","address":"10.2.0.3/24","interface":7}],"dns":{"nameservers":["10.2.0.53"]}}"#)
        let c = try JSON.parse(#"{"cniVersion":"1.1.0"}"#)
        let merged = try CNIResult.merge([(a, "1.0.0"), (b, "0.3.1"), (c, "1.1.0")], to: "1.1.0")
        #expect(merged["cniVersion"] == .string("1.1.0"))
        #expect(merged["interfaces"]?.arrayValue?.compactMap { $0["name"]?.stringValue } == ["br0", "eth0", "net1"])
        let ips = try #require(merged["ips"]?.arrayValue)
        #expect(ips.map { $0["interface"]?.intValue } == [1, 2, nil])
        #expect(merged["routes"]?.arrayValue?.count == 1)
        #expect(merged["dns"]?["nameservers"]?.arrayValue?.first == .string("10.1.0.53"))
        let old = try CNIResult.merge([(a, "1.0.0"), (b, "0.3.1")], to: "0.4.0")
        #expect(old["ips"]?.arrayValue?.first?["version"] == .string("4"))
        #expect(throws: CNIError.self) { try CNIResult.merge([(.string("x"), "1.0.0")], to: "1.0.0") }
    }
}
