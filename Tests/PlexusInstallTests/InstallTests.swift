#if canImport(Glibc)
import Glibc
#endif
import CNISpec
@testable import PlexusInstall
import SystemKit
import Testing

private let primaryText = Confs.conflist("pxnet", version: "0.4.0", plugins: Confs.bridge + "," + Confs.portmap)

@Suite struct InstallTests {
    func installed(_ s: Sandbox, _ extra: [String] = [], owner: String? = nil) throws -> Installer {
        let i = try s.installer(extra, owner: owner)
        try i.prepare()
        try i.takeOver()
        try i.installBinaries()
        #expect(try i.reconcile() == .updated)
        return i
    }

    @Test func installWritesEverythingAndUninstallRestoresTheTree() throws {
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText, "99-other.conf": Confs.conf("other")])
        try FileSystem.makeDirectories(s.binDir, mode: 0o755)
        s.write(s.binDir + "/bridge", "#!/bin/sh\n", mode: 0o755)
        let before = s.tree()
        let i = try installed(s, ["--namespace-isolation"])
        let conf = try JSON.parse(try FileSystem.read(s.confDir + "/00-plexus.conflist"))
        let plugin = conf["plugins"]?.arrayValue?.first
        #expect(conf["cniVersion"] == .string("0.4.0"))
        #expect(plugin?["clusterNetwork"] == .string("/etc/cni/net.d/10-pxnet.conflist"))
        #expect(plugin?["kubeconfig"] == .string("/etc/cni/net.d/plexus.d/plexus.kubeconfig"))
        #expect(plugin?["capabilities"]?["portMappings"] == .bool(true))
        #expect(plugin?["namespaceIsolation"] == .bool(true))
        #expect(s.read(s.binDir + "/plexus") == "#!/bin/sh\necho plexus\n")
        #expect(s.read(s.confDir + "/plexus.d/token") == "token-one\n")
        let kc = try JSON.parse(try FileSystem.read(s.confDir + "/plexus.d/plexus.kubeconfig"))
        #expect(kc["users"]?.arrayValue?.first?["user"]?["tokenFile"] == .string("/etc/cni/net.d/plexus.d/token"))
        #expect(!(s.read(s.confDir + "/plexus.d/plexus.kubeconfig") ?? "").contains("token-one"))
        // Modes: binaries executable, secrets private.
        var st = stat()
        #expect(stat(s.binDir + "/plexus", &st) == 0 && st.st_mode & 0o777 == 0o755)
        #expect(stat(s.confDir + "/plexus.d/token", &st) == 0 && st.st_mode & 0o777 == 0o600)
        #expect(Installer.status(options: i.options).ok)
        // The primary is untouched; uninstall leaves exactly the tree we started with.
        #expect(s.read(s.confDir + "/10-pxnet.conflist") == primaryText)
        #expect(try i.uninstall(force: false).isEmpty)
        #expect(s.tree() == before)
        #expect(!Installer.status(options: i.options).ok)
    }

    @Test func createdDirectoriesAreRemovedOnUninstall() throws {
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText])
        let before = s.tree()
        let i = try installed(s)
        #expect(FileSystem.isDirectory(s.root + "/opt/cni/bin"))
        try i.uninstall(force: false)
        #expect(s.tree() == before)
        #expect(!FileSystem.exists(s.root + "/opt"))
    }

    @Test func reconcileIsIdempotentAndRegeneratesOnChange() throws {
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText])
        let i = try installed(s)
        let manifestBefore = s.read(s.confDir + "/plexus.d/install-manifest.json")
        #expect(try i.reconcile() == .upToDate)
        #expect(s.read(s.confDir + "/plexus.d/install-manifest.json") == manifestBefore)

        // The primary changes version and capabilities: regenerated.
        s.write(s.confDir + "/10-pxnet.conflist", Confs.conflist("pxnet", version: "1.0.0", plugins: Confs.bridge))
        #expect(try i.reconcile() == .updated)
        var conf = try JSON.parse(try FileSystem.read(s.confDir + "/00-plexus.conflist"))
        #expect(conf["cniVersion"] == .string("1.0.0"))
        #expect(conf["plugins"]?.arrayValue?.first?["capabilities"] == nil)

        // A new file sorts first: it becomes the primary.
        s.write(s.confDir + "/05-new.conf", Confs.conf("newnet", version: "0.3.1"))
        #expect(try i.reconcile() == .updated)
        conf = try JSON.parse(try FileSystem.read(s.confDir + "/00-plexus.conflist"))
        #expect(conf["plugins"]?.arrayValue?.first?["clusterNetwork"] == .string("/etc/cni/net.d/05-new.conf"))
        #expect(conf["cniVersion"] == .string("0.3.1"))

        // Our config deleted by someone: rewritten.
        try FileSystem.remove(s.confDir + "/00-plexus.conflist")
        #expect(try i.reconcile() == .updated)
        #expect(FileSystem.exists(s.confDir + "/00-plexus.conflist"))
        // The primary disappears: the last configuration stays (no flapping), nothing is rewritten.
        try FileSystem.remove(s.confDir + "/05-new.conf")
        try FileSystem.remove(s.confDir + "/10-pxnet.conflist")
        #expect(try i.reconcile() == .waitingForPrimary)
        #expect(FileSystem.exists(s.confDir + "/00-plexus.conflist"))
    }

    @Test func tokenRotationIsMirrored() throws {
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText])
        let i = try installed(s)
        let kubeconfig = s.read(s.confDir + "/plexus.d/plexus.kubeconfig")
        s.write(s.sa + "/token", "token-two\n")
        #expect(try i.reconcile() == .upToDate)   // the config and kubeconfig are unchanged ...
        #expect(s.read(s.confDir + "/plexus.d/token") == "token-two\n")   // ... the mirrored token is new
        #expect(s.read(s.confDir + "/plexus.d/plexus.kubeconfig") == kubeconfig)
        let m = try InstallManifest(bytes: try FileSystem.read(s.confDir + "/plexus.d/install-manifest.json"), path: "m")
        #expect(m.entry("/etc/cni/net.d/plexus.d/token")?.sha256 == [SHA256.hex(Array("token-two\n".utf8))])
    }

    @Test func settingsFileChangesRegenerateAndBadOnesKeepTheLastGood() throws {
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText])
        let settings = s.base + "/settings.json"
        s.write(settings, #"{"logLevel":"info"}"#)
        let i = try installed(s, ["--settings-file", settings])
        s.write(settings, #"{"logLevel":"debug","namespaceIsolation":true}"#)
        #expect(try i.reconcile() == .updated)
        let plugin = try JSON.parse(try FileSystem.read(s.confDir + "/00-plexus.conflist"))["plugins"]?.arrayValue?.first
        #expect(plugin?["logLevel"] == .string("debug") && plugin?["namespaceIsolation"] == .bool(true))
        let good = s.read(s.confDir + "/00-plexus.conflist")
        s.write(settings, #"{"logLevl":"debug"}"#)
        let e = installError { _ = try i.reconcile() }
        #expect(e?.message.contains("unknown setting \"logLevl\"") == true)
        #expect(s.read(s.confDir + "/00-plexus.conflist") == good)
    }

    @Test func uninstallLeavesFilesSomebodyElseReplaced() throws {
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText])
        let i = try installed(s)
        s.write(s.binDir + "/plexus", "#!/bin/sh\necho someone else's build\n", mode: 0o755)
        let left = try i.uninstall(force: false)
        #expect(left.contains("/opt/cni/bin/plexus"))
        #expect(left.contains("/opt/cni/bin"))   // not empty, so kept
        #expect(s.read(s.binDir + "/plexus") == "#!/bin/sh\necho someone else's build\n")
        #expect(!FileSystem.exists(s.confDir + "/00-plexus.conflist"))
        #expect(!FileSystem.exists(s.confDir + "/plexus.d"))
    }

    @Test func replacedExistingBinaryIsRecordedAndIdenticalOneAdopted() throws {
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText])
        try FileSystem.makeDirectories(s.binDir, mode: 0o755)
        s.write(s.binDir + "/plexus", "old plexus", mode: 0o755)
        s.write(s.binDir + "/plexus-kubeconfig", "#!/bin/sh\necho converter\n", mode: 0o755)
        let i = try installed(s, ["--binaries", "plexus,plexus-kubeconfig"])
        let m = try InstallManifest(bytes: try FileSystem.read(s.confDir + "/plexus.d/install-manifest.json"), path: "m")
        #expect(m.entry("/opt/cni/bin/plexus")?.replacedExisting == true)
        #expect(m.entry("/opt/cni/bin/plexus-kubeconfig")?.replacedExisting == true)
        #expect(m.entry("/etc/cni/net.d/00-plexus.conflist")?.replacedExisting == false)
        #expect(s.read(s.binDir + "/plexus") == "#!/bin/sh\necho plexus\n")
        try i.uninstall(force: false)
        #expect(!FileSystem.exists(s.binDir + "/plexus") && FileSystem.isDirectory(s.binDir))
    }

    @Test func aCrashMidReplacementStillUninstallsCleanly() throws {
        // The manifest lists both hashes while a file is replaced; whichever content is on disk is removed.
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText])
        let i = try installed(s)
        let path = s.confDir + "/plexus.d/install-manifest.json"
        var m = try InstallManifest(bytes: try FileSystem.read(path), path: path)
        guard var e = m.entry("/etc/cni/net.d/00-plexus.conflist") else { Issue.record("no config entry"); return }
        e.sha256.append(SHA256.hex(Array("the new content".utf8)))
        m.set(e)
        try FileSystem.writeAtomically(path, PrettyJSON.bytes(m.json))
        s.write(s.confDir + "/.00-plexus.conflist.tmp.4242", "half written")
        #expect(try i.uninstall(force: false).isEmpty)
        #expect(!FileSystem.exists(s.confDir + "/00-plexus.conflist"))
        #expect(!FileSystem.exists(s.confDir + "/.00-plexus.conflist.tmp.4242"))
    }

    @Test func aNewerInstanceTakesOverAndTheOldOneStandsDown() throws {
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText])
        let old = try installed(s, owner: "old")
        let new = try s.installer(owner: "new")
        try new.prepare()
        try new.takeOver()
        try new.installBinaries()
        #expect(try new.reconcile() == .upToDate)   // adopted: same content, nothing rewritten
        #expect(try old.reconcile() == .passive)
        #expect(old.isPassive)
        // The old pod stops: it removes nothing of the new one's.
        #expect(try old.uninstall(force: false).isEmpty)
        #expect(Installer.status(options: new.options).ok)
        try new.uninstall(force: false)
        #expect(!FileSystem.exists(s.confDir + "/00-plexus.conflist"))
    }

    @Test func waitingForAPrimaryWritesNoConfiguration() throws {
        let s = Sandbox()
        let i = try s.installer()
        try i.prepare()
        try i.takeOver()
        try i.installBinaries()
        #expect(try i.reconcile() == .waitingForPrimary)
        #expect(!FileSystem.exists(s.confDir + "/00-plexus.conflist"))
        #expect(!FileSystem.exists(s.confDir + "/plexus.d/token"))
        #expect(Installer.status(options: i.options).message.contains("no configuration written yet"))
        try i.uninstall(force: true)
        #expect(s.tree() == ["d /etc 755", "d /etc/cni 755", "d /etc/cni/net.d 755"])
    }

    @Test func skipKubeconfigWritesNoCredentials() throws {
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText])
        _ = try installed(s, ["--skip-kubeconfig"])
        let plugin = try JSON.parse(try FileSystem.read(s.confDir + "/00-plexus.conflist"))["plugins"]?.arrayValue?.first
        #expect(plugin?["kubeconfig"] == nil)
        #expect((try FileSystem.list(s.confDir + "/plexus.d")) == ["install-manifest.json"])
    }

    @Test func statusNoticesTampering() throws {
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText])
        let i = try installed(s)
        s.write(s.confDir + "/00-plexus.conflist", "{}")
        #expect(Installer.status(options: i.options).message.contains("changed by someone else"))
        try FileSystem.remove(s.confDir + "/00-plexus.conflist")
        #expect(Installer.status(options: i.options).message.contains("missing"))
    }

    @Test func renderWritesNothing() throws {
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText])
        let before = s.tree()
        let out = String(decoding: try s.installer().render(), as: UTF8.self)
        #expect(out.contains("\"clusterNetwork\": \"/etc/cni/net.d/10-pxnet.conflist\""))
        #expect(s.tree() == before)
        let empty = Sandbox()
        #expect(installError { _ = try empty.installer().render() }?.message.contains("no primary network") == true)
    }

    @Test func badInputsFailBeforeAnythingIsWritten() throws {
        let s = Sandbox(confFiles: ["10-pxnet.conflist": primaryText])
        let before = s.tree()
        let missingToken = installError { try s.installer(["--token-file", s.sa + "/nope"]).prepare() }
        #expect(missingToken?.message.contains("cannot read the service account token \(s.sa)/nope") == true)
        s.write(s.sa + "/empty", "\n")
        #expect(installError { try s.installer(["--token-file", s.sa + "/empty"]).prepare() }?.message.contains("is empty") == true)
        #expect(installError { try s.installer(["--binaries", "nothere"]).prepare() }?.message.contains("nothere does not exist") == true)
        let noServer = Installer(options: try InstallOptions.parse(arguments: ["--host-root", s.root], environment: [:]),
                                 environment: [:], logger: Logger(level: .panic))
        #expect(installError { try noServer.prepare() }?.message.contains("API server's address") == true)
        s.write(s.base + "/settings.json", "[]")
        #expect(installError { try s.installer(["--settings-file", s.base + "/settings.json"]).prepare() } != nil)
        #expect(s.tree() == before)
    }

    @Test func manifestRoundTripAndStrictness() throws {
        var m = InstallManifest(owner: "abc", ownerPod: "kube-system/plexus-x")
        m.set(.init(path: "/opt/cni/bin/plexus", role: .binary, sha256: ["aa"], replacedExisting: true))
        m.directories = ["/etc/cni/net.d/plexus.d"]
        #expect(try InstallManifest(bytes: PrettyJSON.bytes(m.json), path: "m") == m)
        for bad in [#"{"kind":"other"}"#, "nope", #"{"kind":"plexusInstallManifestV1","owner":"a","files":[{"path":"rel","role":"binary","sha256":[]}],"directories":[]}"#,
                    #"{"kind":"plexusInstallManifestV1","owner":"a","files":[{"path":"/x","role":"weird","sha256":[]}],"directories":[]}"#] {
            #expect(installError { _ = try InstallManifest(bytes: Array(bad.utf8), path: "/m.json") }?.message.contains("/m.json is not usable") == true)
        }
    }
}

@Suite struct SignalTests {
    @Test func aPendingStopSignalEndsTheWait() {
        let w = SignalWaiter()
        w.block()
        #expect(w.wait(milliseconds: 20) == nil)
        pthread_kill(pthread_self(), SIGTERM)
        #expect(w.wait(milliseconds: 2000) == SIGTERM)
        #expect(w.wait(milliseconds: 10) == nil)
    }
}
