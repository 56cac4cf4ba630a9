import CNISpec
import DeviceInfo
import KubeClient
import NetAttach
import SystemKit

/// Network devices from Dynamic Resource Allocation: the pod's ResourceClaims and the node's ResourceSlices. Asked
/// only on an ADD that plans a network with a `resourceName` (a table in tests).
public protocol ClaimDeviceSource {
    /// The network devices the pod's claims hold for any of `resources` (empty when the pod has no claims).
    func networkDevices(resources: Set<String>) throws(CNIError) -> [DRA.NetworkDevice]
}

/// Writes KEP-4817 `networkData` into claims' `status.devices` (server-side apply) and removes it again.
public protocol ClaimStatusPublisher {
    /// Applies exactly `entries` as what `fieldManager` owns in the claim's `status.devices` (empty: removes them).
    /// `teardown` marks the best-effort removal of DEL and rollback, which must not hold a DEL up for long.
    func apply(claim: DRA.ClaimReference, entries: [DRA.DeviceStatus], fieldManager: String, teardown: Bool) throws(CNIError)
}

/// The pod object the Kubernetes planner read, shared with the claim source so that DRA costs no second GET.
public final class PodObjectBox: @unchecked Sendable {
    public var pod: JSON?
    public init() {}
}

/// `ClaimDeviceSource` over the API: one GET per claim of the pod (retried while the claim is not allocated yet,
/// within the planning phase's API deadline) and one ResourceSlice LIST per DRA driver of the allocations, limited
/// to the pod's node (`spec.nodeName`).
public struct KubernetesClaimDevices: ClaimDeviceSource {
    public let api: any KubeAPI
    public let podBox: PodObjectBox
    public let logger: Logger
    /// How long to wait between reads of a claim that is not allocated yet (doubling, at most 1 s); injected in tests.
    let sleep: (Int) -> Void
    /// The bound on waiting for allocations, counted from the first read (after any readiness wait).
    let deadlineSeconds: Double

    public init(api: any KubeAPI, podBox: PodObjectBox, logger: Logger, deadlineSeconds: Double,
                sleep: @escaping (Int) -> Void = { Clock.sleep(milliseconds: $0) }) {
        self.api = api
        self.podBox = podBox
        self.logger = logger
        self.sleep = sleep
        self.deadlineSeconds = deadlineSeconds
    }

    public func networkDevices(resources: Set<String>) throws(CNIError) -> [DRA.NetworkDevice] {
        guard let pod = podBox.pod else { return [] }
        let claims = DRA.claims(ofPod: pod)
        if claims.isEmpty { return [] }
        let started = Clock.monotonicNanoseconds()
        let deadline = Clock.deadline(afterSeconds: deadlineSeconds)
        var allocations: [(DRA.ClaimReference, [DRA.AllocationResult])] = []
        for c in claims { allocations.append((c, try allocation(of: c, deadline: deadline))) }
        var slices = DRA.SliceAttributes()
        let nodeName = pod["spec"]?["nodeName"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        var drivers: [String] = []
        for (_, results) in allocations { for r in results where !drivers.contains(r.driver) { drivers.append(r.driver) } }
        for driver in drivers {
            do { slices.merge(DRA.SliceAttributes(slices: try api.listResourceSlices(driver: driver, nodeName: nodeName))) } catch {
                throw CNIError(kubeCode(error), "cannot list the ResourceSlices of DRA driver \(driver)", details: error.description)
            }
        }
        var out: [DRA.NetworkDevice] = []
        for (claim, results) in allocations {
            do { out += try DRA.networkDevices(claim: claim, allocation: results, slices: slices, resources: resources) } catch {
                throw CNIError(.invalidNetworkConfig, error.description)
            }
        }
        logger.verbose("ResourceClaims read", [("claims", String(claims.count)), ("drivers", String(drivers.count)),
                                               ("networkDevices", String(out.count)), ("ms", millis(since: started))])
        return out
    }

    /// The claim's allocation, waiting (bounded) while the scheduler has not allocated it yet.
    func allocation(of claim: DRA.ClaimReference, deadline: Int64) throws(CNIError) -> [DRA.AllocationResult] {
        var wait = 100
        while true {
            let object: JSON
            do { object = try api.getResourceClaim(namespace: claim.namespace, name: claim.name) } catch {
                throw CNIError(error.kind == .notFound ? .tryAgainLater : kubeCode(error),
                               "cannot get ResourceClaim \(claim.id)", details: error.description)
            }
            if let results = DRA.allocation(ofClaim: object) { return results }
            if Clock.monotonicNanoseconds() + Int64(wait) * 1_000_000 >= deadline {
                throw CNIError(.tryAgainLater, "ResourceClaim \(claim.id) is not allocated yet")
            }
            logger.verbose("ResourceClaim not allocated yet, waiting", [("claim", claim.id), ("ms", String(wait))])
            sleep(wait)
            wait = min(wait * 2, 1000)
        }
    }
}

/// `ClaimStatusPublisher` over the API (server-side apply on `resourceclaims/status`, its own deadline).
public struct KubernetesClaimPublisher: ClaimStatusPublisher {
    public let api: any KubeAPI
    public let deadlineSeconds: Double
    /// The bound on a teardown's removal (retries included): a DEL with the API down waits at most this long.
    public static let teardownDeadlineSeconds = 5.0

    public init(api: any KubeAPI, deadlineSeconds: Double) {
        self.api = api
        self.deadlineSeconds = deadlineSeconds
    }

