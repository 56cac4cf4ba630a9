import CNIInvoke
import CNISpec
import SystemKit
import Testing
@testable import PlexusCore

@Suite struct AddDelTests {
    @Test func addAttachesEveryNetworkWithGeneratedNamesAndCaches() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("clust"), net("a", version: "0.3.1"), net("b", version: "0.4.0")])
        let result = try plexus(cfg, try invocation("ADD"), exec).add()
        #expect(exec.calls.map(\.ifname) == ["eth0", "net1", "net2"])
        #expect(exec.calls.map(\.command) == ["ADD", "ADD", "ADD"])
        #expect(result["cniVersion"] == .string("1.0.0"))
        #expect(result["interfaces"]?.arrayValue?.first?["name"] == .string("eth0"))
        #expect(dir.files("cache/results") == ["a-c1-net1", "b-c1-net2", "clust-c1-eth0"])
        #expect(dir.files("cache/attachments") == ["pxnet-c1-eth0"])
        // Unknown keys and raw numbers reach the delegate unchanged.
        #expect(exec.calls[0].stdin["x"]?.serialized() == #"{"keep":1.50}"#)
    }

    @Test func resultIsConvertedToPlexusVersion() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, version: "0.4.0", delegates: [net("clust", version: "1.0.0")])
        let result = try plexus(cfg, try invocation("ADD"), exec).add()
        #expect(result["cniVersion"] == .string("0.4.0"))
        #expect(result["ips"]?.arrayValue?.first?["version"] == .string("4"))
    }

    @Test func runtimeConfigGoesToClusterNetworkOnlyAndOnlyDeclaredCapabilities() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let clust = #"{"cniVersion":"1.0.0","name":"clust","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#
        let other = #"{"cniVersion":"1.0.0","name":"o","plugins":[{"type":"portmap","capabilities":{"portMappings":true}}]}"#
        let cfg = try makeConfig(dir, extra: #","runtimeConfig":{"portMappings":[{"HostPort":8080,"ContainerPort":80}],"io.kubernetes.cri.pod-annotations":{"a":"b"}}"#,
                                 delegates: [clust, other])
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        #expect(exec.calls[0].stdin["runtimeConfig"] == nil)
        #expect(exec.calls[1].stdin["runtimeConfig"]?.serialized() == #"{"portMappings":[{"HostPort":8080,"ContainerPort":80}]}"#)
        #expect(exec.calls[2].stdin["runtimeConfig"] == nil)
    }

    @Test func failureOfThirdNetworkRollsBackInReverse() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        exec.failures["ADD/c"] = CNIError(.tryAgainLater, "boom")
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b"), net("c")])
        do {
            _ = try plexus(cfg, try invocation("ADD"), exec).add()
            Issue.record("ADD succeeded")
        } catch let error as CNIError {
            #expect(error.code == .tryAgainLater)
            #expect(error.msg.contains("pod ns1/pod1"))
            #expect(error.msg.contains("network \"c\""))
        }
        let seq: [String] = exec.calls.map { "\($0.command) \($0.ifname)" }
        #expect(seq == ["ADD eth0", "ADD net1", "ADD net2", "DEL net2", "DEL net1", "DEL eth0"])
        #expect(exec.live.isEmpty)
        #expect(dir.files("cache/results").isEmpty)
        #expect(dir.files("cache/attachments").isEmpty)
    }

    @Test func failedRollbackIsRecordedAndRetriedByDel() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        exec.failures["ADD/c"] = CNIError(.tryAgainLater, "boom")
        exec.failures["DEL/a"] = CNIError(.tryAgainLater, "del boom")
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b"), net("c")])
        #expect(throws: CNIError.self) { try plexus(cfg, try invocation("ADD"), exec).add() }
        #expect(dir.files("cache/attachments") == ["pxnet-c1-eth0"])
        #expect(dir.files("cache/results") == ["a-c1-eth0"])
        exec.failures = [:]
        try plexus(cfg, try invocation("DEL"), exec).del()
        let last: [String] = exec.calls.suffix(1).map { "\($0.command) \($0.ifname)" }
        #expect(last == ["DEL eth0"])
        #expect(exec.live.isEmpty)
        #expect(dir.files("cache/attachments").isEmpty && dir.files("cache/results").isEmpty)
    }

    @Test func failedNetworkThatAlsoFailsDelDoesNotBlockTheRollback() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        exec.failures["ADD/c"] = CNIError(.internalError, "master missing")
        exec.failures["DEL/c"] = CNIError(.internalError, "master missing")
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b"), net("c")])
        do {
            _ = try plexus(cfg, try invocation("ADD"), exec).add()
            Issue.record("ADD succeeded")
        } catch let error as CNIError {
            #expect(!error.msg.contains("rollback incomplete"))
        }
        #expect(dir.files("cache/attachments").isEmpty && dir.files("cache/results").isEmpty)
        try plexus(cfg, try invocation("DEL"), exec).del()
    }

    @Test func transientDelFailureOfTheFailedNetworkIsRecordedAndRetried() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        exec.failures["ADD/c"] = CNIError(.internalError, "boom")
        exec.failures["DEL/c"] = CNIError(.tryAgainLater, "busy")
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b"), net("c")])
        #expect(throws: CNIError.self) { try plexus(cfg, try invocation("ADD"), exec).add() }
        #expect(dir.files("cache/attachments") == ["pxnet-c1-eth0"])
        #expect(throws: CNIError.self) { try plexus(cfg, try invocation("DEL"), exec).del() }
        exec.failures = [:]
        try plexus(cfg, try invocation("DEL"), exec).del()
        #expect(dir.files("cache/attachments").isEmpty)
        let lastDel = exec.calls.last { $0.command == "DEL" }
        #expect(lastDel?.ifname == "net2")
    }

    @Test func corruptRecordAndCorruptResultStillDeleteEveryConfiguredNetwork() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b"), net("c")])
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        try FileSystem.writeAtomically(dir.path + "/cache/attachments/pxnet-c1-eth0", Array("{trunc".utf8))
        try FileSystem.writeAtomically(dir.path + "/cache/results/c-c1-net2", Array("garbage".utf8))
        try plexus(cfg, try invocation("DEL"), exec).del()
        #expect(exec.live.isEmpty)
        #expect(dir.files("cache/attachments").isEmpty && dir.files("cache/results").isEmpty)
    }

    @Test func delRunsReverseWithCachedPrevResultAndContinuesPastFailures() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b"), net("c")])
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        exec.failures["DEL/b"] = CNIError(.ioFailure, "stuck")
        do {
            try plexus(cfg, try invocation("DEL"), exec).del()
            Issue.record("DEL succeeded")
        } catch let error as CNIError {
            #expect(error.msg.contains("network \"b\""))
        }
        let dels = exec.calls.filter { $0.command == "DEL" }
        #expect(dels.map(\.ifname) == ["net2", "net1", "eth0"])
        #expect(dels.allSatisfy { $0.stdin["prevResult"] != nil })
        #expect(dir.files("cache/results") == ["b-c1-net1"])
        exec.failures = [:]
        try plexus(cfg, try invocation("DEL"), exec).del()
        #expect(exec.live.isEmpty)
        #expect(dir.files("cache/results").isEmpty && dir.files("cache/attachments").isEmpty)
    }

    @Test func concurrentTeardownDeletesEveryNetworkAndKeepsChainOrder() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let chain = #"{"cniVersion":"1.0.0","name":"c","plugins":[{"type":"bridge"},{"type":"tuning"},{"type":"portmap"}]}"#
        let cfg = try makeConfig(dir, parallel: true, delegates: [net("a"), net("b"), chain, net("d")])
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        exec.failures["DEL/b"] = CNIError(.ioFailure, "stuck")
        #expect(throws: CNIError.self) { try plexus(cfg, try invocation("DEL"), exec).del() }
        let dels = exec.calls.filter { $0.command == "DEL" }
        #expect(Set(dels.map(\.ifname)) == ["eth0", "net1", "net2", "net3"])
        let chainOrder = dels.filter { $0.ifname == "net2" }.map(\.type)
        #expect(chainOrder == ["portmap", "tuning", "bridge"])
        #expect(dir.files("cache/results") == ["b-c1-net1"])
        exec.failures = [:]
        try plexus(cfg, try invocation("DEL"), exec).del()
        #expect(exec.live.isEmpty)
        #expect(dir.files("cache/attachments").isEmpty)
    }

    @Test func corruptRecordFallsBackToResultCache() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b")])
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        try FileSystem.writeAtomically(dir.path + "/cache/attachments/pxnet-c1-eth0", Array("{garbage".utf8))
        try plexus(cfg, try invocation("DEL", netns: ""), exec).del()
        #expect(exec.live.isEmpty)
        let dels = exec.calls.filter { $0.command == "DEL" }
        #expect(dels.map(\.ifname) == ["net1", "eth0"])
        #expect(dels.allSatisfy { $0.netns.isEmpty })
    }

    @Test func corruptResultFileStillDeletes() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b")])
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        try FileSystem.writeAtomically(dir.path + "/cache/results/b-c1-net1", Array("{\"kind\":\"cniCacheV1\"".utf8))
        try plexus(cfg, try invocation("DEL"), exec).del()
        #expect(exec.live.isEmpty)
        #expect(exec.calls.last(where: { $0.ifname == "net1" })?.stdin["prevResult"] == nil)
    }

    @Test func delWithoutAnyCacheUsesCurrentConfigAndSucceeds() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b")])
        try plexus(cfg, try invocation("DEL", cid: "never"), exec).del()
        let seq: [String] = exec.calls.map { "\($0.command) \($0.ifname)" }
        #expect(seq == ["DEL net1", "DEL eth0"])
    }

    @Test func delWithoutCacheSucceedsWhenTheConfiguredNetworksCannotBeLoaded() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        // clusterNetwork names something only the API would know (a NAD); DEL must not depend on it.
        let text = #"{"cniVersion":"1.0.0","name":"pxnet","type":"plexus","cniDir":"\#(dir.path)/cache","confDir":"\#(dir.path)/conf","binDir":"/fake","clusterNetwork":"nad-only"}"#
        let cfg = try PlexusConfig(bytes: Array(text.utf8))
        try plexus(cfg, try invocation("DEL", netns: ""), exec).del()
        #expect(exec.calls.isEmpty)
    }

    @Test func duplicateInterfaceNamesFailBeforeAnythingRuns() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a"), net("b")])
        let inv = try invocation("ADD", ifname: "net1")
        #expect(throws: CNIError.self) { try plexus(cfg, inv, exec).add() }
        #expect(exec.calls.isEmpty)
    }

    @Test func staleRecordIsTornDownBeforeANewAdd() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a")])
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        #expect(exec.calls.map(\.command) == ["ADD", "DEL", "ADD"])
    }

    @Test func checkCoversEveryNetworkAndSkipsOldVersions() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, delegates: [net("a"), net("old", version: "0.3.1"), net("b")])
        _ = try plexus(cfg, try invocation("ADD"), exec).add()
        try plexus(cfg, try invocation("CHECK"), exec).check()
        let checks = exec.calls.filter { $0.command == "CHECK" }
        #expect(checks.map(\.ifname) == ["eth0", "net2"])
        #expect(checks.allSatisfy { $0.stdin["prevResult"] != nil })
        exec.failures["CHECK/b"] = CNIError(.internalError, "net2 missing")
        do {
            try plexus(cfg, try invocation("CHECK"), exec).check()
            Issue.record("CHECK passed")
        } catch let error as CNIError { #expect(error.msg.contains("network \"b\"")) }
    }
}

