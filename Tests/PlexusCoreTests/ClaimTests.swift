import CNIInvoke
import CNISpec
import DeviceInfo
import SystemKit
import Testing
@testable import PlexusCore

final class FakeClaimSource: ClaimDeviceSource, @unchecked Sendable {
    var devices: [DRA.NetworkDevice]
    var calls: [Set<String>] = []
    var failure: CNIError?
    init(_ devices: [DRA.NetworkDevice]) { self.devices = devices }
    func networkDevices(resources: Set<String>) throws(CNIError) -> [DRA.NetworkDevice] {
        calls.append(resources)
        if let failure { throw failure }
        return devices.filter { resources.contains($0.resourceName) }
    }
}

final class FakePublisher: ClaimStatusPublisher, @unchecked Sendable {
    var applied: [(claim: String, entries: [DRA.DeviceStatus], manager: String)] = []
    var failure: CNIError?
    func apply(claim: DRA.ClaimReference, entries: [DRA.DeviceStatus], fieldManager: String, teardown: Bool) throws(CNIError) {
        if let failure, !entries.isEmpty { throw failure }
        #expect(teardown == entries.isEmpty, "removals are teardowns, writes are not")
        applied.append(("\(claim.namespace)/\(claim.name)", entries, fieldManager))
    }
}

/// DRA devices in the core: one mapping with the device plugins' (distinct devices, recorded), claims' networkData
/// published after ADD and removed on DEL and rollback.
@Suite struct ClaimDeviceTests {
    static let vf = "intel.com/sriov", other = "example.com/nic"

    static func device(_ id: String, claim: String = "p-nics", resource: String = vf) -> DRA.NetworkDevice {
        DRA.NetworkDevice(claim: DRA.ClaimReference(namespace: "ns1", name: claim),
                          result: DRA.AllocationResult(request: "nic", driver: "sriov.example.com", pool: "node1", device: "vf-\(id.suffix(1))"),
                          resourceName: resource, deviceID: id)
    }

    func planned(_ resources: [String?]) throws -> [PlannedNetwork] {
        var out = [PlannedNetwork(list: try NetworkConfigList(json: try JSON.parse(net("A")), source: "t"), ifname: "eth0", isDefault: true)]
        for (i, r) in resources.enumerated() {
            out.append(PlannedNetwork(list: try NetworkConfigList(json: try JSON.parse(net("N\(i + 1)")), source: "t"),
                                      ifname: "net\(i + 1)", displayName: "ns1/n\(i + 1)", resourceName: r))
        }
        return out
    }

    func make(_ dir: TempDir, _ cmd: String, exec: FakeExecutor, claims: FakeClaimSource?, plugins: FakeDeviceSource?,
              publisher: FakePublisher?, networks: [PlannedNetwork], publish: Bool = true) throws -> Plexus {
        let cfg = try makeConfig(dir, extra: #","deviceInfoDir":"\#(dir.path)/devinfo","draPublishNetworkData":\#(publish)"#, delegates: [net("A")])
        return Plexus(config: cfg, invocation: try invocation(cmd), executor: exec, planner: FixedPlanner(networks: networks),
                      deviceSource: plugins, claimSource: claims, makeClaimPublisher: { publisher },
                      logger: Logger(level: .panic, toStderr: false), sleep: { _ in })
    }

    func record(_ dir: TempDir) -> AttachmentRecord? {
        if case .record(let r) = AttachmentStore(cniDir: dir.path + "/cache").read(AttachmentKey(network: "pxnet", containerID: "c1", ifname: "eth0")) { return r }
        return nil
    }

    @Test func twoClaimDevicesGoToTwoNetworksAndArePublished() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let claims = FakeClaimSource([Self.device("0000:03:02.1"), Self.device("0000:03:02.0")])
        let plugins = FakeDeviceSource([:])
        let publisher = FakePublisher()
        _ = try make(dir, "ADD", exec: exec, claims: claims, plugins: plugins, publisher: publisher,
                     networks: try planned([Self.vf, Self.vf])).add()
        #expect(plugins.calls.isEmpty, "the claims provide the resource: the kubelet is not asked")
        let sent = ["net1", "net2"].map { ifn in exec.calls.first { $0.ifname == ifn && $0.command == "ADD" }?.stdin["deviceID"]?.stringValue }
        #expect(sent == ["0000:03:02.0", "0000:03:02.1"])
        let r = try #require(record(dir))
        #expect(r.networks.compactMap { $0.claimDevice?.device.deviceID } == ["0000:03:02.0", "0000:03:02.1"])
        #expect(r.networks[1].claimDevice?.published == true)
        // One apply for the claim, with both networks' entries, under this attachment's field manager.
        #expect(publisher.applied.count == 1)
        let a = try #require(publisher.applied.first)
        #expect(a.claim == "ns1/p-nics" && a.manager == "plexus-c1")
        #expect(a.entries.map(\.interfaceName) == ["net1", "net2"] && a.entries.map(\.result.device) == ["vf-0", "vf-1"])
        #expect(a.entries[0].ips.count == 1 && a.entries[0].hardwareAddress == "02:00:00:00:00:01")

        // DEL removes the entries (an empty apply), once per claim.
        try make(dir, "DEL", exec: exec, claims: nil, plugins: nil, publisher: publisher, networks: []).del()
        #expect(publisher.applied.count == 2 && publisher.applied[1].entries.isEmpty && publisher.applied[1].manager == "plexus-c1")
        #expect(record(dir) == nil)
    }

