import CNISpec
import SystemKit
import Testing
@testable import PlexusCore

/// Resolution of `clusterNetwork`/`defaultNetworks` without Kubernetes: names in confDir, files, directories.
@Suite struct NetworkLoaderTests {
    func write(_ dir: TempDir, _ name: String, _ text: String) throws {
        try FileSystem.makeDirectories(dir.path + "/conf", mode: 0o755)
        try FileSystem.writeAtomically(dir.path + "/conf/" + name, Array(text.utf8), mode: 0o644)
    }

    @Test func nameLookupPrefersConflistsAndSkipsBrokenFiles() throws {
        let dir = TempDir()
        try write(dir, "00-broken.conflist", "{not json")
        try write(dir, "05-a.conf", #"{"cniVersion":"0.3.1","name":"net-a","type":"from-conf"}"#)
        try write(dir, "10-a.conflist", #"{"cniVersion":"1.0.0","name":"net-a","plugins":[{"type":"from-conflist"}]}"#)
        try write(dir, "20-b.json", #"{"cniVersion":"0.4.0","name":"net-b","type":"from-json"}"#)
        let loader = NetworkLoader(confDir: dir.path + "/conf")
        #expect(try loader.load(reference: "net-a").pluginType(0) == "from-conflist")
        #expect(try loader.load(reference: "net-b").pluginType(0) == "from-json")
        #expect(throws: CNIError.self) { try loader.load(reference: "net-c") }
    }

    @Test func pathsAndDirectories() throws {
        let dir = TempDir()
        try write(dir, "b.conflist", #"{"cniVersion":"1.0.0","name":"second","plugins":[{"type":"x"}]}"#)
        try write(dir, "a.conf", #"{"cniVersion":"1.0.0","name":"first","type":"y"}"#)
        try write(dir, "README.md", "not a network")
        let loader = NetworkLoader(confDir: "/nonexistent")
        #expect(try loader.load(reference: dir.path + "/conf").name == "first")
        #expect(try loader.load(reference: dir.path + "/conf/b.conflist").name == "second")
        #expect(throws: CNIError.self) { try loader.load(reference: dir.path + "/conf/missing.conf") }
        #expect(throws: CNIError.self) { try loader.load(reference: dir.path + "/empty-dir/") }
    }

    @Test func defaultNetworksFollowTheClusterNetworkAndSkipSystemNamespaces() throws {
        let dir = TempDir()
        try write(dir, "c.conflist", #"{"cniVersion":"1.0.0","name":"cluster","plugins":[{"type":"bridge"}]}"#)
        try write(dir, "d.conf", #"{"cniVersion":"1.0.0","name":"extra","type":"macvlan"}"#)
        let text = #"{"cniVersion":"1.0.0","name":"pxnet","type":"plexus","confDir":"\#(dir.path)/conf","clusterNetwork":"cluster","defaultNetworks":["extra","\#(dir.path)/conf/d.conf"],"runtimeConfig":{"portMappings":[]}}"#
        let cfg = try PlexusConfig(bytes: Array(text.utf8))
        let planner = LocalPlanner(loader: NetworkLoader(confDir: cfg.confDir))
        let plan = try planner.plan(config: cfg, invocation: try invocation("ADD"))
        #expect(plan.map(\.ifname) == ["eth0", "net1", "net2"])
        #expect(plan.map(\.list.name) == ["cluster", "extra", "extra"])
        #expect(plan[0].isDefault && !plan[1].isDefault)
        #expect(!plan[0].capabilityArgs.isEmpty && plan[1].capabilityArgs.isEmpty)
        let system = try planner.plan(config: cfg, invocation: try invocation("ADD", args: "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=p"))
        #expect(system.map(\.ifname) == ["eth0"])
    }
}
