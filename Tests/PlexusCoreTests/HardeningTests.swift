import CNIInvoke
import CNISpec
import KubeClient
import SystemKit
import Testing
@testable import PlexusCore

#if canImport(Glibc)
import Glibc
#endif

/// Regression tests for the defects found by fuzzing and with podman (issue 16): each failed before the fix.
@Suite struct NumericSettingTests {
    func run(_ command: String, _ stdin: String, exec: FakeExecutor) -> (Int32, JSON?) {
        let services = PlexusServices(makeExecutor: { _ in exec }, logger: Logger(level: .panic, toStderr: false))
        let env = ["CNI_COMMAND": command, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0",
                   "CNI_PATH": "/fake"]
        let out = Dispatcher.run(environment: env, stdin: Array(stdin.utf8), services: services)
        return (out.exitCode, try? JSON.parse(out.stdout))
    }

    static let values = ["1e10", "1e400", "-0", "0", "-5", "86401", "1e-400", #""60""#, "true", "[1]"]

    @Test(arguments: ["delegateTimeoutSeconds", "readinessTimeoutSeconds", "apiDeadlineSeconds"], values)
    func outOfRangeDurationIsCode7OnAddAndDefaultOnDelAndGC(_ key: String, _ value: String) throws {
        let dir = TempDir()
        let conf = #"{"cniVersion":"1.1.0","name":"pxnet","type":"plexus","cniDir":"\#(dir.path)/cache","\#(key)":\#(value),"delegates":[{"cniVersion":"1.1.0","name":"a","type":"bridge"}]}"#
        let exec = FakeExecutor()
        for verb in ["ADD", "CHECK", "STATUS"] {
            let (code, out) = run(verb, conf, exec: exec)
            #expect(code == 1)
            #expect(out?["code"]?.intValue == 7, "\(verb) \(key)=\(value)")
            #expect((out?["msg"]?.stringValue ?? "").contains(key))
        }
        #expect(exec.calls.isEmpty)
        // Teardown proceeds with the defaults.
        let (delCode, delOut) = run("DEL", conf, exec: exec)
        #expect(delCode == 0, "\(String(describing: delOut))")
        #expect(exec.calls.map(\.command) == ["DEL"])
        let (gcCode, _) = run("GC", conf, exec: exec)
        #expect(gcCode == 0)
    }

    @Test func largestValidDurationIsAccepted() throws {
        let cfg = try PlexusConfig(bytes: Array(#"{"cniVersion":"1.0.0","name":"n","delegateTimeoutSeconds":86400,"readinessTimeoutSeconds":0.5,"delegates":[{"name":"a","type":"b"}]}"#.utf8))
        #expect(cfg.settingProblems.isEmpty)
        #expect(cfg.delegateTimeoutSeconds == 86400)
        #expect(cfg.readinessTimeoutSeconds == 0.5)
    }

    @Test func conversionsSaturateInsteadOfTrapping() {
        #expect(Clock.nanoseconds(seconds: .infinity) == nil)
        #expect(Clock.nanoseconds(seconds: .nan) == nil)
        #expect(Clock.nanoseconds(seconds: -1) == nil)
        #expect(Clock.nanoseconds(seconds: 1e300) == Clock.maximumIntervalNanoseconds)
        #expect(Clock.nanoseconds(seconds: 1.5) == 1_500_000_000)
        #expect(Clock.deadline(afterNanoseconds: .max) == .max)
        #expect(Clock.deadline(afterSeconds: 1e300) > Clock.monotonicNanoseconds())
        // Built with an absurd timeout the executor still constructs (it used to trap in Int64(_:)).
        let e = ProcessPluginExecutor(baseEnvironment: [], timeoutSeconds: 1e300)
        #expect(e.timeoutNanoseconds == Clock.maximumIntervalNanoseconds)
        #expect(ProcessPluginExecutor(baseEnvironment: [], timeoutSeconds: .infinity).timeoutNanoseconds == 60_000_000_000)
    }
}

@Suite struct CacheFilesAreInputTests {
    func attach(_ dir: TempDir, cid: String, exec: FakeExecutor, delegates: [String] = [net("a"), net("b")]) throws {
        let cfg = try makeConfig(dir, delegates: delegates)
        _ = try plexus(cfg, try invocation("ADD", cid: cid), exec).add()
    }

    @Test(arguments: ["copy", "symlink", "hardlink"])
    func recordOfAnotherContainerIsCorruptAndNeverActedOn(_ how: String) throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        try attach(dir, cid: "c1", exec: exec)
        try attach(dir, cid: "c2", exec: exec)
        let att = dir.path + "/cache/attachments/"
        unlink(att + "pxnet-c1-eth0")
        switch how {
        case "copy": try FileSystem.writeAtomically(att + "pxnet-c1-eth0", try FileSystem.read(att + "pxnet-c2-eth0"))
        case "symlink": symlink(att + "pxnet-c2-eth0", att + "pxnet-c1-eth0")
        default: link(att + "pxnet-c2-eth0", att + "pxnet-c1-eth0")
        }
        let before = exec.calls.count
        try plexus(try makeConfig(dir, delegates: [net("a"), net("b")]), try invocation("DEL", cid: "c1"), exec).del()
        let dels = exec.calls[before...]
        #expect(!dels.isEmpty)
        #expect(dels.allSatisfy { $0.containerID == "c1" })
        // c1 is gone entirely; c2 is untouched.
        #expect(exec.live == ["a/c2/eth0", "b/c2/net1"])
        #expect(dir.files("cache/attachments") == ["pxnet-c2-eth0"])
        #expect(dir.files("cache/results") == ["a-c2-eth0", "b-c2-net1"])
    }

    @Test func resultEntryOfAnotherContainerIsNotItsPrevResult() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        try attach(dir, cid: "c1", exec: exec, delegates: [net("a")])
        try attach(dir, cid: "c2", exec: exec, delegates: [net("a")])
        let res = dir.path + "/cache/results/"
        unlink(res + "a-c1-eth0")
        symlink(res + "a-c2-eth0", res + "a-c1-eth0")
        let cache = ResultCache(cniDir: dir.path + "/cache")
        if case .corrupt = cache.read(network: "a", containerID: "c1", ifname: "eth0") {} else { Issue.record("symlink accepted") }
        unlink(res + "a-c1-eth0")
        try FileSystem.writeAtomically(res + "a-c1-eth0", try FileSystem.read(res + "a-c2-eth0"))
        if case .corrupt = cache.read(network: "a", containerID: "c1", ifname: "eth0") {} else { Issue.record("copy accepted") }
        #expect(cache.list(containerID: "c1").entries.isEmpty)
    }

    @Test(arguments: ["../../../escape/x", "a/../../b", "ok\u{0}evil"])
    func namesFromARecordNeverFormPathsOutsideTheCache(_ bad: String) throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        try attach(dir, cid: "c1", exec: exec, delegates: [net("a")])
        let p = dir.path + "/cache/attachments/pxnet-c1-eth0"
        guard case .object(var o) = try JSON.parse(try FileSystem.read(p)) else { Issue.record("no record"); return }
        o["network"] = .string(bad)
        try FileSystem.writeAtomically(p, JSON.object(o).serializedBytes())
        exec.failures["DEL/a"] = CNIError(.tryAgainLater, "del fails, so the record is rewritten")
        #expect(throws: CNIError.self) {
            try plexus(try makeConfig(dir, delegates: [net("a")]), try invocation("DEL"), exec).del()
        }
        // The record left for the retry is at the attachment's own path, and nothing was written elsewhere.
        #expect(dir.files("cache/attachments") == ["pxnet-c1-eth0"])
        #expect(!FileSystem.exists(dir.path + "/escape"))
        #expect(dir.files("").sorted() == ["cache"])
        #expect(dir.files("cache").sorted() == ["attachments", "locks", "results"])
        // A record whose network ifName carries a traversal is refused as a whole.
        var rec = (try JSON.parse(try FileSystem.read(p))).objectValue ?? JSONObject()
        if case .array(var nets)? = rec["networks"], case .object(var n0)? = nets.first {
            n0["ifName"] = .string("../../x")
            nets[0] = .object(n0)
            rec["networks"] = .array(nets)
        }
        try FileSystem.writeAtomically(p, JSON.object(rec).serializedBytes())
        if case .corrupt = AttachmentStore(cniDir: dir.path + "/cache").read(AttachmentKey(network: "pxnet", containerID: "c1", ifname: "eth0")) {
        } else { Issue.record("traversing ifName accepted") }
    }

    @Test func danglingLockSymlinkIsReplacedNotFollowed() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        try FileSystem.makeDirectories(dir.path + "/cache/locks")
        symlink(dir.path + "/outside-target", dir.path + "/cache/locks/gc")
        mkfifo(dir.path + "/cache/locks/container-\(LockSet.bucket("c1"))", 0o600)
        try attach(dir, cid: "c1", exec: exec)
        #expect(!FileSystem.exists(dir.path + "/outside-target"))
        var st = stat()
        #expect(lstat(dir.path + "/cache/locks/gc", &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG)
        #expect(lstat(dir.path + "/cache/locks/container-\(LockSet.bucket("c1"))", &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG)
    }

    @Test(arguments: ["fifo", "symlink-to-fifo", "directory", "symlink-outside"])
    func recordThatIsNotARegularFileIsCorruptAndDelProceeds(_ kind: String) throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        try attach(dir, cid: "c1", exec: exec)
        let p = dir.path + "/cache/attachments/pxnet-c1-eth0"
        unlink(p)
        switch kind {
        case "fifo": mkfifo(p, 0o600)
        case "symlink-to-fifo":
            mkfifo(dir.path + "/fifo", 0o600)
            symlink(dir.path + "/fifo", p)
        case "directory": mkdir(p, 0o700)
        default:
            try FileSystem.writeAtomically(dir.path + "/outside.json", Array(#"{"kind":"plexusAttachmentV1"}"#.utf8))
            symlink(dir.path + "/outside.json", p)
        }
        // Used to block forever on the FIFO.
        try plexus(try makeConfig(dir, delegates: [net("a"), net("b")]), try invocation("DEL"), exec).del()
        #expect(exec.live.isEmpty)
        #expect(dir.files("cache/results").isEmpty)
        #expect(FileSystem.isRegularFile(dir.path + "/outside.json") || kind != "symlink-outside")
    }

    @Test func symlinkedCacheDirectoryIsRefused() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        try FileSystem.makeDirectories(dir.path + "/cache")
        try FileSystem.makeDirectories(dir.path + "/elsewhere")
        symlink(dir.path + "/elsewhere", dir.path + "/cache/attachments")
        #expect(throws: CNIError.self) { try attach(dir, cid: "c1", exec: exec) }
        #expect(dir.files("elsewhere").isEmpty)
        #expect(exec.live.isEmpty)
    }
}

