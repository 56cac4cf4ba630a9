import CNIInvoke
import CNISpec
import SystemKit
import Testing
@testable import PlexusCore

#if canImport(Glibc)
import Glibc
#endif

/// The CNIError a body throws, or nil when it succeeds.
func cniFailure(_ body: () throws -> Void) -> CNIError? {
    do { try body() } catch { return (error as? CNIError) ?? CNIError(.internalError, "not a CNIError: \(error)") }
    return nil
}

/// Finalizers: once per pod after every network, merged prevResult, rollback, DEL first and in reverse from the
/// record, CHECK after the networks, GC and STATUS.
@Suite struct FinalizerTests {
    /// Two networks, one finalizer in the configuration (`fin-a`) and one drop-in in `<confDir>/_finalize.d/` (`fin-b`).
    func setUp(_ dir: TempDir, configFinalizers: String = #"[{"type":"fin","name":"fin-a"}]"#,
               dropIn: String? = #"{"type":"fin","name":"fin-b","cniVersion":"0.4.0"}"#, version: String = "1.1.0") throws -> PlexusConfig {
        if let dropIn {
            try FileSystem.makeDirectories(dir.path + "/conf/_finalize.d", mode: 0o755)
            try FileSystem.writeAtomically(dir.path + "/conf/_finalize.d/50-b.conf", Array(dropIn.utf8), mode: 0o644)
        }
        return try makeConfig(dir, version: version, extra: #","finalizers":\#(configFinalizers)"#,
                              delegates: [net("clust", version: "1.0.0"), net("second", version: "0.4.0")])
    }

    func p(_ cfg: PlexusConfig, _ cmd: String, _ exec: FakeExecutor, args: String = "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1") throws -> Plexus {
        plexus(cfg, try invocation(cmd, args: args), exec)
    }

    @Test func finalizersRunAfterEveryNetworkWithTheMergedResult() throws {
        let dir = TempDir()
        let cfg = try setUp(dir)
        let exec = FakeExecutor()
        // A finalizer that tries to change the result: ignored.
        exec.results["fin-a"] = try JSON.parse(#"{"cniVersion":"1.1.0","ips":[{"address":"192.0.2.9/32"}]}"#)
        let result = try p(cfg, "ADD", exec).add()
        #expect(exec.calls.map { "\($0.type)/\($0.ifname)" } == ["bridge/eth0", "bridge/net1", "fin/eth0", "fin/eth0"])
        let (a, b) = (exec.calls[2], exec.calls[3])
        #expect(a.stdin["name"] == .string("fin-a") && a.stdin["cniVersion"] == .string("1.1.0"))
        #expect(b.stdin["name"] == .string("fin-b") && b.stdin["cniVersion"] == .string("0.4.0"))
        #expect(a.netns == "/var/run/netns/px1" && a.cniArgs.contains("K8S_POD_NAME=pod1"))
        // Both interfaces, the second network's IP pointing at its own interface in the merged list.
        let merged = try #require(a.stdin["prevResult"])
        #expect(merged["interfaces"]?.arrayValue?.compactMap { $0["name"]?.stringValue } == ["eth0", "net1"])
        #expect(merged["ips"]?.arrayValue?.compactMap { $0["interface"]?.intValue } == [0, 1])
        #expect(b.stdin["prevResult"]?["cniVersion"] == .string("0.4.0"))
        // The runtime gets the cluster network's result, not the finalizer's.
        #expect(result["ips"]?.arrayValue?.count == 1)
        #expect(result["ips"]?.arrayValue?.first?["address"] != .string("192.0.2.9/32"))
        #expect(result["interfaces"]?.arrayValue?.count == 1)
    }

    @Test func aFailingFinalizerRollsEverythingBack() throws {
        let dir = TempDir()
        let cfg = try setUp(dir)
        let exec = FakeExecutor()
        exec.failures["ADD/fin-b"] = CNIError(.internalError, "cannot insert rules")
        let error = try #require(cniFailure { _ = try p(cfg, "ADD", exec).add() })
        #expect(error.msg.contains("finalizer \"fin\" (fin-b)") && error.msg.contains("cannot insert rules"))
        #expect(error.msg.contains("pod ns1/pod1"))
        let dels = exec.calls.filter { $0.command == "DEL" }.map { $0.stdin["name"]?.stringValue ?? "" }
        #expect(dels == ["fin-b", "fin-a", "second", "clust"])
        #expect(exec.live.isEmpty)
        #expect(dir.files("cache/attachments").isEmpty && dir.files("cache/results").isEmpty)
    }

    @Test func delRunsTheRecordedFinalizersFirstInReverseEvenAfterTheConfigChanged() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        _ = try p(try setUp(dir), "ADD", exec).add()
        // The finalizers are removed from the configuration and the drop-in directory: DEL still runs them.
        _ = system("rm -rf '\(dir.path)/conf/_finalize.d'")
        let changed = try setUp(dir, configFinalizers: "[]", dropIn: nil)
        try p(changed, "DEL", exec).del()
        let dels = exec.calls.filter { $0.command == "DEL" }
        #expect(dels.map { $0.stdin["name"]?.stringValue ?? "" } == ["fin-b", "fin-a", "second", "clust"])
        // With the merged result of the cached networks as prevResult, on the cluster interface.
        #expect(dels[0].stdin["prevResult"]?["interfaces"]?.arrayValue?.count == 2)
        #expect(dels[0].ifname == "eth0")
        #expect(dir.files("cache/attachments").isEmpty)
    }

