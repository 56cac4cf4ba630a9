import CNIInvoke
import CNISpec
import SystemKit
import Testing
@testable import PlexusCore

#if canImport(Glibc)
import Glibc
#endif

/// libcni 1.3 drop-in plugin directories (`<dir>/<network>/*.conf`), `loadOnlyInlinedPlugins`, and Multus'
/// `auxiliaryCNIChainName`.
@Suite struct DropInTests {
    func write(_ dir: TempDir, _ rel: String, _ text: String) throws {
        let path = dir.path + "/conf/" + rel
        try FileSystem.makeDirectories(FileSystem.directoryName(of: path), mode: 0o755)
        try FileSystem.writeAtomically(path, Array(text.utf8), mode: 0o644)
    }

    func loader(_ dir: TempDir) -> NetworkLoader { NetworkLoader(confDir: dir.path + "/conf") }

    let cluster = #"{"cniVersion":"1.0.0","name":"cluster","plugins":[{"type":"bridge"}]}"#

    @Test func dropInsAreAppendedInLexicalOrderAndCached() throws {
        let dir = TempDir()
        try write(dir, "10-cluster.conflist", cluster)
        try write(dir, "cluster/20-b.conf", #"{"type":"tuning","sysctl":{"net.ipv4.conf.IFNAME.arp_filter":"1"}}"#)
        try write(dir, "cluster/10-a.conf", #"{"type":"portmap","capabilities":{"portMappings":true}}"#)
        try write(dir, "cluster/30-c.json", #"{"type":"ignored-extension"}"#)
        try write(dir, "cluster/40-d.conf/inner.conf", #"{"type":"ignored-subdirectory"}"#)
        for list in [try loader(dir).load(reference: "cluster"),
                     try loader(dir).load(reference: dir.path + "/conf/10-cluster.conflist"),
                     try loader(dir).load(reference: dir.path + "/conf")] {
            #expect(list.plugins.map { $0["type"]?.stringValue ?? "" } == ["bridge", "portmap", "tuning"])
            // The bytes Plexus caches (and DEL replays) hold the whole chain: re-parsing them reads no directory.
            let replayed = try NetworkConfigList(bytes: list.bytes, source: "cache")
            #expect(replayed.plugins.count == 3)
        }
    }

    @Test func loadOnlyInlinedPluginsAsBoolOrStringSkipsDropIns() throws {
        for value in ["true", #""true""#, #""TRUE""#] {
            let dir = TempDir()
            try write(dir, "c.conflist", #"{"cniVersion":"1.0.0","name":"cluster","loadOnlyInlinedPlugins":\#(value),"plugins":[{"type":"bridge"}]}"#)
            try write(dir, "cluster/a.conf", #"{"type":"tuning"}"#)
            let list = try loader(dir).load(reference: "cluster")
            #expect(list.plugins.count == 1)
            #expect(list.loadOnlyInlinedPlugins)
        }
        let dir = TempDir()
        try write(dir, "c.conflist", #"{"cniVersion":"1.0.0","name":"cluster","loadOnlyInlinedPlugins":"false","plugins":[{"type":"bridge"}]}"#)
        try write(dir, "cluster/a.conf", #"{"type":"tuning"}"#)
        #expect(try loader(dir).load(reference: "cluster").plugins.count == 2)
    }

    @Test func loadOnlyInlinedPluginsErrors() throws {
        let noPlugins = #"{"cniVersion":"1.0.0","name":"n","loadOnlyInlinedPlugins":true}"#
        #expect(throws: CNIError.self) { try NetworkConfigList(bytes: Array(noPlugins.utf8), source: "t") }
        let badValue = #"{"cniVersion":"1.0.0","name":"n","loadOnlyInlinedPlugins":"yes","plugins":[{"type":"x"}]}"#
        do {
            _ = try NetworkConfigList(bytes: Array(badValue.utf8), source: "t")
            Issue.record("expected an error")
        } catch { #expect(error.code == .invalidNetworkConfig && error.msg.contains("loadOnlyInlinedPlugins")) }
    }

    @Test func aListOfOnlyDropInsLoadsAndWithoutAnyIsAnError() throws {
        let dir = TempDir()
        try write(dir, "c.conflist", #"{"cniVersion":"1.0.0","name":"cluster"}"#)
        #expect(throws: CNIError.self) { try loader(dir).load(reference: "cluster") }
        try write(dir, "cluster/a.conf", #"{"type":"bridge"}"#)
        let list = try loader(dir).load(reference: "cluster")
        #expect(list.plugins.map { $0["type"]?.stringValue ?? "" } == ["bridge"])
    }

    @Test func singlePluginConfsTakeNoDropIns() throws {
        let dir = TempDir()
        try write(dir, "c.conf", #"{"cniVersion":"1.0.0","name":"cluster","type":"bridge"}"#)
        try write(dir, "cluster/a.conf", #"{"type":"tuning"}"#)
        #expect(try loader(dir).load(reference: "cluster").plugins.count == 1)
    }

    @Test func badDropInsNameTheFile() throws {
        let cases: [(String, CNIError.Code)] = [
            ("{not json", .decodingFailure), (#"["a"]"#, .invalidNetworkConfig), (#"{"name":"x"}"#, .invalidNetworkConfig),
            (#"{"type":"../../bin/sh"}"#, .invalidNetworkConfig), (#"{"type":"/bin/sh"}"#, .invalidNetworkConfig),
        ]
        for (text, code) in cases {
            let dir = TempDir()
            try write(dir, "c.conflist", cluster)
            try write(dir, "cluster/bad.conf", text)
            do {
                _ = try loader(dir).load(reference: "cluster")
                Issue.record("expected an error for \(text)")
            } catch {
                #expect(error.code == code)
                #expect(error.msg.contains(dir.path + "/conf/cluster/bad.conf"))
            }
        }
    }

    @Test func aFIFODropInIsRefusedWithoutBlocking() throws {
        let dir = TempDir()
        try write(dir, "c.conflist", cluster)
        try FileSystem.makeDirectories(dir.path + "/conf/cluster", mode: 0o755)
        #expect(mkfifo(dir.path + "/conf/cluster/fifo.conf", 0o644) == 0)
        do {
            _ = try loader(dir).load(reference: "cluster")
            Issue.record("expected an error")
        } catch { #expect(error.msg.contains("fifo.conf")) }
    }

    @Test func onlyTheMatchingNetworksDropInsAreRead() throws {
        let dir = TempDir()
        try write(dir, "a.conflist", #"{"cniVersion":"1.0.0","name":"other","plugins":[{"type":"x"}]}"#)
        try write(dir, "other/broken.conf", "{broken")
        try write(dir, "b.conflist", cluster)
        #expect(try loader(dir).load(reference: "cluster").plugins.count == 1)
        #expect(throws: CNIError.self) { try loader(dir).load(reference: "other") }
    }

    // MARK: auxiliaryCNIChainName

    func auxConfig(_ dir: TempDir, clusterNetwork: String? = nil, aux: String = "vendor-cni-chain") throws -> PlexusConfig {
        let cluster = clusterNetwork ?? dir.path + "/conf/10-cluster.conflist"
        let text = #"{"cniVersion":"1.0.0","name":"pxnet","type":"plexus","cniDir":"\#(dir.path)/cache","confDir":"\#(dir.path)/conf","clusterNetwork":"\#(cluster)","auxiliaryCNIChainName":"\#(aux)","parallelTeardown":false,"parallelAttach":false}"#
        return try PlexusConfig(bytes: Array(text.utf8))
    }

    @Test func auxiliaryChainIsThePassthruPlusItsDirectoryAsTheLastNetwork() throws {
        let dir = TempDir()
        try write(dir, "10-cluster.conflist", cluster)
        let cfg = try auxConfig(dir)
        let planner = LocalPlanner(loader: NetworkLoader(confDir: cfg.confDir))
        // No directory (or an empty one): no chain, as in Multus.
        #expect(try planner.plan(config: cfg, invocation: try invocation("ADD")).count == 1)
        // Multus' e2e drop-in.
        try write(dir, "vendor-cni-chain/sysctltwiddle.conf",
                  #"{"cniVersion":"1.0.0","name":"sysctltwiddle","type":"tuning","sysctl":{"net.ipv4.conf.eth0.arp_filter":"1"}}"#)
        let plan = try planner.plan(config: cfg, invocation: try invocation("ADD"))
        #expect(plan.map(\.ifname) == ["eth0", "net1"])
        let aux = plan[1]
        #expect(aux.isAuxiliary && !aux.isDefault && aux.ifnameGenerated)
        #expect(aux.list.name == "vendor-cni-chain" && aux.list.cniVersion == "1.0.0")
        #expect(aux.list.plugins.map { $0["type"]?.stringValue ?? "" } == ["plexus-passthru", "tuning"])
        // GC and STATUS reach it too.
        #expect(try planner.configuredNetworks(config: cfg).map(\.name) == ["cluster", "vendor-cni-chain"])
        #expect(try planner.requiredNetworks(config: cfg).lists.map(\.name) == ["cluster", "vendor-cni-chain"])
    }

    @Test func auxiliaryChainDirectoryFollowsTheClusterNetwork() throws {
        let dir = TempDir()
        try write(dir, "10-cluster.conflist", cluster)
        // A cluster network given by name: the chain comes from confDir.
        #expect(try auxConfig(dir, clusterNetwork: "cluster").baseDirectory == dir.path + "/conf")
        #expect(try auxConfig(dir, clusterNetwork: dir.path + "/conf").baseDirectory == dir.path + "/conf")
        #expect(try auxConfig(dir).baseDirectory == dir.path + "/conf")
        #expect(throws: CNIError.self) { try auxConfig(dir, aux: "../etc") }
    }

    @Test func auxiliaryChainIsRecordedAndLeftOutOfNetworkStatus() throws {
        let dir = TempDir()
        try write(dir, "10-cluster.conflist", cluster)
        try write(dir, "vendor-cni-chain/t.conf", #"{"type":"tuning"}"#)
        let exec = FakeExecutor()
        let reporter = RecordingReporter()
        let p = Plexus(config: try auxConfig(dir), invocation: try invocation("ADD"), executor: exec, reporter: reporter,
                       logger: Logger(level: .panic, toStderr: false), sleep: { _ in })
        _ = try p.add()
        #expect(exec.calls.map(\.type) == ["bridge", "plexus-passthru", "tuning"])
        #expect(reporter.reports.first?.map(\.network.list.name) == ["cluster"])
        // CHECK skips it: its `net<i>` names no interface, so a chained plugin's CHECK could only fail.
        let before = exec.calls.count
        try plexus(try auxConfig(dir), try invocation("CHECK"), exec).check()
        #expect(exec.calls[before...].map(\.type) == ["bridge"])
        // DEL replays the cached chain even after its directory is gone.
        _ = system("rm -rf '\(dir.path)/conf/vendor-cni-chain'")
        try plexus(try auxConfig(dir), try invocation("DEL"), exec).del()
        #expect(exec.calls.suffix(3).map { "\($0.command) \($0.type)" } == ["DEL tuning", "DEL plexus-passthru", "DEL bridge"])
        #expect(exec.live.isEmpty)
    }
}
