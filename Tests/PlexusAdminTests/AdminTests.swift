import CNIInvoke
import CNISpec
import PlexusAdmin
import PlexusCore
import SystemKit
import Testing

#if canImport(Glibc)
import Glibc
#endif

final class Scratch {
    let path: String
    init() {
        var template = Array("/tmp/pxadmin.XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        path = p.map { String(cString: $0) } ?? "/tmp/pxadmin-fallback"
    }
    deinit { _ = system("rm -rf '\(path)'") }
}

func list(_ name: String, caps: String = "") throws -> NetworkConfigList {
    try NetworkConfigList(bytes: Array(#"{"cniVersion":"1.0.0","name":"\#(name)","plugins":[{"type":"bridge"\#(caps)}]}"#.utf8), source: "t")
}

func result(_ ifname: String, ip: String, mac: String) -> JSON {
    try! JSON.parse(#"{"cniVersion":"1.0.0","interfaces":[{"name":"vethx"},{"name":"\#(ifname)","mac":"\#(mac)","sandbox":"/ns"}],"ips":[{"address":"\#(ip)/24","interface":1}]}"#)
}

@Suite struct InspectTests {
    func seed(_ dir: String, cid: String = "c1", state: AttachmentRecord.State = .planned, cacheSecond: Bool = true) throws {
        let a = try list("a"), b = try list("b")
        let key = AttachmentKey(network: "pxnet", containerID: cid, ifname: "eth0")
        let args = try CNIArgs(parsing: "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod-\(cid);K8S_POD_UID=uid-\(cid)")
        try AttachmentStore(cniDir: dir).write(AttachmentRecord(
            key: key, netns: "/var/run/netns/px-\(cid)", cniArgs: args, pod: "ns1/pod-\(cid)", state: state,
            networks: [PlannedNetwork(list: a, ifname: "eth0", displayName: "a", isDefault: true),
                       PlannedNetwork(list: b, ifname: "net1", displayName: "ns1/nad-b")]))
        let cache = ResultCache(cniDir: dir)
        let owner = CachedAttachment.Owner(network: "pxnet", ifname: "eth0")
        try cache.write(CachedAttachment(containerID: cid, networkName: "a", ifname: "eth0", config: a.bytes, netns: "/ns",
                                         cniArgs: args, capabilityArgs: JSONObject(), result: result("eth0", ip: "10.1.0.5", mac: "02:00:00:00:00:05"), owner: owner))
        if cacheSecond {
            try cache.write(CachedAttachment(containerID: cid, networkName: "b", ifname: "net1", config: b.bytes, netns: "/ns",
                                             cniArgs: args, capabilityArgs: JSONObject(), result: result("net1", ip: "10.2.0.5", mac: "02:00:00:00:00:06"), owner: owner))
        }
    }

    @Test func reportsEveryAttachmentWithInterfacesIPsMACsAndDigests() throws {
        let s = Scratch()
        try seed(s.path)
        let r = try Inspector(cniDir: s.path, now: { FileSystem.now() + 90 }).inspect()
        #expect(r.attachments.count == 1 && r.problems.isEmpty && r.orphans.isEmpty)
        let a = r.attachments[0]
        #expect(a.pod == "ns1/pod-c1" && a.podUID == "uid-c1" && a.containerID == "c1" && a.state == "attached" && !a.busy)
        #expect((a.ageSeconds ?? 0) >= 90)
        #expect(a.networks.map(\.interface) == ["eth0", "net1"])
        #expect(a.networks.map(\.ips) == [["10.1.0.5"], ["10.2.0.5"]])
        #expect(a.networks.map(\.mac) == ["02:00:00:00:00:05", "02:00:00:00:00:06"])
        #expect(a.networks[0].configDigest == SHA256.hex(try list("a").bytes))
        #expect(a.stale == nil)
        #expect(!r.needsAttention)
    }

    @Test func statesPendingNetworksFailedTeardownsAndStaleness() throws {
        let s = Scratch()
        try seed(s.path, cid: "c1", cacheSecond: false)
        try seed(s.path, cid: "c2", state: .rollbackFailed)
        let r = try Inspector(cniDir: s.path, checkStale: true, netnsExists: { $0.hasSuffix("px-c1") }).inspect()
        let byCid = Dictionary(uniqueKeysWithValues: r.attachments.map { ($0.containerID, $0) })
        #expect(byCid["c1"]?.state == "partial")
        #expect(byCid["c1"]?.networks.map(\.state) == ["attached", "pending"])
        #expect(byCid["c2"]?.state == "rollback-failed (awaiting DEL)")
        #expect(byCid["c1"]?.stale == false && byCid["c2"]?.stale == true)
        #expect(r.needsAttention)
        #expect(r.table.contains("stale (netns gone)"))
    }

    @Test func corruptFilesAndOrphansAreReportedNotFatal() throws {
        let s = Scratch()
        try seed(s.path)
        try FileSystem.writeAtomically(s.path + "/attachments/pxnet-c9-eth0", Array("{truncated".utf8))
        mkfifo(s.path + "/results/b-c9-net1", 0o600)
        let a = try list("a")
        try ResultCache(cniDir: s.path).write(CachedAttachment(containerID: "c7", networkName: "a", ifname: "eth0", config: a.bytes,
                                                               netns: "", cniArgs: CNIArgs(), capabilityArgs: JSONObject(), result: nil,
                                                               owner: .init(network: "pxnet", ifname: "eth0")))
        let r = try Inspector(cniDir: s.path).inspect()
        #expect(r.attachments.count == 1)
        #expect(Set(r.problems.map(\.path)) == [s.path + "/attachments/pxnet-c9-eth0", s.path + "/results/b-c9-net1"])
        #expect(r.orphans.map(\.containerID) == ["c7"])
        #expect(r.table.contains("orphaned result: a container c7 eth0"))
        #expect(r.json["unreadableFiles"]?.arrayValue?.count == 2)
    }

    @Test func aContainerWhoseLockIsHeldIsBusyAndInspectDoesNotWait() throws {
        let s = Scratch()
        try seed(s.path)
        let locks = LockSet(cniDir: s.path)
        try FileSystem.makeDirectories(locks.directory)
        let held = try FileLock(path: locks.bucketPath("c1"), mode: .exclusive)
        let r = try Inspector(cniDir: s.path).inspect()
        #expect(r.attachments.first?.busy == true)
        held.unlock()
        #expect(try Inspector(cniDir: s.path).inspect().attachments.first?.busy == false)
    }

    @Test func tableColumnsAlign() throws {
        let s = Scratch()
        try seed(s.path, cid: "c1")
        try seed(s.path, cid: "c2222222222222222")
        let lines = try Inspector(cniDir: s.path).inspect().table.split(separator: "\n").map(String.init)
        let header = Array(lines[0])
        let word = Array("NETWORK")
        guard let offset = (0...(header.count - word.count)).first(where: { Array(header[$0..<($0 + word.count)]) == word }) else {
            Issue.record("no NETWORK column")
            return
        }
        for l in lines.dropFirst().map(Array.init) where l.count > offset {
            #expect(l[offset - 1] == " " && l[offset] != " ", "misaligned: \(String(l))")
        }
    }
}

/// Answers VERSION from a table instead of running plugins.
struct TableProbe: VersionProbe {
    var versions: [String] = ["0.3.1", "0.4.0", "1.0.0"]
    func supportedVersions(pluginPath: String, cniVersion: String) -> Result<[String], CNIError> { .success(versions) }
}

@Suite struct ValidateTests {
    func validator(_ s: Scratch, confDir: String? = nil) throws -> Validator {
        try FileSystem.makeDirectories(s.path + "/bin")
        for p in ["bridge", "macvlan", "portmap"] { try FileSystem.writeAtomically(s.path + "/bin/" + p, Array("#!/bin/sh\n".utf8), mode: 0o755) }
        return Validator(searchPaths: [s.path + "/bin"], confDir: confDir, probe: TableProbe())
    }

    func nad(_ config: String, name: String = "mv", annotations: String = "") -> JSON {
        let cfg = JSON.string(config).serialized()
        return try! JSON.parse(#"{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition","metadata":{"name":"\#(name)","namespace":"ns1"\#(annotations)},"spec":{"config":\#(cfg)}}"#)
    }

    @Test func aGoodNADHasNoFindings() throws {
        let s = Scratch()
        let f = try validator(s).validate(document: nad(#"{"cniVersion":"1.0.0","name":"mv","plugins":[{"type":"macvlan","capabilities":{"ips":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
                                                       annotations: #","annotations":{"k8s.v1.cni.cncf.io/resourceName":"intel.com/intel_sriov_netdevice"}"#))
        #expect(f.isEmpty, "\(f)")
    }

    @Test func findingsNameTheirPath() throws {
        let s = Scratch()
        let f = try validator(s).validate(document: nad(#"{"cniVersion":"1.1.0","name":"m v","plugins":[{"type":"macvlan","capabilities":{"ips":"yes"}},{"type":"../x"},{"type":"missing"}]}"#,
                                                       name: "Bad_Name", annotations: #","annotations":{"k8s.v1.cni.cncf.io/resourceName":"nodomain"}"#))
        let byPath = Dictionary(grouping: f, by: \.path)
        #expect(byPath["/metadata/name"] != nil)
        #expect(byPath["/metadata/annotations/k8s.v1.cni.cncf.io~1resourceName"] != nil)
        #expect(byPath["/spec/config/name"] != nil)
        #expect(byPath["/spec/config/plugins/0/capabilities/ips"]?.first?.message.contains("true or false") == true)
        #expect(byPath["/spec/config/plugins/0/type"]?.first?.message.contains("does not support cniVersion 1.1.0") == true)
        #expect(byPath["/spec/config/plugins/1/type"]?.first?.message.contains("path components") == true)
        #expect(byPath["/spec/config/plugins/2/type"]?.first?.message.contains("not found") == true)
        #expect(f.allSatisfy { $0.severity == .error })
    }

    @Test(arguments: [
        (#"{"kind":"NetworkAttachmentDefinition","apiVersion":"v1","metadata":{"name":"a"}}"#, "/apiVersion"),
        (#"{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition","metadata":{"name":"a"},"spec":{"config":5}}"#, "/spec/config"),
        (#"{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition","metadata":{"name":"a"},"spec":{"config":"{nope"}}"#, "/spec/config"),
        (#"{"cniVersion":"9.9.9","name":"x","type":"bridge"}"#, "/cniVersion"),
        (#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#, "/plugins"),
        (#"{"cniVersion":"1.0.0","name":"x","type":"bri\u0000dge"}"#, "/type"),
    ])
    func malformedDocuments(_ text: String, _ path: String) throws {
        let s = Scratch()
        let f = try validator(s).validate(document: try JSON.parse(text))
        #expect(f.contains { $0.path == path && $0.severity == .error }, "\(f)")
    }

    @Test func anEmptyConfigIsLookedUpInConfDir() throws {
        let s = Scratch()
        try FileSystem.makeDirectories(s.path + "/conf")
        try FileSystem.writeAtomically(s.path + "/conf/10-mv.conf", Array(#"{"cniVersion":"1.0.0","name":"mv","type":"macvlan"}"#.utf8))
        #expect(try validator(s, confDir: s.path + "/conf").validate(document: nad("", name: "mv")).isEmpty)
        let missing = try validator(s, confDir: s.path + "/conf").validate(document: nad("", name: "other"))
        #expect(missing.count == 1 && missing[0].severity == .error && missing[0].message.contains("no file"))
        #expect(try validator(s).validate(document: nad("", name: "mv")).map(\.severity) == [.warning])
    }

    @Test func aPlexusConfigurationIsCheckedKeyByKey() throws {
        let s = Scratch()
        let text = #"{"cniVersion":"1.0.0","name":"plexus","plugins":[{"type":"plexus","binDir":"\#(s.path)/bin","readinessTimeoutSeconds":-0,"capabilities":{"bandwidth":true},"delegates":[{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]},{"cniVersion":"1.0.0","name":"x","type":"nothere"}],"defaultNetworks":["storage"]}]}"#
        let f = try validator(s).validate(document: try JSON.parse(text))
        let text2 = f.map(\.description).joined(separator: "\n")
        #expect(f.contains { $0.path == "/plugins/0/readinessTimeoutSeconds" && $0.severity == .error }, "\(text2)")
        #expect(f.contains { $0.path == "/plugins/0/delegates/1/type" && $0.message.contains("not found") }, "\(text2)")
        #expect(f.contains { $0.path == "/plugins/0/defaultNetworks/0" && $0.severity == .warning }, "\(text2)")
        #expect(f.contains { $0.path == "/plugins/0/capabilities" && $0.message.contains("portMappings") }, "\(text2)")
        #expect(f.contains { $0.path == "/plugins/0/capabilities/bandwidth" }, "\(text2)")
        #expect(try validator(s).validate(document: try JSON.parse(#"{"cniVersion":"1.0.0","name":"p","type":"plexus"}"#))
            .contains { $0.message.contains("clusterNetwork") })
    }

    @Test func finalizersAndTheAuxiliaryChainAreChecked() throws {
        let s = Scratch()
        try FileSystem.makeDirectories(s.path + "/conf/_finalize.d")
        try FileSystem.makeDirectories(s.path + "/conf/aux")
        try FileSystem.writeAtomically(s.path + "/conf/10-k8s.conflist", Array(#"{"cniVersion":"1.0.0","name":"k8s","plugins":[{"type":"bridge"}]}"#.utf8))
        try FileSystem.writeAtomically(s.path + "/conf/_finalize.d/10-a.conf", Array(#"{"type":"nofinalizer"}"#.utf8))
        try FileSystem.writeAtomically(s.path + "/conf/aux/t.conf", Array(#"{"type":"missingtuning"}"#.utf8))
        let text = #"{"cniVersion":"1.0.0","name":"p","type":"plexus","binDir":"\#(s.path)/bin","confDir":"\#(s.path)/conf","clusterNetwork":"\#(s.path)/conf/10-k8s.conflist","auxiliaryCNIChainName":"aux","finalizers":[{"type":"portmap"},{"type":"gone"}]}"#
        let f = try validator(s).validate(document: try JSON.parse(text))
        let all = f.map(\.description).joined(separator: "\n")
        #expect(!f.contains { $0.path == "/finalizers/0/type" }, "\(all)")
        #expect(f.contains { $0.path == "/finalizers/1/type" && $0.message.contains("not found") }, "\(all)")
        #expect(f.contains { $0.path == s.path + "/conf/_finalize.d/10-a.conf/type" && $0.message.contains("not found") }, "\(all)")
        #expect(f.contains { $0.path == "/auxiliaryCNIChainName/1/type" && $0.message.contains("not found") }, "\(all)")
        // A broken drop-in is one error naming its file.
        try FileSystem.writeAtomically(s.path + "/conf/_finalize.d/20-b.conf", Array("{broken".utf8))
        let broken = try validator(s).validate(document: try JSON.parse(text))
        #expect(broken.contains { $0.path == s.path + "/conf/_finalize.d" && $0.message.contains("20-b.conf") })
    }
}
