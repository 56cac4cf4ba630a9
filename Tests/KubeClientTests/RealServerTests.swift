import CNISpec
import SystemKit
import Testing
@testable import KubeClient

private func server() throws -> TestAPIServer {
    switch TestAPIServer.shared {
    case .success(let s): return s
    case .failure(let e): throw e
    }
}

private func kubeError<T>(_ body: () throws(KubeError) -> T) -> KubeError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

private func ms(since start: Int64) -> Double { Double(Clock.monotonicNanoseconds() - start) / 1e6 }

/// Real HTTPS against testenv/apiserver/server.py (TLS with a per-run CA and SAN certificate, bearer tokens,
/// metav1.Status errors, fault injection). Skipped only when the server script is absent.
@Suite(.enabled(if: TestAPIServer.scriptPresent,
                "testenv/apiserver/server.py is absent: real-HTTPS tests need the Python test API server"),
       .serialized)
struct RealServerTests {
    @Test func getPodOverTLSWithBearerTokenAndCAReusesTheConnection() throws {
        let s = try server()
        try s.createPod("kc-get", "p1", uid: "uid-get-1", annotations: ["k8s.v1.cni.cncf.io/networks": "macvlan"])
        let (c, t) = s.client(s.config(token: s.adminToken))
        let t0 = Clock.monotonicNanoseconds()
        let pod = try c.getPod(namespace: "kc-get", name: "p1")
        let first = ms(since: t0)
        #expect(pod["metadata"]?["uid"]?.stringValue == "uid-get-1")
        #expect(pod["metadata"]?["annotations"]?["k8s.v1.cni.cncf.io/networks"]?.stringValue == "macvlan")
        #expect(CurlTransport.isLibraryLoaded)
        let t1 = Clock.monotonicNanoseconds()
        for _ in 0..<5 { _ = try c.getPod(namespace: "kc-get", name: "p1") }
        let warm = ms(since: t1) / 5
        #expect(c.requestCount == 6)
        #expect(t.connectionsOpened == 1, "keep-alive: one TLS connection for all requests")
        print("KubeClient real GET pod: first \(first) ms (TLS handshake included; libcurl already loaded), warm \(warm) ms/request, "
              + "libcurl \(CurlTransport.libraryVersion ?? "?")")
    }

    @Test func caAsInlineDataAndTokenFile() throws {
        let s = try server()
        try s.createPod("kc-blob", "p1", uid: "uid-blob")
        let tokenFile = s.stateDir + "/client-token-blob"
        writeFile(tokenFile, s.adminToken + "\n")
        let (c, _) = s.client(s.config(tokenFile: tokenFile, caData: true))
        #expect(try c.getPod(namespace: "kc-blob", name: "p1")["metadata"]?["uid"]?.stringValue == "uid-blob")
    }

    @Test func wrongTokenIsUnauthorizedWithoutRetries() throws {
        let s = try server()
        try s.createPod("kc-auth", "p1", uid: "u")
        let (c, _) = s.client(s.config(token: "wrong-token"))
        let e = kubeError { () throws(KubeError) -> JSON in try c.getPod(namespace: "kc-auth", name: "p1") }
        #expect(e?.kind == .unauthorized)
        #expect(e?.httpCode == 401)
        #expect(e?.statusReason == "Unauthorized")
        #expect(c.requestCount == 1)
        #expect(e?.description.contains("wrong-token") == false)
    }

    @Test func rotatedTokenFileIsReReadOnceAfter401() throws {
        let s = try server()
        try s.createPod("kc-rot", "p1", uid: "u")
        let tokenFile = s.stateDir + "/client-token-rot"
        writeFile(tokenFile, "stale-token\n")
        let (c, _) = s.client(s.config(tokenFile: tokenFile))
        _ = kubeError { () throws(KubeError) -> JSON in try c.getPod(namespace: "kc-rot", name: "p1") }
        #expect(c.requestCount == 1)
        writeFile(tokenFile, s.adminToken + "\n")
        _ = try c.getPod(namespace: "kc-rot", name: "p1")
        #expect(c.requestCount == 3)  // 401 with the cached token, then the re-read one
    }

    @Test func notFoundStatusIsDecoded() throws {
        let s = try server()
        try s.createNamespace("kc-404")
        let (c, _) = s.client(s.config(token: s.adminToken))
        let e = kubeError { () throws(KubeError) -> JSON in try c.getPod(namespace: "kc-404", name: "nope") }
        #expect(e?.kind == .notFound)
        #expect(e?.statusReason == "NotFound")
        #expect(e?.statusMessage == #"pods "nope" not found"#)
        #expect(c.requestCount == 1)
        let e2 = kubeError { () throws(KubeError) -> JSON in
            try c.getNetworkAttachmentDefinition(namespace: "kc-404", name: "nope")
        }
        #expect(e2?.kind == .notFound)
        #expect(e2?.statusMessage?.contains("nope") == true)
    }