@Suite struct NamesAndCodesTests {
    @Test(arguments: ["evil\u{0}", "ev\u{0}il", "bri\u{1}dge", "x\u{7f}", "a\u{85}b"])
    func controlCharactersInAPluginTypeAreRejected(_ type: String) {
        let json = JSON.object(JSONObject([("cniVersion", .string("1.0.0")), ("name", .string("n")), ("type", .string(type))]))
        #expect(throws: CNIError.self) { try NetworkConfigList(json: json, source: "t") }
        #expect(throws: CNIError.self) { try ProcessPluginExecutor(baseEnvironment: [], timeoutSeconds: 1).find(type, in: ["/usr/bin"]) }
    }

    @Test func theCBoundaryCannotTruncate() throws {
        let dir = TempDir()
        try FileSystem.writeAtomically(dir.path + "/evil", Array("x".utf8))
        #expect(!FileSystem.isRegularFile(dir.path + "/evil\u{0}more"))
        #expect(!FileSystem.exists(dir.path + "/evil\u{0}"))
        #expect(throws: SystemError.self) { try FileSystem.read(dir.path + "/evil\u{0}x") }
        #expect(throws: SystemError.self) { try FileSystem.writeAtomically(dir.path + "/evil\u{0}x", []) }
        #expect(throws: SystemError.self) { try FileSystem.remove(dir.path + "/evil\u{0}x") }
        #expect(throws: SystemError.self) {
            try Subprocess.run(path: "/bin/true\u{0}x", arguments: ["true"], environment: [], stdin: [], timeoutNanoseconds: 1_000_000_000)
        }
        #expect(throws: SystemError.self) {
            try Subprocess.run(path: "/bin/true", arguments: ["true"], environment: ["A=b\u{0}c"], stdin: [], timeoutNanoseconds: 1_000_000_000)
        }
        #expect(FileSystem.isRegularFile(dir.path + "/evil"))
    }

    @Test(arguments: [("FIFO", true), ("\u{0}", false)])
    func controlCharactersInConfiguredPathsAreCode7(_ suffix: String, _ ok: Bool) {
        let text = #"{"cniVersion":"1.0.0","name":"n","cniDir":"/tmp/x\#(suffix == "\u{0}" ? "\\u0000" : suffix)","delegates":[{"name":"a","type":"b"}]}"#
        if ok {
            #expect((try? PlexusConfig(bytes: Array(text.utf8))) != nil)
        } else {
            #expect(throws: CNIError.self) { try PlexusConfig(bytes: Array(text.utf8)) }
        }
    }

    @Test(arguments: ["cniDir", "confDir", "binDir", "logFile", "readinessindicatorfile", "kubeconfig"])
    func relativePathsAreCode7(_ key: String) {
        // A relative cniDir resolved against the runtime's working directory: a later DEL from elsewhere would
        // not find the cache (and the fuzzer found it writing into the directory plexus was started in).
        let text = #"{"cniVersion":"1.0.0","name":"n","\#(key)":"rel/dir","delegates":[{"name":"a","type":"b"}]}"#
        do {
            _ = try PlexusConfig(bytes: Array(text.utf8))
            Issue.record("accepted a relative \(key)")
        } catch {
            let e = error
            #expect(e.code == .invalidNetworkConfig && e.msg.contains(key) && e.msg.contains("absolute"))
        }
    }

    @Test(arguments: [0, -1, 42, 9, 10, 12, 49, 52, 99])
    func invalidDelegateCodesBecomePluginSpecific(_ code: Int) {
        let out = Array(#"{"code":\#(code),"msg":"it broke","details":"why"}"#.utf8)
        let e = PluginFailure.decode(stdout: out, stderr: [], exitStatus: 1)
        #expect(e.code == .internalError)
        #expect(e.details.contains("code \(code)"))
        #expect(e.details.contains("it broke") && e.details.contains("why"))
    }

    @Test(arguments: [1, 3, 7, 8, 11, 50, 51, 100, 999, 12345])
    func validDelegateCodesAreKept(_ code: Int) {
        let out = Array(#"{"code":\#(code),"msg":"m"}"#.utf8)
        #expect(PluginFailure.decode(stdout: out, stderr: [], exitStatus: 1).code.rawValue == code)
    }
}

@Suite struct MultipleAttachmentsTests {
    func cfg(_ dir: TempDir, _ name: String, _ delegates: [String]) throws -> PlexusConfig {
        var c = try makeConfig(dir, delegates: delegates)
        c.name = name
        return c
    }

    @Test func perInterfaceArgsReachOnlyTheClusterNetwork() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;IP=10.77.70.50;MAC=02:00:00:aa:bb:cc;GATEWAY=10.77.70.1"
        let c = try makeConfig(dir, delegates: [net("a"), net("b")])
        _ = try plexus(c, try invocation("ADD", args: args), exec).add()
        try plexus(c, try invocation("DEL", args: args), exec).del()
        for call in exec.calls {
            if call.ifname == "eth0" {
                #expect(call.cniArgs == args)
            } else {
                #expect(call.cniArgs == "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1", "\(call.command) \(call.ifname)")
            }
        }
        #expect(exec.calls.map(\.command) == ["ADD", "ADD", "DEL", "DEL"])
    }

    @Test func twoPlexusAttachmentsOfOneContainerNeverShareAnInterfaceOrTearEachOtherDown() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let meta1 = try cfg(dir, "meta1", [net("A"), net("B")])
        let meta2 = try cfg(dir, "meta2", [net("C"), net("B")])
        _ = try plexus(meta1, try invocation("ADD", ifname: "eth0"), exec).add()
        _ = try plexus(meta2, try invocation("ADD", ifname: "eth1"), exec).add()
        #expect(exec.live == ["A/c1/eth0", "B/c1/net1", "C/c1/eth1", "B/c1/net2"])
        #expect(dir.files("cache/results") == ["A-c1-eth0", "B-c1-net1", "B-c1-net2", "C-c1-eth1"])

        // The runtime DELs meta2 (podman network disconnect): meta1 keeps everything.
        try plexus(meta2, try invocation("DEL", ifname: "eth1"), exec).del()
        #expect(exec.live == ["A/c1/eth0", "B/c1/net1"])
        // A second DEL of meta2 (no record any more) must not take B/net1, which its configuration would plan.
        try plexus(meta2, try invocation("DEL", ifname: "eth1"), exec).del()
        #expect(exec.live == ["A/c1/eth0", "B/c1/net1"])
        #expect(dir.files("cache/results") == ["A-c1-eth0", "B-c1-net1"])
        try plexus(meta1, try invocation("DEL", ifname: "eth0"), exec).del()
        #expect(exec.live.isEmpty)
        #expect(dir.files("cache/results").isEmpty && dir.files("cache/attachments").isEmpty)
    }

    @Test func aFailedSecondAttachmentRollsBackOnlyWhatItCreated() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let meta1 = try cfg(dir, "meta1", [net("A"), net("B")])
        let meta2 = try cfg(dir, "meta2", [net("C"), net("B"), net("D")])
        _ = try plexus(meta1, try invocation("ADD", ifname: "eth0"), exec).add()
        exec.failures["ADD/D"] = CNIError(.invalidNetworkConfig, "D cannot attach")
        #expect(throws: CNIError.self) { try plexus(meta2, try invocation("ADD", ifname: "eth1"), exec).add() }
        let rollback = exec.calls.filter { $0.command == "DEL" }.map { "\($0.stdin["name"]?.stringValue ?? "")/\($0.ifname)" }
        #expect(rollback == ["D/net3", "B/net2", "C/eth1"])
        #expect(exec.live == ["A/c1/eth0", "B/c1/net1"])
        #expect(dir.files("cache/results") == ["A-c1-eth0", "B-c1-net1"])
        #expect(dir.files("cache/attachments") == ["meta1-c1-eth0"])
    }

    @Test func anInterfaceTheRuntimeAsksForThatAnotherAttachmentHoldsIsCode7() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        _ = try plexus(try cfg(dir, "meta1", [net("A"), net("B")]), try invocation("ADD", ifname: "eth0"), exec).add()
        do {
            _ = try plexus(try cfg(dir, "meta2", [net("C")]), try invocation("ADD", ifname: "net1"), exec).add()
            Issue.record("ADD succeeded")
        } catch let e as CNIError {
            #expect(e.code == .invalidNetworkConfig)
            #expect(e.msg.contains("net1") && e.msg.contains("meta1"))
        }
        #expect(exec.live == ["A/c1/eth0", "B/c1/net1"])
        #expect(dir.files("cache/attachments") == ["meta1-c1-eth0"])
    }

    @Test func aResultEntryOwnedByAnotherAttachmentIsNeverDeleted() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let meta1 = try cfg(dir, "meta1", [net("A"), net("B")])
        _ = try plexus(meta1, try invocation("ADD", ifname: "eth0"), exec).add()
        // A forged record for meta2 that claims meta1's B/net1.
        let forged = AttachmentRecord(key: AttachmentKey(network: "meta2", containerID: "c1", ifname: "eth1"), netns: "/x",
                                      cniArgs: CNIArgs(), pod: nil, state: .planned,
                                      networks: [PlannedNetwork(list: try NetworkConfigList(json: try JSON.parse(net("B")), source: "t"), ifname: "net1")])
        try AttachmentStore(cniDir: dir.path + "/cache").write(forged)
        try plexus(try cfg(dir, "meta2", [net("C"), net("B")]), try invocation("DEL", ifname: "eth1"), exec).del()
        #expect(exec.live == ["A/c1/eth0", "B/c1/net1"])
        #expect(dir.files("cache/results") == ["A-c1-eth0", "B-c1-net1"])
    }
}

