import CNISpec
import KubeClient
import Synchronization
import SystemKit

/// What the daemon keeps of a pod of its node: exactly what an ADD reads (`KubeAPI.getPodForAttachment`).
public struct CachedPod: Sendable, Equatable {
    public var uid: String
    public var nodeName: String?
    /// The pod's annotations Plexus reads (`k8s.v1.cni.cncf.io/networks`, `v1.multus-cni.io/default-network`).
    public var annotations: [(String, String)]
    /// `status.resourceClaimStatuses` and `status.extendedResourceClaimStatus`, when present (DRA).
    public var claimStatus: [(String, JSON)]

    public static let annotationKeys = ["k8s.v1.cni.cncf.io/networks", "v1.multus-cni.io/default-network"]

    public init?(pod: JSON) {
        guard let metadata = pod["metadata"], let uid = metadata["uid"]?.stringValue else { return nil }
        self.uid = uid
        nodeName = pod["spec"]?["nodeName"]?.stringValue
        annotations = Self.annotationKeys.compactMap { k in metadata["annotations"]?[k]?.stringValue.map { (k, $0) } }
        claimStatus = ["resourceClaimStatuses", "extendedResourceClaimStatus"].compactMap { k in pod["status"]?[k].map { (k, $0) } }
    }

    /// The pod object as the planner reads it.
    public func json(namespace: String, name: String) -> JSON {
        var metadata = JSONObject([("name", .string(name)), ("namespace", .string(namespace)), ("uid", .string(uid))])
        metadata["annotations"] = .object(JSONObject(annotations.map { ($0.0, JSON.string($0.1)) }))
        var pod = JSONObject([("apiVersion", .string("v1")), ("kind", .string("Pod")), ("metadata", .object(metadata))])
        if let nodeName { pod["spec"] = .object(JSONObject([("nodeName", .string(nodeName))])) }
        if !claimStatus.isEmpty { pod["status"] = .object(JSONObject(claimStatus)) }
        return .object(pod)
    }

    public static func == (a: CachedPod, b: CachedPod) -> Bool {
        a.uid == b.uid && a.nodeName == b.nodeName && a.annotations.map(\.0) == b.annotations.map(\.0)
            && a.annotations.map(\.1) == b.annotations.map(\.1) && a.claimStatus.map(\.0) == b.claimStatus.map(\.0)
            && a.claimStatus.map(\.1) == b.claimStatus.map(\.1)
    }
}

/// What the daemon keeps of a NetworkAttachmentDefinition: the object without `managedFields` and kubectl's
/// last-applied copy (which repeats the whole config).
public enum CachedNAD {
    public static func trim(_ nad: JSON) -> JSON? {
        guard var o = nad.objectValue, var metadata = o["metadata"]?.objectValue else { return nil }
        metadata["managedFields"] = nil
        if var ann = metadata["annotations"]?.objectValue {
            ann["kubectl.kubernetes.io/last-applied-configuration"] = nil
            metadata["annotations"] = .object(ann)
        }
        o["metadata"] = .object(metadata)
        return .object(o)
    }
}

/// API clients shared by every call the daemon serves: each API call borrows one, so sequential ADDs reuse one
/// kept-alive TLS connection, and concurrent ones open at most one connection each.
public final class ClientPool: Sendable {
    final class Pooled: @unchecked Sendable {
        let client: KubeHTTPClient
        init(_ c: KubeHTTPClient) { client = c }
    }
    let make: @Sendable () -> KubeHTTPClient
    private let idle = Mutex<[Pooled]>([])
    /// Requests sent by every client of the pool (for metrics).
    let requests = Atomic<Int>(0)

    public init(make: @escaping @Sendable () -> KubeHTTPClient) { self.make = make }

    public var totalRequests: Int { requests.load(ordering: .relaxed) }

    public func with<T>(deadline: Int64, _ body: (KubeHTTPClient) throws(KubeError) -> T) throws(KubeError) -> (T, requests: Int) {
        let p = idle.withLock { $0.popLast() } ?? Pooled(make())
        defer { idle.withLock { $0.append(p) } }
        p.client.setDeadline(deadline)
        let before = p.client.requestCount
        do {
            let v = try body(p.client)
            let n = p.client.requestCount - before
            requests.add(n, ordering: .relaxed)
            return (v, n)
        } catch {
            requests.add(p.client.requestCount - before, ordering: .relaxed)
            throw error
        }
    }
}