    public func apply(claim: DRA.ClaimReference, entries: [DRA.DeviceStatus], fieldManager: String, teardown: Bool) throws(CNIError) {
        api.setDeadline(Clock.deadline(afterSeconds: teardown ? min(deadlineSeconds, Self.teardownDeadlineSeconds) : deadlineSeconds))
        do {
            _ = try api.applyResourceClaimStatus(namespace: claim.namespace, name: claim.name,
                                                 body: DRA.statusApply(claim: claim, entries: entries), fieldManager: fieldManager)
        } catch {
            throw CNIError(kubeCode(error), "cannot write the network data of ResourceClaim \(claim.id)",
                           details: error.description)
        }
    }
}

/// A claim device as the attachment record keeps it: which claim, which allocated device, and whether this
/// attachment publishes its network data (so DEL removes it even if the setting changed since).
public struct ClaimDeviceRecord: Sendable, Equatable {
    public var device: DRA.NetworkDevice
    public var published: Bool

    public init(device: DRA.NetworkDevice, published: Bool) {
        self.device = device
        self.published = published
    }

    var json: JSON {
        let d = device
        return .object(JSONObject([
            ("namespace", .string(d.claim.namespace)), ("name", .string(d.claim.name)),
            ("request", .string(d.result.request)), ("driver", .string(d.result.driver)),
            ("pool", .string(d.result.pool)), ("device", .string(d.result.device)),
            ("resourceName", .string(d.resourceName)), ("deviceID", .string(d.deviceID)),
            ("published", .bool(published)),
        ]))
    }

    init?(json: JSON) {
        guard let ns = json["namespace"]?.stringValue, let name = json["name"]?.stringValue,
              let driver = json["driver"]?.stringValue, let pool = json["pool"]?.stringValue,
              let dev = json["device"]?.stringValue, let res = json["resourceName"]?.stringValue,
              let id = json["deviceID"]?.stringValue else { return nil }
        device = DRA.NetworkDevice(claim: DRA.ClaimReference(namespace: ns, name: name),
                                   result: DRA.AllocationResult(request: json["request"]?.stringValue ?? "", driver: driver,
                                                                pool: pool, device: dev),
                                   resourceName: res, deviceID: id)
        published = json["published"]?.boolValue ?? false
    }
}

extension Plexus {
    /// The field manager of this attachment's `status.devices` entries: one per attachment, so two pods sharing a
    /// claim never remove each other's entries.
    var claimFieldManager: String { String("plexus-\(invocation.containerID)".prefix(128)) }

    /// After a successful ADD (publishing on): one apply per claim with the entries of this attachment's networks.
    /// `facts` (the kernel's view) wins over the delegates' results for IPs and MAC.
    func publishClaimStatus(_ attached: [(network: PlannedNetwork, result: JSON)], facts: NetnsSnapshot?) throws(CNIError) {
        let published = attached.filter { $0.network.claimDevice?.published == true }
        guard !published.isEmpty else { return }
        guard let publisher = makeClaimPublisher() else {
            throw CNIError(.internalError, "draPublishNetworkData is on, but Plexus has no Kubernetes client for this call")
        }
        let time = String(Clock.timestamp().prefix(19)) + "Z"
        for claim in Plexus.claims(of: published.map(\.network)) {
            var entries: [DRA.DeviceStatus] = []
            for (n, result) in published where n.claimDevice?.device.claim.id == claim.id {
                guard let d = n.claimDevice?.device else { continue }
                let (ips, mac) = Plexus.interfaceData(n.ifname, result: result, facts: facts?.interfaces[n.ifname])
                entries.append(DRA.DeviceStatus(result: d.result, interfaceName: n.ifname, ips: ips, hardwareAddress: mac, time: time))
            }
            try publisher.apply(claim: claim, entries: entries, fieldManager: claimFieldManager, teardown: false)
        }
    }

    /// On teardown: removes this attachment's entries from every claim it published to. Best effort (logged).
    func unpublishClaimStatus(_ networks: [PlannedNetwork]) {
        let published = networks.filter { $0.claimDevice?.published == true }
        guard !published.isEmpty else { return }
        guard let publisher = makeClaimPublisher() else {
            logger.warning("cannot remove network data from ResourceClaims: no Kubernetes client for this call")
            return
        }
        for claim in Plexus.claims(of: published) {
            do { try publisher.apply(claim: claim, entries: [], fieldManager: claimFieldManager, teardown: true) } catch {
                logger.warning("cannot remove network data from a ResourceClaim", [("claim", claim.id),
                                                                                    ("error", error.description)])
            }
        }
    }

    static func claims(of networks: [PlannedNetwork]) -> [DRA.ClaimReference] {
        var out: [DRA.ClaimReference] = []
        for n in networks {
            guard let c = n.claimDevice?.device.claim else { continue }
            if !out.contains(where: { $0.id == c.id }) { out.append(c) }
        }
        return out
    }

    /// The interface's IPs in CIDR form and MAC: from the delegate's result (the interface named `ifname` in the
    /// sandbox and the IPs pointing at it), the MAC corrected by the kernel when it knows the link.
    static func interfaceData(_ ifname: String, result: JSON, facts: InterfaceFacts?) -> (ips: [String], mac: String?) {
        guard let r = try? CNIResult.parse(result, defaultVersion: "1.1.0") else { return ([], facts?.mac) }
        let index = r.interfaces.firstIndex { $0.name == ifname && ($0.sandbox ?? "") != "" }
        let ips = r.ips.filter { ip in ip.interface == nil || ip.interface == index }.map(\.address)
        return (ips, facts?.mac ?? index.flatMap { r.interfaces[$0].mac })
    }
}
