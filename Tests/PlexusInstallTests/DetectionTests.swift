import CNISpec
@testable import PlexusInstall
import SystemKit
import Testing

@Suite struct DetectionTests {
    func detect(_ s: Sandbox, forced: String? = nil) throws -> Detection {
        try PrimaryDetector.detect(localDir: s.confDir, hostDir: "/etc/cni/net.d", ownName: "00-plexus.conflist",
                                   forced: forced)
    }

    @Test func firstFileWinsWhateverItsExtension() throws {
        let s = Sandbox(confFiles: [
            "10-a.conf": Confs.conf("neta"),
            "20-b.conflist": Confs.conflist("netb", plugins: Confs.bridge),
            "30-c.json": Confs.conf("netc"),
        ])
        var d = try detect(s)
        #expect(d.primary?.fileName == "10-a.conf")
        #expect(d.primary?.hostPath == "/etc/cni/net.d/10-a.conf")
        #expect(d.primary?.list.name == "neta")
        #expect(d.skipped.isEmpty)
        try FileSystem.remove(s.confDir + "/10-a.conf")
        d = try detect(s)
        #expect(d.primary?.fileName == "20-b.conflist")
        try FileSystem.remove(s.confDir + "/20-b.conflist")
        d = try detect(s)
        #expect(d.primary?.fileName == "30-c.json")
    }

    @Test func orderIsBytewiseLikeGo() throws {
        // "100" < "99" bytewise, and "10-a.conflist" < "10-b.conf"; upper case sorts before lower case.
        let s = Sandbox(confFiles: ["99-x.conf": Confs.conf("x"), "100-y.conf": Confs.conf("y")])
        #expect(try detect(s).primary?.fileName == "100-y.conf")
        let t = Sandbox(confFiles: ["10-b.conf": Confs.conf("b"), "10-a.conflist": Confs.conflist("a", plugins: Confs.bridge),
                                    "10-Z.conf": Confs.conf("z")])
        #expect(try detect(t).primary?.fileName == "10-Z.conf")
    }

    @Test func otherExtensionsAreIgnored() throws {
        let s = Sandbox(confFiles: ["05-a.conf.bak": Confs.conf("a"), "06-b.txt": Confs.conf("b"),
                                    "07-c.conflist.old": Confs.conf("c"), "50-d.conf": Confs.conf("d")])
        let d = try detect(s)
        #expect(d.primary?.fileName == "50-d.conf")
        #expect(d.skipped.isEmpty)
    }

    @Test func brokenFilesAreSkippedWithAReason() throws {
        let s = Sandbox(confFiles: [
            "01-garbage.conf": "{not json",
            "02-notype.conf": #"{"cniVersion":"1.0.0","name":"x"}"#,
            "03-badname.conflist": Confs.conflist("bad name!", plugins: Confs.bridge),
            "04-empty.conflist": #"{"cniVersion":"1.0.0","name":"e","plugins":[]}"#,
            "10-good.conflist": Confs.conflist("good", plugins: Confs.bridge),
        ])
        let d = try detect(s)
        #expect(d.primary?.fileName == "10-good.conflist")
        #expect(d.skipped.map(\.file) == ["01-garbage.conf", "02-notype.conf", "03-badname.conflist", "04-empty.conflist"])
        #expect(d.skipped[0].reason.contains("invalid JSON"))
        #expect(d.skipped[1].reason.contains("neither \"type\" nor \"plugins\""))
        #expect(d.skipped[3].reason.contains("no plugin configs"))
    }

    @Test func plexusOwnAndMetaPluginFilesAreSkipped() throws {
        let s = Sandbox(confFiles: [
            "00-multus.conf": #"{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus","kubeconfig":"/x"}"#,
            "00-plexus.conflist": Confs.conflist("plexus-cni-network", plugins: #"{"type":"plexus","clusterNetwork":"/x"}"#),
            "01-old-plexus.conflist": Confs.conflist("old", plugins: #"{"type":"plexus","clusterNetwork":"/x"}"#),
            "10-calico.conflist": Confs.conflist("k8s-pod-network", plugins: Confs.bridge + "," + Confs.portmap),
        ])
        let d = try detect(s)
        #expect(d.primary?.fileName == "10-calico.conflist")
        #expect(d.skipped.map(\.file) == ["00-multus.conf", "00-plexus.conflist", "01-old-plexus.conflist"])
        #expect(d.skipped[0].reason.contains("multus meta plugin"))
        #expect(d.skipped[1].reason.contains("Plexus' own"))
        #expect(d.skipped[2].reason.contains("plexus meta plugin"))
        // 00-multus.conf sorts before 00-plexus.conflist: the runtime would keep using Multus.
        #expect(d.shadowing == ["00-multus.conf"])
    }

    @Test func noPrimaryInAnEmptyOrMissingDirectory() throws {
        let s = Sandbox()
        #expect(try detect(s).primary == nil)
        let missing = try PrimaryDetector.detect(localDir: s.base + "/nope", hostDir: "/nope", ownName: "00-plexus.conflist")
        #expect(missing.primary == nil && missing.skipped.isEmpty)
    }

    @Test func nonRegularFilesAreSkipped() throws {
        let s = Sandbox(confFiles: ["20-b.conf": Confs.conf("b")])
        try FileSystem.makeDirectories(s.confDir + "/10-dir.conf", mode: 0o755)
        let d = try detect(s)
        #expect(d.primary?.fileName == "20-b.conf")
        #expect(d.skipped.first?.reason == "not a regular file")
    }

    @Test func forcedPrimary() throws {
        let s = Sandbox(confFiles: ["10-a.conf": Confs.conf("a"), "20-b.conf": Confs.conf("b")])
        #expect(try detect(s, forced: "20-b.conf").primary?.fileName == "20-b.conf")
        let d = try detect(s, forced: "30-c.conf")
        #expect(d.primary == nil)
        #expect(d.skipped.last?.reason.contains("does not exist") == true)
    }
}