/// The `KubeAPI` of one call served by the daemon: the pod and the NADs come from the watch caches, anything
/// missing there (just created) or with another uid than the runtime's `K8S_POD_UID` is read through; writes go
/// to the API over the shared connection.
public final class DaemonKubeAPI: KubeAPI {
    let pods: WatchCache<CachedPod>
    let nads: WatchCache<JSON>
    let pool: ClientPool
    let metrics: Metrics
    var deadline: Int64
    public private(set) var requestCount = 0

    public init(pods: WatchCache<CachedPod>, nads: WatchCache<JSON>, pool: ClientPool, metrics: Metrics, deadline: Int64) {
        self.pods = pods
        self.nads = nads
        self.pool = pool
        self.metrics = metrics
        self.deadline = deadline
    }

    func call<T>(_ name: String, _ body: (KubeHTTPClient) throws(KubeError) -> T) throws(KubeError) -> T {
        do {
            let (v, n) = try pool.with(deadline: deadline, body)
            requestCount += n
            metrics.add(DaemonMetrics.apiRequests, [name, "ok"], Double(n))
            return v
        } catch {
            requestCount += error.attempts
            metrics.add(DaemonMetrics.apiRequests, [name, "error"], Double(error.attempts))
            throw error
        }
    }

    public func getPodForAttachment(namespace: String, name: String, expectedUID: String?) throws(KubeError) -> JSON {
        if let p = pods.get(namespace: namespace, name: name), expectedUID == nil || p.uid == expectedUID {
            metrics.add(DaemonMetrics.cacheLookups, ["pods", "hit"])
            return p.json(namespace: namespace, name: name)
        }
        metrics.add(DaemonMetrics.cacheLookups, ["pods", "miss"])
        return try getPod(namespace: namespace, name: name)
    }

    public func getPod(namespace: String, name: String) throws(KubeError) -> JSON {
        try call("get_pod") { c throws(KubeError) in try c.getPod(namespace: namespace, name: name) }
    }

    public func getNetworkAttachmentDefinition(namespace: String, name: String) throws(KubeError) -> JSON {
        if let n = nads.get(namespace: namespace, name: name) {
            metrics.add(DaemonMetrics.cacheLookups, ["network-attachment-definitions", "hit"])
            return n
        }
        metrics.add(DaemonMetrics.cacheLookups, ["network-attachment-definitions", "miss"])
        return try call("get_nad") { c throws(KubeError) in try c.getNetworkAttachmentDefinition(namespace: namespace, name: name) }
    }

    public func patchPodAnnotations(namespace: String, name: String, annotations: [String: String?]) throws(KubeError) -> JSON {
        try call("patch_pod_status") { c throws(KubeError) in try c.patchPodAnnotations(namespace: namespace, name: name, annotations: annotations) }
    }

    public func replacePodStatus(namespace: String, name: String, pod: JSON) throws(KubeError) -> JSON {
        try call("update_pod_status") { c throws(KubeError) in try c.replacePodStatus(namespace: namespace, name: name, pod: pod) }
    }

    public func getResourceClaim(namespace: String, name: String) throws(KubeError) -> JSON {
        try call("get_resourceclaim") { c throws(KubeError) in try c.getResourceClaim(namespace: namespace, name: name) }
    }

    public func listResourceSlices(driver: String, nodeName: String?) throws(KubeError) -> JSON {
        try call("list_resourceslices") { c throws(KubeError) in try c.listResourceSlices(driver: driver, nodeName: nodeName) }
    }

    public func applyResourceClaimStatus(namespace: String, name: String, body: JSON, fieldManager: String) throws(KubeError) -> JSON {
        try call("apply_resourceclaim_status") { c throws(KubeError) in
            try c.applyResourceClaimStatus(namespace: namespace, name: name, body: body, fieldManager: fieldManager)
        }
    }

    public func setDeadline(_ deadline: Int64) { self.deadline = deadline }

    public func createEvent(namespace: String, involvedPod: PodReference, reason: String, message: String,
                            type: EventType) throws(KubeError) -> JSON {
        try call("create_event") { c throws(KubeError) in
            try c.createEvent(namespace: namespace, involvedPod: involvedPod, reason: reason, message: message, type: type)
        }
    }
}
