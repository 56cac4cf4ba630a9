import CNIInvoke
import CNISpec
import DeviceInfo
import KubeClient
import SystemKit
import Testing
@testable import PlexusCore

final class FakeDeviceSource: DeviceSource, @unchecked Sendable {
    var devices: [String: [String]]
    var calls: [(pod: String, uid: String?, resources: Set<String>)] = []
    var failure: CNIError?

    init(_ devices: [String: [String]]) { self.devices = devices }

    func devices(pod: PodIdentity, podUID: String?, resources: Set<String>) throws(CNIError) -> PodDevices {
        calls.append((pod.description, podUID, resources))
        if let failure { throw failure }
        return PodDevices(devices.map { (resourceName: $0.key, deviceIDs: $0.value) })
    }
}

@Suite struct DeviceAssignmentTests {
    static let vf = "intel.com/sriov"

    func planned(resources: [String?]) throws -> [PlannedNetwork] {
        var out = [PlannedNetwork(list: try NetworkConfigList(json: try JSON.parse(net("A")), source: "t"), ifname: "eth0", isDefault: true)]
        for (i, r) in resources.enumerated() {
            out.append(PlannedNetwork(list: try NetworkConfigList(json: try JSON.parse(net("N\(i + 1)")), source: "t"),
                                      ifname: "net\(i + 1)", displayName: "ns1/n\(i + 1)", resourceName: r))
        }
        return out
    }

    func make(_ dir: TempDir, _ inv: CNIInvocation, _ exec: FakeExecutor, _ source: FakeDeviceSource,
              _ networks: [PlannedNetwork]) throws -> Plexus {
        let cfg = try makeConfig(dir, extra: #","deviceInfoDir":"\#(dir.path)/devinfo""#, delegates: [net("A")])
        return Plexus(config: cfg, invocation: inv, executor: exec, planner: FixedPlanner(networks: networks),
                      deviceSource: source, logger: Logger(level: .panic, toStderr: false), sleep: { _ in })
    }

    func sentDevice(_ exec: FakeExecutor, _ ifname: String) -> String? {
        exec.calls.first { $0.command == "ADD" && $0.ifname == ifname }?.stdin["deviceID"]?.stringValue
    }

    @Test func twoNetworksOfOneResourceGetTwoDevicesLowestFirst() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let source = FakeDeviceSource([Self.vf: ["0000:03:02.3", "0000:03:02.0"]])
        let inv = try invocation("ADD", args: "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1;K8S_POD_UID=u-1")
        _ = try make(dir, inv, exec, source, try planned(resources: [Self.vf, nil, Self.vf])).add()
        #expect(source.calls.count == 1 && source.calls[0].uid == "u-1" && source.calls[0].resources == [Self.vf])
        #expect(sentDevice(exec, "net1") == "0000:03:02.0" && sentDevice(exec, "net3") == "0000:03:02.3")
        #expect(sentDevice(exec, "eth0") == nil && sentDevice(exec, "net2") == nil)
        let net1 = exec.calls.first { $0.ifname == "net1" }?.stdin
        #expect(net1?["pciBusID"]?.stringValue == "0000:03:02.0")
        // The device is in the recorded plan (config bytes DEL replays, capability args).
        guard case .record(let r) = AttachmentStore(cniDir: dir.path + "/cache").read(AttachmentKey(network: "pxnet", containerID: "c1", ifname: "eth0")) else {
            Issue.record("no record")
            return
        }
        #expect(r.networks.map(\.deviceID) == [nil, "0000:03:02.0", nil, "0000:03:02.3"])
        #expect(r.networks[1].list.plugins[0]["deviceID"]?.stringValue == "0000:03:02.0")
        #expect(r.networks[1].deviceInfoFile == dir.path + "/devinfo/cni/ns1-n1-c1_net1")
    }

    @Test func noResourceNameNoKubelet() throws {
        let dir = TempDir()
        let source = FakeDeviceSource([:])
        _ = try make(dir, try invocation("ADD"), FakeExecutor(), source, try planned(resources: [nil, nil])).add()
        #expect(source.calls.isEmpty)
    }