    @Test func aFailingFinalizerDelIsRetriedButTheNetworksAreStillDeleted() throws {
        let dir = TempDir()
        let cfg = try setUp(dir, dropIn: nil)
        let exec = FakeExecutor()
        _ = try p(cfg, "ADD", exec).add()
        exec.failures["DEL/fin-a"] = CNIError(.tryAgainLater, "busy")
        #expect(throws: CNIError.self) { try p(cfg, "DEL", exec).del() }
        #expect(exec.live == ["fin-a/c1/eth0"])
        #expect(dir.files("cache/attachments") == ["pxnet-c1-eth0"])
        exec.failures = [:]
        try p(cfg, "DEL", exec).del()
        #expect(exec.live.isEmpty && dir.files("cache/attachments").isEmpty)
    }

    @Test func delWithoutARecordRunsTheConfiguredFinalizersBestEffort() throws {
        let dir = TempDir()
        let cfg = try setUp(dir, dropIn: nil)
        let exec = FakeExecutor()
        exec.failures["DEL/fin-a"] = CNIError(.internalError, "nothing to delete")
        try p(cfg, "DEL", exec).del()
        #expect(exec.calls.first?.stdin["name"] == .string("fin-a"))
        #expect(exec.calls.first?.stdin["prevResult"] == nil)
    }

    @Test func checkRunsFinalizersAfterTheNetworks() throws {
        let dir = TempDir()
        let cfg = try setUp(dir)
        let exec = FakeExecutor()
        _ = try p(cfg, "ADD", exec).add()
        let before = exec.calls.count
        try p(cfg, "CHECK", exec).check()
        let checks = exec.calls[before...].map { $0.stdin["name"]?.stringValue ?? "" }
        #expect(checks == ["clust", "second", "fin-a", "fin-b"])
        exec.failures["CHECK/fin-b"] = CNIError(.internalError, "rule missing")
        let error = try #require(cniFailure { try p(cfg, "CHECK", exec).check() })
        #expect(error.msg.contains("fin-b") && error.msg.contains("rule missing"))
    }