@Suite struct GCAndStatusTests {
    func gcConfig(_ dir: TempDir, name: String = "pxnet", valid: [(String, String)]?) throws -> PlexusConfig {
        let v = valid.map { list in
            #","cni.dev/valid-attachments":["# + list.map { #"{"containerID":"\#($0.0)","ifname":"\#($0.1)"}"# }.joined(separator: ",") + "]"
        } ?? ""
        let text = #"{"cniVersion":"1.1.0","name":"\#(name)","type":"plexus","cniDir":"\#(dir.path)/cache","confDir":"\#(dir.path)/conf","binDir":"/fake"\#(v),"delegates":[\#(net("a", version: "1.1.0")),\#(net("b", version: "1.1.0")),\#(net("old", version: "1.0.0"))]}"#
        return try PlexusConfig(bytes: Array(text.utf8))
    }

    @Test func gcDeletesOnlyStaleAttachmentsAndPassesPerNetworkValidLists() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try gcConfig(dir, valid: nil)
        for cid in ["c1", "c2"] { _ = try plexus(cfg, try invocation("ADD", cid: cid), exec).add() }
        let gcCfg = try gcConfig(dir, valid: [("c1", "eth0")])
        try plexus(gcCfg, try invocation("GC"), exec).gc()
        #expect(exec.live == ["a/c1/eth0", "b/c1/net1", "old/c1/net2"])
        let gcs = exec.calls.filter { $0.command == "GC" }
        #expect(gcs.map { $0.stdin["name"]?.stringValue ?? "" } == ["a", "b"])  // "old" is below 1.1.0
        #expect(gcs[0].stdin["cni.dev/valid-attachments"]?.serialized() == #"[{"containerID":"c1","ifname":"eth0"}]"#)
        #expect(gcs[1].stdin["cni.dev/valid-attachments"]?.serialized() == #"[{"containerID":"c1","ifname":"net1"}]"#)
        #expect(dir.files("cache/attachments") == ["pxnet-c1-eth0"])
    }

    @Test func gcNeverTouchesAnotherPlexusConfiguration() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let mine = try gcConfig(dir, name: "pxone", valid: nil)
        let other = try gcConfig(dir, name: "pxtwo", valid: nil)
        _ = try plexus(mine, try invocation("ADD", cid: "c1", ifname: "eth0"), exec).add()
        // The other configuration attaches the same container with another ifname; its delegates get other names.
        _ = try plexus(other, try invocation("ADD", cid: "c1", ifname: "eth1"), exec).add()
        try plexus(try gcConfig(dir, name: "pxone", valid: []), try invocation("GC"), exec).gc()
        #expect(exec.live.contains("a/c1/eth1"))
        #expect(!exec.live.contains("a/c1/eth0"))
        #expect(dir.files("cache/attachments") == ["pxtwo-c1-eth1"])
        // The other configuration's live attachment is in network a's valid list.
        let gcA = exec.calls.last { $0.command == "GC" && $0.stdin["name"]?.stringValue == "a" }
        #expect(gcA?.stdin["cni.dev/valid-attachments"]?.serialized() == #"[{"containerID":"c1","ifname":"eth1"}]"#)
    }

    @Test func statusSkipsAClusterNetworkOnlyTheAPIKnowsButFailsOnAMissingPath() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        func cfg(_ cluster: String) throws -> PlexusConfig {
            try PlexusConfig(bytes: Array(#"{"cniVersion":"1.1.0","name":"pxnet","type":"plexus","cniDir":"\#(dir.path)/cache","confDir":"\#(dir.path)/conf","binDir":"/fake","clusterNetwork":"\#(cluster)"}"#.utf8))
        }
        try plexus(try cfg("nad-only"), try invocation("STATUS"), exec).status()
        #expect(exec.calls.isEmpty)
        do {
            try plexus(try cfg(dir.path + "/missing.conflist"), try invocation("STATUS"), exec).status()
            Issue.record("STATUS passed with a missing cluster network file")
        } catch let error as CNIError { #expect(error.code == .notAvailable) }
    }

    @Test func gcErrorsDoNotStopOtherNetworks() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        exec.failures["GC/a"] = CNIError(.internalError, "gc a failed")
        do {
            try plexus(try gcConfig(dir, valid: []), try invocation("GC"), exec).gc()
            Issue.record("GC passed")
        } catch let error as CNIError { #expect(error.msg.contains("network \"a\"")) }
        #expect(exec.calls.filter { $0.command == "GC" }.count == 2)
    }

    @Test func statusReportsReadinessAndForwardsDelegateCodes() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let ready = dir.path + "/ready"
        let text = #"{"cniVersion":"1.1.0","name":"pxnet","type":"plexus","cniDir":"\#(dir.path)/cache","binDir":"/fake","readinessindicatorfile":"\#(ready)","delegates":[\#(net("a", version: "1.1.0"))]}"#
        let cfg = try PlexusConfig(bytes: Array(text.utf8))
        do {
            try plexus(cfg, try invocation("STATUS"), exec).status()
            Issue.record("STATUS passed without readiness file")
        } catch let error as CNIError { #expect(error.code == .notAvailable) }
        try FileSystem.writeAtomically(ready, [])
        try plexus(cfg, try invocation("STATUS"), exec).status()
        exec.failures["STATUS/a"] = CNIError(.limitedConnectivity, "degraded")
        do {
            try plexus(cfg, try invocation("STATUS"), exec).status()
            Issue.record("STATUS passed")
        } catch let error as CNIError { #expect(error.code == .limitedConnectivity) }
    }
}