    @Test func mixedPodTakesEachResourceFromItsSource() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let claims = FakeClaimSource([Self.device("0000:81:00.1", resource: Self.other)])
        let plugins = FakeDeviceSource([Self.vf: ["0000:03:02.0"]])
        _ = try make(dir, "ADD", exec: exec, claims: claims, plugins: plugins, publisher: FakePublisher(),
                     networks: try planned([Self.vf, Self.other])).add()
        #expect(claims.calls == [[Self.vf, Self.other]])
        #expect(plugins.calls.map(\.resources) == [[Self.vf]])
        let r = try #require(record(dir))
        #expect(r.networks.map(\.deviceID) == [nil, "0000:03:02.0", "0000:81:00.1"])
        #expect(r.networks[1].claimDevice == nil && r.networks[2].claimDevice?.device.claim.name == "p-nics")
    }

    @Test func moreNetworksThanClaimDevicesIsCode7() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let claims = FakeClaimSource([Self.device("0000:03:02.0")])
        let error = try #require(cniFailure {
            _ = try make(dir, "ADD", exec: exec, claims: claims, plugins: nil, publisher: nil, networks: try planned([Self.vf, Self.vf])).add()
        })
        #expect(error.code == .invalidNetworkConfig)
        #expect(exec.calls.isEmpty)
    }

    @Test func aFailedPublishRollsTheADDBack() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let publisher = FakePublisher()
        publisher.failure = CNIError(.tryAgainLater, "apiserver down")
        let error = try #require(cniFailure {
            _ = try make(dir, "ADD", exec: exec, claims: FakeClaimSource([Self.device("0000:03:02.0")]), plugins: nil,
                         publisher: publisher, networks: try planned([Self.vf])).add()
        })
        #expect(error.code == .tryAgainLater && error.msg.contains("apiserver down"))
        #expect(exec.live.isEmpty && record(dir) == nil)
        // The rollback removed whatever the apply may have written (an empty apply).
        #expect(publisher.applied.map(\.entries.isEmpty) == [true])
    }

    @Test func publishingOffWritesNothingAndDelDoesNotNeedTheAPI() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let publisher = FakePublisher()
        _ = try make(dir, "ADD", exec: exec, claims: FakeClaimSource([Self.device("0000:03:02.0")]), plugins: nil,
                     publisher: publisher, networks: try planned([Self.vf]), publish: false).add()
        #expect(publisher.applied.isEmpty)
        var built = false
        let cfg = try makeConfig(dir, extra: #","deviceInfoDir":"\#(dir.path)/devinfo""#, delegates: [net("A")])
        try Plexus(config: cfg, invocation: try invocation("DEL"), executor: exec, makeClaimPublisher: { built = true; return nil },
                   logger: Logger(level: .panic, toStderr: false), sleep: { _ in }).del()
        #expect(!built && exec.live.isEmpty)
    }

    @Test func delWithTheAPIDownStillTearsDown() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        _ = try make(dir, "ADD", exec: exec, claims: FakeClaimSource([Self.device("0000:03:02.0")]), plugins: nil,
                     publisher: FakePublisher(), networks: try planned([Self.vf])).add()
        final class Failing: ClaimStatusPublisher {
            func apply(claim: DRA.ClaimReference, entries: [DRA.DeviceStatus], fieldManager: String, teardown: Bool) throws(CNIError) {
                throw CNIError(.tryAgainLater, "connection refused")
            }
        }
        let cfg = try makeConfig(dir, extra: #","deviceInfoDir":"\#(dir.path)/devinfo","draPublishNetworkData":true"#, delegates: [net("A")])
        try Plexus(config: cfg, invocation: try invocation("DEL"), executor: exec, makeClaimPublisher: { Failing() },
                   logger: Logger(level: .panic, toStderr: false), sleep: { _ in }).del()
        #expect(exec.live.isEmpty && record(dir) == nil)
    }

    @Test func claimSourceErrorsStopTheADD() throws {
        let dir = TempDir()
        let exec = FakeExecutor()
        let claims = FakeClaimSource([])
        claims.failure = CNIError(.tryAgainLater, "ResourceClaim ns1/p-nics is not allocated yet")
        let error = try #require(cniFailure {
            _ = try make(dir, "ADD", exec: exec, claims: claims, plugins: nil, publisher: nil, networks: try planned([Self.vf])).add()
        })
        #expect(error.code == .tryAgainLater && error.msg.contains("p-nics") && error.msg.contains("pod ns1/pod1"))
        #expect(error.msg.contains("\"ns1/n1\""), "the error names the network")
        #expect(exec.calls.isEmpty)
    }
}
