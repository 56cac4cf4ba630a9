import Testing
@testable import DeviceInfo

private let vf = "intel.com/intel_sriov_netdevice"
private let dpdk = "intel.com/intel_sriov_dpdk"

private func pickError(
    _ requests: [(networkKey: String, resourceName: String)], _ devices: PodDevices, recorded: [String: String] = [:]
) -> DevicePickError? {
    do {
        _ = try DevicePicker.pick(requests, from: devices, recorded: recorded)
        return nil
    } catch {
        return error
    }
}

@Suite struct PodDevicesTests {
    @Test func sortedDeduplicatedAcrossContainersAndNUMAEntries() {
        // One device reported under two NUMA nodes (two entries), devices in random order, two containers.
        let pod = PodResources(name: "p", namespace: "n", containers: [
            ContainerResources(name: "a", devices: [
                ContainerDevices(resourceName: vf, deviceIDs: ["0000:03:02.3"], numaNodes: [0]),
                ContainerDevices(resourceName: vf, deviceIDs: ["0000:03:02.3"], numaNodes: [1]),
                ContainerDevices(resourceName: vf, deviceIDs: ["0000:03:02.10", "0000:03:02.0"]),
            ]),
            ContainerResources(name: "b", devices: [
                ContainerDevices(resourceName: dpdk, deviceIDs: ["0000:05:00.1"]),
                ContainerDevices(resourceName: vf, deviceIDs: ["0000:03:02.0", ""]),
                ContainerDevices(resourceName: "", deviceIDs: ["x"]),
            ]),
            ContainerResources(name: "no-devices"),
        ])
        let d = PodDevices(podResources: pod)
        // Bytewise order: "0000:03:02.10" sorts before "0000:03:02.3" (Go sort.Strings, as Multus).
        #expect(d.deviceIDs(for: vf) == ["0000:03:02.0", "0000:03:02.10", "0000:03:02.3"])
        #expect(d.deviceIDs(for: dpdk) == ["0000:05:00.1"])
        #expect(d.deviceIDs(for: "absent").isEmpty)
        #expect(d.resourceNames == [dpdk, vf])
    }

    @Test func orderDoesNotDependOnTheKubeletsOrder() {
        let a = PodDevices([(resourceName: vf, deviceIDs: ["c", "a", "b"])])
        let b = PodDevices([(resourceName: vf, deviceIDs: ["b"]), (resourceName: vf, deviceIDs: ["a", "c", "a"])])
        #expect(a == b)
    }

    @Test func fromTheGoldenListAnswer() throws {
        let list = try ListPodResourcesResponse.decode(try GRPCFraming.unframe(Golden.listResponseFrame))
        let d = PodDevices(podResources: list.pods(namespace: "default", name: "sriov-pod"))
        #expect(d.deviceIDs(for: Golden.resource) == ["0000:03:02.0", "0000:03:02.3"])
        #expect(PodDevices(podResources: list.pods(namespace: "default", name: "plain")).isEmpty)
    }
}

@Suite struct DevicePickerTests {
    static let twoVFs = PodDevices([(resourceName: vf, deviceIDs: ["0000:03:02.3", "0000:03:02.0"])])

    /// §4.1's example: annotation `sriov-a, sriov-b`, both on one resource with two VFs.
    @Test func twoNetworksOfOneResourceGetTwoDevicesInSortedOrder() throws {
        let picks = try DevicePicker.pick([(networkKey: "default/sriov-a", resourceName: vf),
                                           (networkKey: "default/sriov-b", resourceName: vf)], from: Self.twoVFs)
        #expect(picks == ["default/sriov-a": "0000:03:02.0", "default/sriov-b": "0000:03:02.3"])
    }

    @Test func sameNADTwiceGetsTwoDevices() throws {
        let picks = try DevicePicker.pick([DeviceRequest(networkKey: "default/sriov-a@net1", resourceName: vf),
                                           DeviceRequest(networkKey: "default/sriov-a@net2", resourceName: vf)],
                                          from: Self.twoVFs)
        #expect(picks.map(\.deviceID) == ["0000:03:02.0", "0000:03:02.3"])
        #expect(picks.map(\.kept) == [false, false])
    }