/// A netns with a fixed set of links, or one that cannot be read.
struct FakeLister: InterfaceLister {
    var names: [String]?
    func interfaces(netns: String) throws(CNIError) -> [String] {
        guard let names else { throw CNIError(.ioFailure, "cannot list") }
        return names
    }
}

@Suite struct ExistingInterfacesTests {
    func plexusWith(_ lister: FakeLister, _ cfg: PlexusConfig, _ inv: CNIInvocation, _ exec: FakeExecutor) -> Plexus {
        Plexus(config: cfg, invocation: inv, executor: exec, interfaceLister: lister,
               logger: Logger(level: .panic, toStderr: false), sleep: { _ in })
    }

    @Test func generatedNamesAvoidLinksThatExistInTheNetns() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b"), net("c")])
        _ = try plexusWith(FakeLister(names: ["lo", "net1", "net3"]), cfg, try invocation("ADD"), exec).add()
        #expect(exec.calls.map(\.ifname) == ["eth0", "net2", "net4"])
    }

    @Test func aRequestedNameThatExistsIsCode7AndNothingRuns() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b")])
        do {
            _ = try plexusWith(FakeLister(names: ["lo", "eth0"]), cfg, try invocation("ADD"), exec).add()
            Issue.record("ADD succeeded")
        } catch let e as CNIError {
            #expect(e.code == .invalidNetworkConfig)
            #expect(e.msg.contains("\"eth0\"") && e.msg.contains("existing interface"))
        }
        // No delegate ran, so no rollback DEL can take the existing eth0 down.
        #expect(exec.calls.isEmpty)
        #expect(dir.files("cache/attachments").isEmpty)
    }

    @Test func anUnreadableNetnsSkipsTheCheck() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b")])
        _ = try plexusWith(FakeLister(names: nil), cfg, try invocation("ADD"), exec).add()
        #expect(exec.calls.map(\.ifname) == ["eth0", "net1"])
    }
}

