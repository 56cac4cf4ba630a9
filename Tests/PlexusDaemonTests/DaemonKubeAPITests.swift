import CNISpec
import KubeClient
import SystemKit
import Testing
@testable import PlexusDaemon

private let fullPod = #"""
{"apiVersion":"v1","kind":"Pod",
 "metadata":{"name":"p1","namespace":"ns1","uid":"uid-1","resourceVersion":"77","labels":{"app":"x"},
   "managedFields":[{"manager":"kubelet"}],
   "annotations":{"k8s.v1.cni.cncf.io/networks":"macvlan@net1","v1.multus-cni.io/default-network":"ns1/calico",
                  "k8s.v1.cni.cncf.io/network-status":"[]","other":"dropped"}},
 "spec":{"nodeName":"node-1","containers":[{"name":"c","image":"busybox"}]},
 "status":{"phase":"Pending","podIP":"10.0.0.5",
   "resourceClaimStatuses":[{"name":"gpu","resourceClaimName":"p1-gpu-abc"}],
   "extendedResourceClaimStatus":{"resourceClaimName":"p1-ext","requestMappings":[]}}}
"""#

@Suite struct CachedObjectTests {
    @Test func cachedPodKeepsOnlyWhatAnAddReads() throws {
        let p = try #require(CachedPod(pod: K8s.json(fullPod)))
        #expect(p.uid == "uid-1")
        #expect(p.nodeName == "node-1")
        #expect(p.annotations.map(\.0) == ["k8s.v1.cni.cncf.io/networks", "v1.multus-cni.io/default-network"])
        #expect(p.annotations.map(\.1) == ["macvlan@net1", "ns1/calico"])
        #expect(p.claimStatus.map(\.0) == ["resourceClaimStatuses", "extendedResourceClaimStatus"])

        let j = p.json(namespace: "ns1", name: "p1")
        #expect(j["kind"]?.stringValue == "Pod")
        #expect(j["apiVersion"]?.stringValue == "v1")
        #expect(j.objectValue?.keys == ["apiVersion", "kind", "metadata", "spec", "status"])
        #expect(j["metadata"]?.objectValue?.keys == ["name", "namespace", "uid", "annotations"])
        #expect(j["metadata"]?["name"]?.stringValue == "p1")
        #expect(j["metadata"]?["namespace"]?.stringValue == "ns1")
        #expect(j["metadata"]?["uid"]?.stringValue == "uid-1")
        #expect(j["metadata"]?["annotations"]?.objectValue?.keys == CachedPod.annotationKeys)
        #expect(j["metadata"]?["annotations"]?["k8s.v1.cni.cncf.io/networks"]?.stringValue == "macvlan@net1")
        #expect(j["spec"]?.objectValue?.keys == ["nodeName"])
        #expect(j["spec"]?["nodeName"]?.stringValue == "node-1")
        #expect(j["status"]?.objectValue?.keys == ["resourceClaimStatuses", "extendedResourceClaimStatus"])
        let original = K8s.json(fullPod)
        #expect(j["status"]?["resourceClaimStatuses"] == original["status"]?["resourceClaimStatuses"])
        #expect(j["status"]?["extendedResourceClaimStatus"] == original["status"]?["extendedResourceClaimStatus"])
        // What the JSON shows decodes back to the same entry.
        #expect(CachedPod(pod: j) == p)
    }

    @Test func cachedPodOfAMinimalPodAndEquality() throws {
        #expect(CachedPod(pod: K8s.json(K8s.pod("p1"))) == nil)  // no uid: not cacheable
        #expect(CachedPod(pod: K8s.json(#"{"kind":"Pod"}"#)) == nil)
        let p = try #require(CachedPod(pod: K8s.json(K8s.pod("p1", uid: "u"))))
        #expect(p.nodeName == nil)
        #expect(p.annotations.isEmpty)
        #expect(p.claimStatus.isEmpty)
        let j = p.json(namespace: "ns1", name: "p1")
        #expect(j.objectValue?.keys == ["apiVersion", "kind", "metadata"])
        #expect(j["metadata"]?["annotations"]?.objectValue?.isEmpty == true)

        // Equality compares every field.
        let a = try #require(CachedPod(pod: K8s.json(fullPod)))
        var b = a
        #expect(a == b)
        b.annotations[0].1 = "other"
        #expect(a != b)
        b = a
        b.claimStatus = []
        #expect(a != b)
        b = a
        b.nodeName = nil
        #expect(a != b)
    }

    @Test func nadTrimDropsManagedFieldsAndLastApplied() throws {
        let nad = K8s.json(#"""
        {"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition",
         "metadata":{"name":"macvlan","namespace":"ns1","uid":"n-1","resourceVersion":"5",
           "managedFields":[{"manager":"kubectl","fieldsV1":{}}],
           "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{…the whole object…}",
                          "k8s.v1.cni.cncf.io/resourceName":"intel.com/sriov"}},
         "spec":{"config":"{\"cniVersion\":\"1.0.0\",\"type\":\"macvlan\"}"}}
        """#)
        let t = try #require(CachedNAD.trim(nad))
        #expect(t["metadata"]?.objectValue?.keys == ["name", "namespace", "uid", "resourceVersion", "annotations"])
        #expect(t["metadata"]?["annotations"]?.objectValue?.keys == ["k8s.v1.cni.cncf.io/resourceName"])
        #expect(t["spec"] == nad["spec"])
        #expect(t["kind"]?.stringValue == "NetworkAttachmentDefinition")

        // Nothing to drop: unchanged.
        let plain = K8s.json(#"{"kind":"NetworkAttachmentDefinition","metadata":{"name":"a","namespace":"b"},"spec":{"config":"{}"}}"#)
        #expect(CachedNAD.trim(plain) == plain)
        #expect(CachedNAD.trim(K8s.json(#"{"kind":"NetworkAttachmentDefinition"}"#)) == nil)
        #expect(CachedNAD.trim(K8s.json(#"["not","an","object"]"#)) == nil)
    }
}

/// Caches, a pool over one scripted transport, metrics: what one daemon-served call sees.
private final class APIFixture: @unchecked Sendable {
    let pods = WatchCache<CachedPod>(resource: "pods", path: "/api/v1/pods") { CachedPod(pod: $0) }
    let nads = WatchCache<JSON>(resource: "network-attachment-definitions", path: "/apis/x") { CachedNAD.trim($0) }
    let transport: ScriptedTransport
    let made = Locked(0)
    let metrics = Metrics()
    let pool: ClientPool

    init(_ steps: [ScriptedTransport.Step]) {
        let t = ScriptedTransport(steps)
        transport = t
        let made = made
        pool = ClientPool {
            made.withLock { $0 += 1 }
            return K8s.client(t)
        }
        DaemonMetrics.declare(metrics)
        pods.replace(items: [K8s.json(fullPod)], resourceVersion: "100")
        nads.replace(items: [K8s.json(#"""
            {"kind":"NetworkAttachmentDefinition","metadata":{"name":"macvlan","namespace":"ns1","managedFields":[{}]},
             "spec":{"config":"{\"type\":\"macvlan\"}"}}
            """#)], resourceVersion: "50")
    }

    func api() -> DaemonKubeAPI {
        DaemonKubeAPI(pods: pods, nads: nads, pool: pool, metrics: metrics, deadline: Clock.deadline(afterSeconds: 30))
    }

    func lookups(_ resource: String, _ result: String) -> Double { metrics.counter(DaemonMetrics.cacheLookups, [resource, result]) }
    func apiRequests(_ call: String, _ result: String) -> Double { metrics.counter(DaemonMetrics.apiRequests, [call, result]) }
}

@Suite struct DaemonKubeAPITests {
    @Test func podCacheHitSendsNothing() throws {
        let f = APIFixture([])
        let api = f.api()
        for uid in ["uid-1", nil] {
            let pod = try api.getPodForAttachment(namespace: "ns1", name: "p1", expectedUID: uid)
            #expect(pod["metadata"]?["uid"]?.stringValue == "uid-1")
            #expect(pod["metadata"]?["annotations"]?["k8s.v1.cni.cncf.io/networks"]?.stringValue == "macvlan@net1")
            #expect(pod["metadata"]?["managedFields"] == nil)
            #expect(pod["spec"]?["nodeName"]?.stringValue == "node-1")
        }
        #expect(f.transport.requests.isEmpty)
        #expect(api.requestCount == 0)
        #expect(f.pool.totalRequests == 0)
        #expect(f.lookups("pods", "hit") == 2)
        #expect(f.lookups("pods", "miss") == 0)
    }

    @Test func podCacheMissOrOtherUIDReadsThrough() throws {
        let f = APIFixture([.respond(K8s.ok(K8s.pod("p2", uid: "uid-2")))])
        let api = f.api()
        let pod = try api.getPodForAttachment(namespace: "ns1", name: "p2", expectedUID: "uid-2")
        #expect(pod["metadata"]?["uid"]?.stringValue == "uid-2")
        #expect(f.transport.paths == ["/api/v1/namespaces/ns1/pods/p2"])
        #expect(f.transport.requests.first?.method == "GET")
        #expect(api.requestCount == 1)
        #expect(f.pool.totalRequests == 1)
        #expect(f.lookups("pods", "miss") == 1)
        #expect(f.apiRequests("get_pod", "ok") == 1)
        // A read-through does not fill the cache: only the watch does.
        #expect(f.pods.get(namespace: "ns1", name: "p2") == nil)

        // The pod was deleted and recreated under the same name and the watch has not caught up yet: the cached
        // pod's uid differs from the runtime's, so it is read through too.
        let f2 = APIFixture([.respond(K8s.ok(K8s.pod("p1", uid: "uid-new")))])
        let api2 = f2.api()
        let recreated = try api2.getPodForAttachment(namespace: "ns1", name: "p1", expectedUID: "uid-new")
        #expect(recreated["metadata"]?["uid"]?.stringValue == "uid-new")
        #expect(f2.transport.paths == ["/api/v1/namespaces/ns1/pods/p1"])
        #expect(f2.lookups("pods", "miss") == 1)
        #expect(f2.lookups("pods", "hit") == 0)
        #expect(api2.requestCount == 1)
    }

    @Test func nadCacheHitReadThroughAndFailure() throws {
        let f = APIFixture([.respond(K8s.ok(#"{"kind":"NetworkAttachmentDefinition","metadata":{"name":"other","namespace":"ns2"},"spec":{"config":"{}"}}"#))])
        let api = f.api()
        let hit = try api.getNetworkAttachmentDefinition(namespace: "ns1", name: "macvlan")
        #expect(hit["spec"]?["config"]?.stringValue == #"{"type":"macvlan"}"#)
        #expect(hit["metadata"]?["managedFields"] == nil)
        #expect(f.transport.requests.isEmpty)
        #expect(f.lookups("network-attachment-definitions", "hit") == 1)

        let miss = try api.getNetworkAttachmentDefinition(namespace: "ns2", name: "other")
        #expect(miss["metadata"]?["name"]?.stringValue == "other")
        #expect(f.transport.paths == ["/apis/k8s.cni.cncf.io/v1/namespaces/ns2/network-attachment-definitions/other"])
        #expect(f.lookups("network-attachment-definitions", "miss") == 1)
        #expect(f.apiRequests("get_nad", "ok") == 1)
        #expect(api.requestCount == 1)

        // A failed read-through is counted as an error.
        let f2 = APIFixture([.respond(K8s.status(404, "NotFound", "nope"))])
        let api2 = f2.api()
        let e = kubeError { () throws(KubeError) in try api2.getNetworkAttachmentDefinition(namespace: "ns1", name: "nope") }
        #expect(e?.kind == .notFound)
        #expect(api2.requestCount == 1)
        #expect(f2.pool.totalRequests == 1)
        #expect(f2.apiRequests("get_nad", "error") == 1)
        #expect(f2.apiRequests("get_nad", "ok") == 0)
    }

    @Test func writesGoThroughThePoolAndCallsShareOneClient() throws {
        let f = APIFixture([.respond(K8s.ok(K8s.pod("p1", uid: "uid-1"))), .respond(K8s.ok(K8s.pod("p9", uid: "u9")))])
        let api = f.api()
        _ = try api.patchPodAnnotations(namespace: "ns1", name: "p1", annotations: ["k8s.v1.cni.cncf.io/network-status": "[]"])
        _ = try f.api().getPodForAttachment(namespace: "ns1", name: "p9", expectedUID: nil)
        #expect(f.transport.requests.map(\.method) == ["PATCH", "GET"])
        #expect(f.transport.paths[0] == "/api/v1/namespaces/ns1/pods/p1/status")
        #expect(f.apiRequests("patch_pod_status", "ok") == 1)
        #expect(f.apiRequests("get_pod", "ok") == 1)
        #expect(api.requestCount == 1)
        #expect(f.pool.totalRequests == 2)
        #expect(f.made.current == 1)  // sequential calls reuse the pooled client (one kept-alive connection)
    }
}