    @Test func resourcesAreIndependent() throws {
        let d = PodDevices([(resourceName: vf, deviceIDs: ["v1", "v2"]), (resourceName: dpdk, deviceIDs: ["k1"])])
        let picks = try DevicePicker.pick([(networkKey: "a", resourceName: vf), (networkKey: "b", resourceName: dpdk),
                                           (networkKey: "c", resourceName: vf)], from: d)
        #expect(picks == ["a": "v1", "b": "k1", "c": "v2"])
    }

    @Test func recordedPicksAreKeptEvenWhenNotTheLowest() throws {
        let recorded = ["net-a": "0000:03:02.3"]
        let picks = try DevicePicker.pick([DeviceRequest(networkKey: "net-a", resourceName: vf),
                                           DeviceRequest(networkKey: "net-b", resourceName: vf)],
                                          from: Self.twoVFs, recorded: recorded)
        #expect(picks == [
            DevicePick(networkKey: "net-a", resourceName: vf, deviceID: "0000:03:02.3", kept: true),
            DevicePick(networkKey: "net-b", resourceName: vf, deviceID: "0000:03:02.0", kept: false),
        ])
        // A later network's record is honoured before an earlier network takes the lowest free device.
        let later = try DevicePicker.pick([(networkKey: "net-a", resourceName: vf), (networkKey: "net-b", resourceName: vf)],
                                          from: Self.twoVFs, recorded: ["net-b": "0000:03:02.0"])
        #expect(later == ["net-a": "0000:03:02.3", "net-b": "0000:03:02.0"])
        // Stable: the same inputs always give the same answer.
        #expect(try DevicePicker.pick([(networkKey: "net-a", resourceName: vf), (networkKey: "net-b", resourceName: vf)],
                                      from: Self.twoVFs, recorded: ["net-b": "0000:03:02.0"]) == later)
    }

    @Test func staleOrConflictingRecordsAreReplaced() throws {
        // The recorded device is no longer allocated, or belongs to another resource.
        let gone = try DevicePicker.pick([DeviceRequest(networkKey: "a", resourceName: vf)], from: Self.twoVFs,
                                         recorded: ["a": "0000:09:00.0"])
        #expect(gone == [DevicePick(networkKey: "a", resourceName: vf, deviceID: "0000:03:02.0", kept: false)])
        // Two records naming the same device: the first request keeps it.
        let both = try DevicePicker.pick([(networkKey: "a", resourceName: vf), (networkKey: "b", resourceName: vf)],
                                         from: Self.twoVFs, recorded: ["a": "0000:03:02.3", "b": "0000:03:02.3"])
        #expect(both == ["a": "0000:03:02.3", "b": "0000:03:02.0"])
        // Records of networks not requested are ignored.
        #expect(try DevicePicker.pick([(networkKey: "a", resourceName: vf)], from: Self.twoVFs,
                                      recorded: ["z": "0000:03:02.0"]) == ["a": "0000:03:02.0"])
    }

    @Test func exhaustionNamesTheResourceAndTheCounts() {
        let one = PodDevices([(resourceName: vf, deviceIDs: ["0000:03:02.0"])])
        let e = pickError([(networkKey: "default/sriov-a", resourceName: vf),
                           (networkKey: "default/sriov-b", resourceName: vf)], one)
        #expect(e?.kind == .exhausted(resourceName: vf, available: 1, wanted: 2))
        #expect(e?.unassignedNetworks == ["default/sriov-b"])
        #expect(e?.description == #"resource "intel.com/intel_sriov_netdevice": the pod has 1 device allocated "#
            + #"but 2 networks want one (no device for "default/sriov-b")"#)

        let none = pickError([(networkKey: "a", resourceName: dpdk)], one)
        #expect(none?.description == #"resource "intel.com/intel_sriov_dpdk": the pod has 0 devices allocated "#
            + #"but 1 network wants one (no device for "a")"#)
    }

    @Test func invalidRequests() throws {
        #expect(pickError([(networkKey: "a", resourceName: vf), (networkKey: "a", resourceName: vf)], Self.twoVFs)?.kind
            == .duplicateNetworkKey("a"))
        #expect(pickError([(networkKey: "a", resourceName: "")], Self.twoVFs)?.kind == .emptyResourceName(networkKey: "a"))
        #expect(try DevicePicker.pick([DeviceRequest](), from: PodDevices()) == [])
    }
}
