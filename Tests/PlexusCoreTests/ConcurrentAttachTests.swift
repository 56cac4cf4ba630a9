import CNIInvoke
import CNISpec
import SystemKit
import Testing
@testable import PlexusCore

#if canImport(Glibc)
import Glibc
#endif

/// Counts how many delegate executions overlap (each ADD holds its slot for a moment), around the fake executor.
final class OverlapExecutor: PluginExecutor, @unchecked Sendable {
    let inner = FakeExecutor()
    private let lock = NSLockish()
    private var inFlight = 0
    private(set) var maxInFlight = 0

    func find(_ type: String, in paths: [String]) throws(CNIError) -> String { try inner.find(type, in: paths) }

    func execute(_ r: ExecRequest) throws(CNIError) -> [UInt8] {
        // As the process executor: the gate passes before the delegate sees its configuration.
        try r.inputGate?.pass()
        lock.lock(); inFlight += 1; maxInFlight = max(maxInFlight, inFlight); lock.unlock()
        defer { lock.lock(); inFlight -= 1; lock.unlock() }
        if r.command == "ADD" { Clock.sleep(milliseconds: 100) }
        return try inner.execute(r)
    }
}

@Suite struct ConcurrentAttachTests {
    func list(_ name: String) throws -> PlannedNetwork {
        PlannedNetwork(list: try NetworkConfigList(json: try JSON.parse(net(name)), source: "t"), ifname: name)
    }

    @Test func batchesKeepTheClusterFirstAndTheAuxiliaryChainLast() throws {
        var nets = try ["a", "b", "c", "d"].map(list)
        #expect(Plexus.attachBatches(nets, parallel: true) == [[0], [1, 2, 3]])
        #expect(Plexus.attachBatches(nets, parallel: false) == [[0], [1], [2], [3]])
        nets[3].isAuxiliary = true
        #expect(Plexus.attachBatches(nets, parallel: true) == [[0], [1, 2], [3]])
        #expect(Plexus.attachBatches(Array(nets.prefix(2)), parallel: true) == [[0], [1]])
        #expect(Plexus.attachBatches([], parallel: true) == [])
    }

    @Test func concurrentAttachGivesTheSerialResultNamesAndRecord() throws {
        let chain = #"{"cniVersion":"1.0.0","name":"c","plugins":[{"type":"bridge"},{"type":"tuning"},{"type":"portmap"}]}"#
        var outcomes: [(result: JSON, record: [String], calls: Int)] = []
        for parallel in [false, true] {
            let dir = TempDir()
            let exec = OverlapExecutor()
            let text = #"{"cniVersion":"1.0.0","name":"pxnet","type":"plexus","cniDir":"\#(dir.path)/cache","binDir":"/fake","parallelAttach":\#(parallel),"delegates":[\#(net("clust")),\#(net("a")),\#(chain),\#(net("b"))]}"#
            let cfg = try PlexusConfig(bytes: Array(text.utf8))
            let r2 = try Plexus(config: cfg, invocation: try invocation("ADD", cid: "c2"), executor: exec,
                                logger: Logger(level: .panic, toStderr: false), sleep: { _ in }).add()
            // The cluster network's ADD comes first and alone; each chain keeps its order.
            #expect(exec.inner.calls.first?.ifname == "eth0")
            #expect(exec.inner.calls.filter { $0.ifname == "net2" }.map(\.type) == ["bridge", "tuning", "portmap"])
            #expect(parallel ? exec.maxInFlight >= 2 : exec.maxInFlight == 1)
            guard case .record(let rec) = AttachmentStore(cniDir: dir.path + "/cache").read(AttachmentKey(network: "pxnet", containerID: "c2", ifname: "eth0")) else {
                Issue.record("no record")
                return
            }
            // The generated result's IP depends on call order in the fake: compare the interface, not the address.
            outcomes.append((r2["interfaces"] ?? .null, rec.networks.map { "\($0.list.name)=\($0.ifname)" }, exec.inner.calls.count))
        }
        #expect(outcomes[0].record == outcomes[1].record)
        #expect(outcomes[0].record == ["clust=eth0", "a=net1", "c=net2", "b=net3"])
        #expect(outcomes[0].result == outcomes[1].result)
        #expect(outcomes[0].calls == outcomes[1].calls)
    }

    @Test func failuresInTheConcurrentBatchRollEverythingBack() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let cfg = try makeConfig(dir, parallel: true, delegates: [net("clust"), net("a"), net("b"), net("c")])
        exec.failures["ADD/a"] = CNIError(.internalError, "a broke")
        exec.failures["ADD/c"] = CNIError(.tryAgainLater, "c busy")
        let error = try #require(cniFailure { _ = try plexus(cfg, try invocation("ADD"), exec).add() })
        #expect(error.msg.contains("ADD failed for 2 networks") && error.msg.contains("a broke") && error.msg.contains("c busy"))
        #expect(error.code == .internalError, "the first failing network in attachment order gives the code")
        // Every network that ran is DELed: b, the failed ones best effort, and the cluster network (teardown is
        // concurrent here too, as on any rollback with parallelTeardown).
        let dels = exec.calls.filter { $0.command == "DEL" }.map(\.ifname)
        #expect(dels.sorted() == ["eth0", "net1", "net2", "net3"])
        #expect(exec.live.isEmpty)
        #expect(dir.files("cache/attachments").isEmpty && dir.files("cache/results").isEmpty)
    }
}