@Suite struct LockDirectoryTests {
    @Test func aSymlinkedLockDirectoryIsReplacedAndNothingIsCreatedOutside() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        try FileSystem.makeDirectories(dir.path + "/cache")
        try FileSystem.makeDirectories(dir.path + "/outside")
        symlink(dir.path + "/outside", dir.path + "/cache/locks")
        let cfg = try makeConfig(dir, delegates: [net("a")])
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        try plexus(cfg, try invocation("DEL"), exec).del()
        #expect(dir.files("outside").isEmpty)
        #expect(FileSystem.isOwnDirectory(dir.path + "/cache/locks"))
        #expect(exec.live.isEmpty)
    }
}

@Suite struct NothingOutlivesDelTests {
    @Test func anOwnedResultTheRecordDoesNotListIsDeletedToo() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        // An ADD over an unreadable record: the old attachment's network "old" is cached but not in the new record.
        let first = try makeConfig(dir, delegates: [net("a"), net("old")])
        _ = try plexus(first, try invocation("ADD"), exec).add()
        try FileSystem.writeAtomically(dir.path + "/cache/attachments/pxnet-c1-eth0", Array("{truncated".utf8))
        let second = try makeConfig(dir, delegates: [net("a")])
        _ = try plexus(second, try invocation("ADD"), exec).add()
        #expect(dir.files("cache/results") == ["a-c1-eth0", "old-c1-net1"])
        try plexus(second, try invocation("DEL"), exec).del()
        #expect(exec.live.isEmpty)
        #expect(dir.files("cache/results").isEmpty && dir.files("cache/attachments").isEmpty)
    }

    @Test func anEmptyDirectoryAtTheRecordPathNeverBlocksTheContainer() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a")])
        try FileSystem.makeDirectories(dir.path + "/cache/attachments/pxnet-c1-eth0")
        try plexus(cfg, try invocation("DEL"), exec).del()
        #expect(dir.files("cache/attachments").isEmpty)
        try FileSystem.makeDirectories(dir.path + "/cache/attachments/pxnet-c1-eth0")
        _ = try plexus(cfg, try invocation("ADD"), exec).add()   // used to fail with code 5 forever (rename onto a directory)
        #expect(FileSystem.isRegularFile(dir.path + "/cache/attachments/pxnet-c1-eth0"))
        try plexus(cfg, try invocation("DEL"), exec).del()
        #expect(exec.live.isEmpty && dir.files("cache/attachments").isEmpty)
    }
}

