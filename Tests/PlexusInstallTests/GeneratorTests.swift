import CNISpec
@testable import PlexusInstall
import Testing

@Suite struct VersionTests {
    @Test(arguments: ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    func supportedVersionsAreKept(_ v: String) throws {
        let list = try Confs.list(Confs.conflist("n", version: v, plugins: Confs.bridge))
        #expect(try ConfigGenerator.cniVersion(for: list) == v)
    }

    @Test func cniVersionsPicksWhatTheRuntimeWould() throws {
        // libcni: the highest of cniVersions (and cniVersion) it implements.
        let list = try Confs.list(#"{"cniVersion":"0.3.1","cniVersions":["0.4.0","1.0.0"],"name":"n","plugins":[\#(Confs.bridge)]}"#)
        #expect(try ConfigGenerator.cniVersion(for: list) == "1.0.0")
        let future = try Confs.list(#"{"cniVersion":"1.0.0","cniVersions":["1.0.0","9.0.0"],"name":"n","plugins":[\#(Confs.bridge)]}"#)
        #expect(try ConfigGenerator.cniVersion(for: future) == "1.0.0")
    }

    @Test func newerThanPlexusIsCappedAndMissingMeansOhOne() throws {
        #expect(try ConfigGenerator.cniVersion(for: Confs.list(Confs.conflist("n", version: "1.2.0", plugins: Confs.bridge))) == "1.1.0")
        #expect(try ConfigGenerator.cniVersion(for: Confs.list(#"{"name":"n","type":"bridge"}"#)) == "0.1.0")
    }

    @Test func invalidVersionIsAnError() throws {
        let list = try Confs.list(Confs.conflist("n", version: "one", plugins: Confs.bridge))
        let e = installError { _ = try ConfigGenerator.cniVersion(for: list) }
        #expect(e?.message.contains("invalid cniVersion \"one\"") == true)
    }
}

@Suite struct CapabilityTests {
    @Test func unionOfTrueCapabilitiesInFirstSeenOrder() throws {
        let list = try Confs.list(Confs.conflist("n", plugins: [
            #"{"type":"bridge","capabilities":{"ips":true,"mac":false}}"#,
            #"{"type":"portmap","capabilities":{"portMappings":true,"ips":true}}"#,
            #"{"type":"bandwidth","capabilities":{"bandwidth":true,"weird":"yes"}}"#,
            #"{"type":"tuning"}"#,
        ].joined(separator: ",")))
        let caps = ConfigGenerator.capabilities(of: list)
        #expect(caps.keys == ["ips", "portMappings", "bandwidth"])
        #expect(caps.members.allSatisfy { $0.value == .bool(true) })
    }

    @Test func singleConfCapabilities() throws {
        let list = try Confs.list(#"{"cniVersion":"0.4.0","name":"n","type":"flannel","capabilities":{"portMappings":true}}"#)
        #expect(ConfigGenerator.capabilities(of: list).keys == ["portMappings"])
    }
}

@Suite struct GenerationTests {
    func primary(_ text: String, file: String = "10-net.conflist") throws -> PrimaryNetwork {
        PrimaryNetwork(fileName: file, hostPath: "/etc/cni/net.d/" + file, list: try Confs.list(text), sha256: "x")
    }

    @Test func conflistNamesThePrimaryByPath() throws {
        let p = try primary(Confs.conflist("k8s-pod-network", version: "0.4.0", plugins: Confs.bridge + "," + Confs.portmap))
        let settings = PlexusSettings.merge(file: JSONObject([("namespaceIsolation", .bool(true)), ("logLevel", .string("info"))]),
                                            overrides: JSONObject([("logLevel", .string("debug"))]))
        let conf = try ConfigGenerator.conflist(primary: p, networkName: "plexus-cni-network", settings: settings,
                                                kubeconfigHostPath: "/etc/cni/net.d/plexus.d/plexus.kubeconfig",
                                                binDir: "/opt/cni/bin")
        #expect(conf.serialized() == #"{"cniVersion":"0.4.0","name":"plexus-cni-network","plugins":[{"type":"plexus","#
            + #""clusterNetwork":"/etc/cni/net.d/10-net.conflist","capabilities":{"portMappings":true},"#
            + #""kubeconfig":"/etc/cni/net.d/plexus.d/plexus.kubeconfig","binDir":"/opt/cni/bin","logLevel":"debug","#
            + #""namespaceIsolation":true}]}"#)
        // It is what Plexus and libcni load.
        let list = try NetworkConfigList(bytes: PrettyJSON.bytes(conf), source: "generated")
        #expect(list.plugins.count == 1 && list.pluginType(0) == "plexus" && list.cniVersion == "0.4.0")
    }

    @Test func noCapabilitiesNoKubeconfigAndBinDirOverride() throws {
        let p = try primary(Confs.conflist("n", plugins: Confs.bridge))
        let conf = try ConfigGenerator.conflist(primary: p, networkName: "plexus-cni-network",
                                                settings: JSONObject([("binDir", .string("/usr/lib/cni"))]),
                                                kubeconfigHostPath: nil, binDir: "/opt/cni/bin")
        let plugin = conf["plugins"]?.arrayValue?.first?.objectValue
        #expect(plugin?.keys == ["type", "clusterNetwork", "binDir"])
        #expect(plugin?["binDir"] == .string("/usr/lib/cni"))
    }

    @Test func kubeconfigReferencesTokenAndCAByFile() throws {
        let kc = ConfigGenerator.kubeconfig(server: "https://10.96.0.1:443", caHostPath: "/s/ca.crt", tokenHostPath: "/s/token")
        #expect(kc["users"]?.arrayValue?.first?["user"]?.objectValue?.keys == ["tokenFile"])
        #expect(kc["users"]?.arrayValue?.first?["user"]?["tokenFile"] == .string("/s/token"))
        #expect(kc["clusters"]?.arrayValue?.first?["cluster"]?["certificate-authority"] == .string("/s/ca.crt"))
        #expect(kc["current-context"] == .string("plexus"))
        #expect(!kc.serialized().contains("\"token\""))
    }

    @Test func inClusterServerAddress() {
        #expect(ConfigGenerator.inClusterServer(["KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"])
            == "https://10.96.0.1:443")
        #expect(ConfigGenerator.inClusterServer(["KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"])
            == "https://[fd00::1]:443")
        #expect(ConfigGenerator.inClusterServer(["KUBERNETES_SERVICE_HOST": "10.96.0.1"]) == nil)
    }

    @Test func prettyJSONRoundTripsLosslessly() throws {
        let text = #"{"a":[1,2.50,{"b":null,"c":"x\"y\n"}],"e":{},"f":[],"g":true}"#
        let v = try JSON.parse(text)
        let pretty = String(decoding: PrettyJSON.bytes(v), as: UTF8.self)
        #expect(try JSON.parse(pretty) == v)
        #expect(pretty.contains("\n  \"a\": [\n    1,\n    2.50,"))
        #expect(pretty.hasSuffix("}\n"))
    }
}

@Suite struct SHA256Tests {
    @Test func knownVectors() {
        #expect(SHA256.hex([]) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex(Array("abc".utf8)) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8))
            == "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
    }

    @Test func chunkedUpdatesMatchOneShot() {
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        var h = SHA256()
        var i = 0
        for n in [1, 63, 64, 65, 3, 200, 604] {
            h.update(Array(data[i..<min(i + n, data.count)]))
            i = min(i + n, data.count)
        }
        #expect(h.finalizeHex() == SHA256.hex(data))
        #expect(SHA256.hex([UInt8](repeating: 0x61, count: 1_000_000))
            == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }
}