    @Test func tooFewDevicesIsCode7AndNothingRuns() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let source = FakeDeviceSource([Self.vf: ["0000:03:02.0"]])
        do {
            _ = try make(dir, try invocation("ADD"), exec, source, try planned(resources: [Self.vf, Self.vf])).add()
            Issue.record("ADD succeeded")
        } catch let e as CNIError {
            #expect(e.code == .invalidNetworkConfig)
            #expect(e.msg.contains("ns1/pod1") && e.msg.contains("\"ns1/n2 (net2)\"") && e.details.contains(Self.vf))
        }
        #expect(exec.calls.isEmpty && dir.files("cache/attachments").isEmpty)
    }

    @Test func kubeletFailureFailsTheAddBeforeAnything() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let source = FakeDeviceSource([:])
        source.failure = CNIError(.tryAgainLater, "kubelet did not answer")
        #expect(throws: CNIError.self) { try make(dir, try invocation("ADD"), exec, source, try planned(resources: [Self.vf])).add() }
        #expect(exec.calls.isEmpty)
    }

    @Test func aRetriedAddKeepsTheDevicesItRecorded() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let source = FakeDeviceSource([Self.vf: ["0000:03:02.2", "0000:03:02.3"]])
        let nets = try planned(resources: [Self.vf, Self.vf])
        _ = try make(dir, try invocation("ADD"), exec, source, nets).add()
        // The runtime retries the ADD (no DEL in between); the kubelet now also reports a lower device.
        source.devices = [Self.vf: ["0000:03:02.0", "0000:03:02.2", "0000:03:02.3"]]
        let exec2 = FakeExecutor()
        _ = try make(dir, try invocation("ADD"), exec2, source, nets).add()
        #expect(sentDevice(exec2, "net1") == "0000:03:02.2" && sentDevice(exec2, "net2") == "0000:03:02.3")
    }

    @Test func deviceInfoIsCopiedReportedAndRemovedOnDel() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let source = FakeDeviceSource([Self.vf: ["0000:03:02.0"]])
        try FileSystem.makeDirectories(dir.path + "/devinfo/dp")
        let dp = #"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.0"}}"#
        try FileSystem.writeAtomically(dir.path + "/devinfo/dp/intel.com-sriov-0000:03:02.0-device.json", Array(dp.utf8))
        let nets = try planned(resources: [Self.vf])
        let plexus = try make(dir, try invocation("ADD"), exec, source, nets)
        _ = try plexus.add()
        #expect(dir.files("devinfo/cni") == ["ns1-n1-c1_net1"])
        let assigned = try #require(AttachmentStore(cniDir: dir.path + "/cache").list(network: "pxnet").records.first?.networks[1])
        // What the network-status reporter reads for this network.
        let info = try DeviceInfoPaths.readFile(try #require(assigned.deviceInfoFile))?.json
        #expect(info?["pci"]?["pci-address"]?.stringValue == "0000:03:02.0")
        try make(dir, try invocation("DEL"), exec, source, nets).del()
        #expect(dir.files("devinfo/cni").isEmpty)
        #expect(source.calls.count == 1)  // DEL never asks the kubelet
    }

    @Test func aDeviceInfoPathFromTheCacheOutsideTheDirectoryIsNeverRemoved() throws {
        let dir = TempDir()
        let victim = dir.path + "/victim"
        try FileSystem.writeAtomically(victim, Array("keep".utf8))
        let p = try make(dir, try invocation("DEL"), FakeExecutor(), FakeDeviceSource([:]), [])
        var n = try planned(resources: [Self.vf])[1]
        for path in [victim, dir.path + "/devinfo/cni/../../victim", dir.path + "/devinfo/cni/"] {
            n.capabilityArgs["CNIDeviceInfoFile"] = .string(path)
            p.removeDeviceInfo(n)
        }
        #expect(FileSystem.exists(victim))
    }
}

final class FailingGRPC: GRPCUnaryTransport {
    let error: GRPCError
    init(_ error: GRPCError) { self.error = error }
    func call(path: String, message: [UInt8], timeoutNanoseconds: Int64) throws(GRPCError) -> [UInt8] { throw error }
}

@Suite struct CurlPodResourcesTransportTests {
    func kind(_ e: GRPCError, _ path: String) -> PodResourcesCallError.Kind? {
        do { _ = try CurlPodResourcesTransport(FailingGRPC(e)).unaryCall(path: path, message: [], timeoutNanoseconds: 1) } catch {
            return error.kind
        }
        return nil
    }

    @Test func aResetGetReadsAsUnimplementedOnlyForGet() {
        let reset = GRPCError(.connection, "Stream error in the HTTP/2 framing layer", curlCode: 92)
        #expect(kind(reset, PodResourcesMethod.get) == .status(12))
        #expect(kind(reset, PodResourcesMethod.list) == .connection)
        #expect(kind(GRPCError(.connection, "refused", curlCode: 7), PodResourcesMethod.get) == .connection)
        #expect(kind(GRPCError(.socketAbsent, "gone"), PodResourcesMethod.get) == .socketAbsent)
        #expect(kind(GRPCError(.status(8), "rate"), PodResourcesMethod.list) == .status(8))
    }
}