@Suite struct QuarantineTests {
    @Test func aDirectoryWithContentAtTheRecordPathIsMovedAsideNotDeleted() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a")])
        try FileSystem.makeDirectories(dir.path + "/cache/attachments/pxnet-c1-eth0")
        try FileSystem.writeAtomically(dir.path + "/cache/attachments/pxnet-c1-eth0/keep", Array("data".utf8))
        try plexus(cfg, try invocation("DEL"), exec).del()
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        let names = dir.files("cache/attachments")
        #expect(names.contains("pxnet-c1-eth0") && FileSystem.isRegularFile(dir.path + "/cache/attachments/pxnet-c1-eth0"))
        let aside = names.filter { $0.contains(FileSystem.quarantineMarker) }
        #expect(aside.count == 1)
        #expect(FileSystem.isRegularFile(dir.path + "/cache/attachments/" + (aside.first ?? "") + "/keep"))
        try plexus(cfg, try invocation("DEL"), exec).del()
        #expect(exec.live.isEmpty)
    }
}

@Suite struct KubeErrorCodeTests {
    @Test func anImpossiblePodIdentityIsAnEnvironmentErrorNot999() {
        // CNI_ARGS K8S_POD_NAMESPACE=../.. : the client refuses to build the request.
        let e = KubeError(.invalidArgument, operation: "get pod ../../x", detail: "namespace \"../..\" is not a valid DNS-1123 label")
        #expect(kubeCode(e) == .invalidEnvironment)
        #expect(kubeCode(KubeError(.timeout, operation: "get pod")) == .tryAgainLater)
        #expect(kubeCode(KubeError(.notFound, operation: "get pod")) == .unknownContainer)
    }
}
