import CNISpec
import Testing
@testable import DeviceInfo

/// DRA (`resource.k8s.io/v1`) objects as Plexus reads them: pod claim statuses, claim allocations, slice attributes.
@Suite struct DRAModelTests {
    static let pod = try! JSON.parse(#"""
    {"metadata":{"name":"p","namespace":"ns1"},"spec":{"nodeName":"node1"},
     "status":{"resourceClaimStatuses":[{"name":"nics","resourceClaimName":"p-nics-x7k"},{"name":"none"},{"name":"gpu","resourceClaimName":"p-gpu-2"}],
               "extendedResourceClaimStatus":{"resourceClaimName":"p-extended-resources-9","requestMappings":[{"containerName":"c","resourceName":"intel.com/sriov","requestName":"container-0-request-0"}]}}}
    """#)

    @Test func claimsOfAPod() {
        let claims = DRA.claims(ofPod: Self.pod)
        #expect(claims.map(\.name) == ["p-nics-x7k", "p-gpu-2", "p-extended-resources-9"])
        #expect(claims.allSatisfy { $0.namespace == "ns1" })
        #expect(claims[2].requestResources == ["container-0-request-0": "intel.com/sriov"])
        #expect(DRA.claims(ofPod: try! JSON.parse(#"{"metadata":{"namespace":"a"},"status":{}}"#)).isEmpty)
    }

    @Test func allocationOrNotYet() throws {
        let pending = try JSON.parse(#"{"status":{}}"#)
        #expect(DRA.allocation(ofClaim: pending) == nil)
        let claim = try JSON.parse(#"{"status":{"allocation":{"devices":{"results":[{"request":"nic","driver":"sriov.example.com","pool":"node1","device":"vf-1"},{"driver":"","device":"x"}]}}}}"#)
        #expect(DRA.allocation(ofClaim: claim) == [DRA.AllocationResult(request: "nic", driver: "sriov.example.com", pool: "node1", device: "vf-1")])
    }

    static let slices = try! JSON.parse(#"""
    {"kind":"ResourceSliceList","items":[
      {"spec":{"driver":"sriov.example.com","pool":{"name":"node1","generation":1,"resourceSliceCount":1},"nodeName":"node1","devices":[
        {"name":"vf-0","attributes":{"k8s.cni.cncf.io/deviceID":{"string":"0000:03:02.0"},"k8s.cni.cncf.io/resourceName":{"string":"intel.com/sriov"},"numa":{"int":1}}},
        {"name":"vf-1","attributes":{"k8s.cni.cncf.io/deviceID":{"string":"0000:03:02.1"},"k8s.cni.cncf.io/resourceName":{"string":"intel.com/sriov"}}},
        {"name":"vf-nodid","attributes":{"k8s.cni.cncf.io/resourceName":{"string":"intel.com/sriov"}}},
        {"name":"gpu-0","attributes":{"model":{"string":"x"}}}]}}]}
    """#)

    @Test func networkDevicesAreThoseWithTheResourceAttribute() throws {
        let attrs = DRA.SliceAttributes(slices: Self.slices)
        #expect(attrs.attributes(driver: "sriov.example.com", pool: "node1", device: "vf-0")?["sriov.example.com/numa"] == "1")
        let claim = DRA.ClaimReference(namespace: "ns1", name: "c")
        let results = ["vf-1", "gpu-0", "vf-0"].map { DRA.AllocationResult(request: "r", driver: "sriov.example.com", pool: "node1", device: $0) }
        let devices = try DRA.networkDevices(claim: claim, allocation: results, slices: attrs, resources: ["intel.com/sriov"])
        #expect(devices.map(\.deviceID) == ["0000:03:02.1", "0000:03:02.0"])
        // A resource no network asks for: nothing (not an error).
        #expect(try DRA.networkDevices(claim: claim, allocation: results, slices: attrs, resources: ["other.com/x"]).isEmpty)
        // A network device without a deviceID attribute is an error naming the claim and device.
        let bad = [DRA.AllocationResult(request: "r", driver: "sriov.example.com", pool: "node1", device: "vf-nodid")]
        #expect(throws: DRA.ResolveError.self) { try DRA.networkDevices(claim: claim, allocation: bad, slices: attrs, resources: ["intel.com/sriov"]) }
    }

    @Test func extendedResourceRequestsMapToTheirResource() throws {
        let attrs = DRA.SliceAttributes(slices: try JSON.parse(#"{"items":[{"spec":{"driver":"d.example.com","pool":{"name":"p"},"devices":[{"name":"a","attributes":{"k8s.cni.cncf.io/deviceID":{"string":"0000:01:00.1"}}}]}}]}"#))
        let claim = DRA.ClaimReference(namespace: "ns1", name: "ext", requestResources: ["req-0": "intel.com/sriov"])
        let devices = try DRA.networkDevices(claim: claim, allocation: [DRA.AllocationResult(request: "req-0", driver: "d.example.com", pool: "p", device: "a")],
                                             slices: attrs, resources: ["intel.com/sriov"])
        #expect(devices.map(\.resourceName) == ["intel.com/sriov"] && devices.map(\.deviceID) == ["0000:01:00.1"])
    }

    @Test func statusApplyBody() {
        let claim = DRA.ClaimReference(namespace: "ns1", name: "c")
        let entry = DRA.DeviceStatus(result: DRA.AllocationResult(request: "r", driver: "d", pool: "p", device: "vf-0"),
                                     interfaceName: "net1", ips: ["10.1.0.5/24"], hardwareAddress: "02:00:00:00:00:01",
                                     time: "2026-12-03T12:00:00Z")
        let body = DRA.statusApply(claim: claim, entries: [entry])
        #expect(body.serialized() == #"{"apiVersion":"resource.k8s.io/v1","kind":"ResourceClaim","metadata":{"name":"c","namespace":"ns1"},"status":{"devices":[{"driver":"d","pool":"p","device":"vf-0","conditions":[{"type":"Ready","status":"True","reason":"NetworkAttached","message":"attached by Plexus as net1","lastTransitionTime":"2026-12-03T12:00:00Z"}],"networkData":{"interfaceName":"net1","ips":["10.1.0.5/24"],"hardwareAddress":"02:00:00:00:00:01"}}]}}"#)
        #expect(DRA.statusApply(claim: claim, entries: [])["status"]?["devices"]?.arrayValue?.isEmpty == true)
    }
}