    @Test func gcAndStatusReachTheFinalizers() throws {
        let dir = TempDir()
        let cfg = try setUp(dir, dropIn: #"{"type":"fin","name":"fin-b"}"#)
        let exec = FakeExecutor()
        let gcText = #"{"cniVersion":"1.1.0","name":"pxnet","type":"plexus","cniDir":"\#(dir.path)/cache","confDir":"\#(dir.path)/conf","binDir":"/fake","finalizers":[{"type":"fin","name":"fin-a"}],"delegates":[\#(net("clust"))],"cni.dev/valid-attachments":[{"containerID":"c9","ifname":"eth0"}]}"#
        let gcConfig = try PlexusConfig(bytes: Array(gcText.utf8))
        try plexus(gcConfig, try CNIInvocation(environment: ["CNI_COMMAND": "GC"]), exec).gc()
        let gcs = exec.calls.filter { $0.command == "GC" && $0.type == "fin" }
        #expect(gcs.map { $0.stdin["name"]?.stringValue ?? "" } == ["fin-a", "fin-b"])
        #expect(gcs[0].stdin["cni.dev/valid-attachments"]?.serialized() == #"[{"containerID":"c9","ifname":"eth0"}]"#)
        try plexus(cfg, try CNIInvocation(environment: ["CNI_COMMAND": "STATUS"]), exec).status()
        // The networks are 1.0.0/0.4.0 lists (no STATUS); the finalizers take Plexus' 1.1.0.
        #expect(exec.calls.filter { $0.command == "STATUS" }.map { $0.stdin["name"]?.stringValue ?? "" } == ["fin-a", "fin-b"])
    }

    @Test func badFinalizersAreConfigurationErrors() throws {
        let dir = TempDir()
        #expect(throws: CNIError.self) { try setUp(dir, configFinalizers: #"[{"name":"no-type"}]"#, dropIn: nil) }
        #expect(throws: CNIError.self) { try setUp(dir, configFinalizers: #"[{"type":"../x"}]"#, dropIn: nil) }
        #expect(throws: CNIError.self) { try setUp(dir, configFinalizers: #"{"type":"x"}"#, dropIn: nil) }
        let cfg = try setUp(dir, dropIn: "{broken")
        let exec = FakeExecutor()
        let error = try #require(cniFailure { _ = try p(cfg, "ADD", exec).add() })
        #expect(error.code == .decodingFailure && error.msg.contains("_finalize.d/50-b.conf"))
        #expect(exec.calls.isEmpty)
        let status = cniFailure { try plexus(cfg, try CNIInvocation(environment: ["CNI_COMMAND": "STATUS"]), exec).status() }
        #expect(status?.code == .notAvailable)
    }

    @Test func noFinalizersMeansNoExtraCallsAndAnUnchangedRecord() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("clust")])
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        #expect(exec.calls.count == 1)
        let bytes = try FileSystem.read(dir.path + "/cache/attachments/pxnet-c1-eth0")
        #expect(!String(decoding: bytes, as: UTF8.self).contains("finalizers"))
    }

    @Test func recordRoundTripsFinalizersAndAuxiliaryNetworks() throws {
        let list = try NetworkConfigList(json: try JSON.parse(net("n")), source: "t")
        let fin = try Finalizers.list(try #require(try JSON.parse(#"{"type":"fin","k":1}"#).objectValue),
                                      config: try makeConfig(TempDir(), delegates: [net("n")]), source: "t")
        let record = AttachmentRecord(key: AttachmentKey(network: "pxnet", containerID: "c1", ifname: "eth0"), netns: "/n",
                                      cniArgs: CNIArgs(), pod: nil, state: .planned,
                                      networks: [PlannedNetwork(list: list, ifname: "net1", isAuxiliary: true)], finalizers: [fin])
        let back = try #require(AttachmentRecord(json: record.json))
        #expect(back == record)
        #expect(back.finalizers[0].name == "pxnet" && back.finalizers[0].plugins[0]["k"] == .number("1"))
    }
}

@Suite struct TraceContextTests {
    @Test func traceIDFromTraceparent() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736"
        #expect(CNIInvocation.traceID(traceparent: "00-\(id)-00f067aa0ba902b7-01") == id)
        #expect(CNIInvocation.traceID(traceparent: "01-\(id)-00f067aa0ba902b7-01-later") == id)
        for bad in ["", "00-\(id)-00f067aa0ba902b7", "ff-\(id)-00f067aa0ba902b7-01", "00-\(id.uppercased())-00f067aa0ba902b7-01",
                    "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "00-\(id)-0000000000000000-01",
                    "00-\(id)-00f067aa0ba902b7-01-extra", "00-\(id)x-00f067aa0ba902b7-01", "00-\(id)-00f067aa0ba902b7-1"] {
            #expect(CNIInvocation.traceID(traceparent: bad) == nil, "\(bad)")
        }
    }

    @Test func invocationCarriesTheTraceID() throws {
        let inv = try CNIInvocation(environment: ["CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/n", "CNI_IFNAME": "eth0",
                                                  "TRACEPARENT": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"])
        #expect(inv.traceID == "4bf92f3577b34da6a3ce929d0e0e4736")
    }
}