    @Test func getNetworkAttachmentDefinition() throws {
        let s = try server()
        try s.createNAD("kc-nad", "macvlan", config: #"{"cniVersion":"1.0.0","type":"macvlan"}"#)
        let (c, _) = s.client(s.config(token: s.multusToken))
        let nad = try c.getNetworkAttachmentDefinition(namespace: "kc-nad", name: "macvlan")
        #expect(nad["spec"]?["config"]?.stringValue == #"{"cniVersion":"1.0.0","type":"macvlan"}"#)
    }

    @Test func patchStatusAnnotationsAndReadBack() throws {
        let s = try server()
        try s.createPod("kc-patch", "p1", uid: "u", annotations: ["keep": "1", "drop": "x"])
        let (c, _) = s.client(s.config(token: s.adminToken))
        let status = #"[{"name":"default/macvlan","interface":"net1","ips":["10.1.1.2"]}]"#
        let updated = try c.patchPodAnnotations(namespace: "kc-patch", name: "p1",
                                                annotations: ["k8s.v1.cni.cncf.io/network-status": status, "drop": nil])
        #expect(updated["metadata"]?["annotations"]?["k8s.v1.cni.cncf.io/network-status"]?.stringValue == status)
        let pod = try c.getPod(namespace: "kc-patch", name: "p1")
        let ann = pod["metadata"]?["annotations"]
        #expect(ann?["k8s.v1.cni.cncf.io/network-status"]?.stringValue == status)
        #expect(ann?["keep"]?.stringValue == "1")
        #expect(ann?["drop"] == nil)
        let logged = try s.loggedRequests(method: "PATCH", pathContains: "/namespaces/kc-patch/pods/p1/status")
        #expect(logged.count == 1)
    }

    @Test func patchWithMultusRoleIsForbidden() throws {
        // The Multus ClusterRole has no "patch" on pods/status (k8s-test-apiserver.md §5).
        let s = try server()
        try s.createPod("kc-rbac", "p1", uid: "u")
        let (c, _) = s.client(s.config(token: s.multusToken))
        let e = kubeError { () throws(KubeError) -> JSON in
            try c.patchPodAnnotations(namespace: "kc-rbac", name: "p1", annotations: ["a": "b"])
        }
        #expect(e?.kind == .forbidden)
        #expect(e?.statusMessage?.contains("cannot patch") == true, "\(String(describing: e))")
        #expect(c.requestCount == 1)
    }

    @Test func tooManyRequestsWithRetryAfterIsRetried() throws {
        let s = try server()
        try s.createPod("kc-429", "p1", uid: "u")
        try s.inject(#"{"method":"GET","path":"/namespaces/kc-429/pods/p1$","action":"status","code":429,"retry_after":1,"count":1}"#)
        let (c, _) = s.client(s.config(token: s.adminToken))
        let t0 = Clock.monotonicNanoseconds()
        _ = try c.getPod(namespace: "kc-429", name: "p1")
        let elapsed = ms(since: t0)
        #expect(c.requestCount == 2)
        #expect(elapsed >= 1000, "Retry-After: 1 honoured (\(elapsed) ms)")
        #expect(try s.loggedRequests(method: "GET", pathContains: "/namespaces/kc-429/pods/p1").count == 2)
    }

    @Test func serviceUnavailableResetAndTruncationAreRetried() throws {
        let s = try server()
        try s.createPod("kc-flaky", "p1", uid: "u")
        try s.inject(#"{"method":"GET","path":"/namespaces/kc-flaky/pods/p1$","action":"status","code":503,"count":1}"#)
        try s.inject(#"{"method":"GET","path":"/namespaces/kc-flaky/pods/p1$","action":"reset","count":1}"#)
        try s.inject(#"{"method":"GET","path":"/namespaces/kc-flaky/pods/p1$","action":"truncate","count":1}"#)
        let (c, _) = s.client(s.config(token: s.adminToken))
        _ = try c.getPod(namespace: "kc-flaky", name: "p1")
        // libcurl itself resends once when a kept-alive connection turns out dead (the reset here), so the
        // client may count one attempt fewer than the server saw.
        #expect((3...4).contains(c.requestCount))
        #expect(try s.loggedRequests(method: "GET", pathContains: "/namespaces/kc-flaky/pods/p1").count == 4)
    }

    @Test func internalErrorsExhaustTheAttempts() throws {
        let s = try server()
        try s.createPod("kc-500", "p1", uid: "u")
        try s.inject(#"{"method":"GET","path":"/namespaces/kc-500/pods/p1$","action":"status","code":500,"count":10}"#)
        let (c, _) = s.client(s.config(token: s.adminToken))
        let e = kubeError { () throws(KubeError) -> JSON in try c.getPod(namespace: "kc-500", name: "p1") }
        #expect(e?.kind == .server(500))
        #expect(e?.statusReason == "InternalError")
        #expect(e?.attempts == RetryPolicy.default.maxAttempts)
        #expect(c.requestCount == RetryPolicy.default.maxAttempts)
    }

    @Test func slowServerHitsTheDeadline() throws {
        let s = try server()
        try s.createPod("kc-slow", "p1", uid: "u")
        try s.inject(#"{"method":"GET","path":"/namespaces/kc-slow/pods/p1$","action":"delay","delay_ms":3000,"count":5}"#)
        let (c, _) = s.client(s.config(token: s.adminToken), deadlineIn: 800_000_000)
        let t0 = Clock.monotonicNanoseconds()
        let e = kubeError { () throws(KubeError) -> JSON in try c.getPod(namespace: "kc-slow", name: "p1") }
        let elapsed = ms(since: t0)
        #expect(e?.kind == .timeout)
        #expect(elapsed < 1000, "the 800 ms deadline held (\(elapsed) ms)")
    }

    @Test func wrongCAFailsVerificationWithoutRetries() throws {
        let s = try server()
        // The client certificate is not a CA: the server's chain cannot be verified with it.
        let cfg = KubeConfig(server: s.url, certificateAuthority: .file(s.clientCertPath), token: s.adminToken)
        let (c, _) = s.client(cfg)
        let e = kubeError { () throws(KubeError) -> JSON in try c.getPod(namespace: "kc-get", name: "p1") }
        #expect(e?.kind == .tls, "\(String(describing: e))")
        #expect(c.requestCount == 1)
    }

    @Test func clientCertificateAuthenticationFromFilesAndData() throws {
        let s = try server()
        try s.createPod("kc-cert", "p1", uid: "uid-cert")
        let files = KubeConfig(server: s.url, certificateAuthority: .file(s.caPath),
                               clientCertificate: .file(s.clientCertPath), clientKey: .file(s.clientKeyPath))
        #expect(try s.client(files).0.getPod(namespace: "kc-cert", name: "p1")["metadata"]?["uid"]?.stringValue == "uid-cert")
        let data = KubeConfig(server: s.url, certificateAuthority: .file(s.caPath),
                              clientCertificate: .data(try FileSystem.read(s.clientCertPath)),
                              clientKey: .data(try FileSystem.read(s.clientKeyPath)))
        #expect(try s.client(data).0.getPod(namespace: "kc-cert", name: "p1")["metadata"]?["uid"]?.stringValue == "uid-cert")
    }

    @Test func createEventIsStored() throws {
        let s = try server()
        try s.createPod("kc-event", "p1", uid: "uid-ev")
        let (c, _) = s.client(s.config(token: s.multusToken))
        _ = try c.createEvent(namespace: "kc-event", involvedPod: PodReference(name: "p1", uid: "uid-ev"),
                              reason: "AddedInterface", message: "Add net1 [10.1.1.2/24] from kc-event/macvlan",
                              type: .normal)
        let r = try s.api("GET", "/api/v1/namespaces/kc-event/events")
        let items = try JSON.parse(r.body)["items"]?.arrayValue ?? []
        #expect(items.contains {
            $0["reason"]?.stringValue == "AddedInterface" && $0["involvedObject"]?["uid"]?.stringValue == "uid-ev"
        })
    }

    @Test func yamlKubeconfigThroughTheConverter() throws {
        let s = try server()
        guard KubeConfig.findConverter(searchPaths: ConverterTests.searchPaths) != nil else {
            Issue.record("plexus-kubeconfig not built next to the tests (build with --build-tests)")
            return
        }
        try s.createPod("kc-yaml", "p1", uid: "uid-yaml")
        let dir = makeTempDir("kcyaml")
        defer { removeTree(dir) }
        // Relative tokenFile and CA, resolved against the kubeconfig's directory.
        writeFile(dir + "/token", s.adminToken + "\n")
        writeFile(dir + "/ca.crt", String(decoding: try FileSystem.read(s.caPath), as: UTF8.self))
        writeFile(dir + "/kubeconfig", """
            apiVersion: v1
            kind: Config
            clusters:
            - name: test
              cluster:
                server: \(s.url)
                certificate-authority: ca.crt
            users:
            - name: plexus
              user:
                tokenFile: token
            contexts:
            - name: plexus
              context: {cluster: test, user: plexus}
            current-context: plexus
            """)
        let cfg = try KubeConfig.load(kubeconfigPath: dir + "/kubeconfig", converterSearchPaths: ConverterTests.searchPaths)
        #expect(cfg.tokenFile == dir + "/token")
        let (c, _) = s.client(cfg)
        #expect(try c.getPod(namespace: "kc-yaml", name: "p1")["metadata"]?["uid"]?.stringValue == "uid-yaml")
    }

    @Test func unreachableServer() throws {
        // Nothing listens on port 1.
        let cfg = KubeConfig(server: "https://127.0.0.1:1", certificateAuthority: .file("/nonexistent/ca"), token: "t")
        let t = CurlTransport(config: cfg)
        let c = KubeHTTPClient(config: cfg, transport: t, deadline: Clock.monotonicNanoseconds() + 5_000_000_000)
        let e = kubeError { () throws(KubeError) -> JSON in try c.getPod(namespace: "a", name: "b") }
        #expect(e?.kind == .unreachable)
        #expect(e?.attempts == RetryPolicy.default.maxAttempts)
        #expect(e?.description.contains("127.0.0.1:1") == true)
    }
}
