import CNISpec
import Testing
@testable import KubeClient

private let second: Int64 = 1_000_000_000
private let ms: Int64 = 1_000_000

private func client(
    _ transport: FakeTransport, clock: FakeClock, deadlineIn: Int64 = 30 * second,
    config: KubeConfig = Fixtures.config, policy: RetryPolicy = .default
) -> KubeHTTPClient {
    KubeHTTPClient(config: config, transport: transport, deadline: clock.now() + deadlineIn, retryPolicy: policy,
                   clock: clock, jitterSeed: 42)
}

private func kubeError(_ body: () throws(KubeError) -> JSON) -> KubeError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

@Suite struct RequestTests {
    @Test func getPodSendsAuthenticatedGETAndDecodes() throws {
        let clock = FakeClock()
        let t = FakeTransport([.respond(Fixtures.podOK)], clock: clock)
        let c = client(t, clock: clock)
        let pod = try c.getPod(namespace: "ns1", name: "p1")
        #expect(pod["metadata"]?["uid"]?.stringValue == "1234")
        #expect(t.requests.count == 1)
        let r = t.requests[0]
        #expect(r.method == "GET")
        #expect(r.path == "/api/v1/namespaces/ns1/pods/p1")
        #expect(r.header("Authorization") == "Bearer s3cr3t-token")
        #expect(r.header("Accept") == "application/json")
        #expect(r.body == nil)
        #expect(c.requestCount == 1)
        #expect(clock.sleeps.isEmpty)
    }

    @Test func nadPath() throws {
        let clock = FakeClock()
        let t = FakeTransport([.respond(HTTPResponse(status: 200, body: Fixtures.nad))], clock: clock)
        let nad = try client(t, clock: clock).getNetworkAttachmentDefinition(namespace: "ns1", name: "macvlan")
        #expect(nad["spec"]?["config"]?.stringValue == #"{"type":"macvlan"}"#)
        #expect(t.requests[0].path == "/apis/k8s.cni.cncf.io/v1/namespaces/ns1/network-attachment-definitions/macvlan")
    }

    @Test func mergePatchBodyShape() throws {
        let clock = FakeClock()
        let t = FakeTransport([.respond(Fixtures.podOK)], clock: clock)
        _ = try client(t, clock: clock).patchPodAnnotations(
            namespace: "ns1", name: "p1",
            annotations: ["k8s.v1.cni.cncf.io/network-status": #"[{"name":"x"}]"#, "old": nil])
        let r = t.requests[0]
        #expect(r.method == "PATCH")
        #expect(r.path == "/api/v1/namespaces/ns1/pods/p1/status")
        #expect(r.header("Content-Type") == "application/merge-patch+json")
        let body = try JSON.parse(r.body ?? [])
        #expect(body.objectValue?.keys == ["metadata"])
        #expect(body["metadata"]?.objectValue?.keys == ["annotations"])
        let ann = body["metadata"]?["annotations"]
        #expect(ann?["k8s.v1.cni.cncf.io/network-status"]?.stringValue == #"[{"name":"x"}]"#)
        #expect(ann?["old"] == .null)
        #expect(ann?.objectValue?.count == 2)
        #expect(String(decoding: r.body!, as: UTF8.self)
            == #"{"metadata":{"annotations":{"k8s.v1.cni.cncf.io/network-status":"[{\"name\":\"x\"}]","old":null}}}"#)
    }

    @Test func eventBodyAndSingleAttempt() throws {
        let clock = FakeClock()
        let t = FakeTransport([.respond(HTTPResponse(status: 201, body: #"{"kind":"Event","apiVersion":"v1"}"#)),
                               .respond(Fixtures.status(500, "InternalError", "boom"))], clock: clock)
        let c = client(t, clock: clock)
        c.eventHost = "node-1"
        _ = try c.createEvent(namespace: "ns1", involvedPod: PodReference(name: "p1", uid: "1234"),
                              reason: "AddedInterface", message: "Add net1 [10.1.1.2/24] from ns1/macvlan",
                              type: .normal)
        let r = t.requests[0]
        #expect(r.method == "POST")
        #expect(r.path == "/api/v1/namespaces/ns1/events")
        #expect(r.header("Content-Type") == "application/json")
        let e = try JSON.parse(r.body ?? [])
        #expect(e["kind"]?.stringValue == "Event")
        #expect(e["metadata"]?["namespace"]?.stringValue == "ns1")
        #expect(e["metadata"]?["name"]?.stringValue?.hasPrefix("p1.") == true)
        #expect(e["involvedObject"]?["kind"]?.stringValue == "Pod")
        #expect(e["involvedObject"]?["name"]?.stringValue == "p1")
        #expect(e["involvedObject"]?["uid"]?.stringValue == "1234")
        #expect(e["reason"]?.stringValue == "AddedInterface")
        #expect(e["type"]?.stringValue == "Normal")
        #expect(e["source"]?["component"]?.stringValue == "plexus")
        #expect(e["source"]?["host"]?.stringValue == "node-1")
        #expect(e["firstTimestamp"]?.stringValue?.count == 20)  // 2026-01-02T03:04:05Z

        // Best effort: a 500 on an event is not retried.
        let err = kubeError { () throws(KubeError) -> JSON in
            try c.createEvent(namespace: "ns1", involvedPod: PodReference(name: "p1"), reason: "R", message: "m",
                              type: .warning)
        }
        #expect(err?.kind == .server(500))
        #expect(t.requests.count == 2)
    }

    @Test(arguments: ["../etc", "a/b", "UPPER", "", "p1?x=y", "p%2e", String(repeating: "a", count: 254), "-a", "a..b"])
    func invalidNamesNeverReachTheURL(_ name: String) {
        let clock = FakeClock()
        let t = FakeTransport([], clock: clock)
        let c = client(t, clock: clock)
        let e1 = kubeError { () throws(KubeError) -> JSON in try c.getPod(namespace: "ns1", name: name) }
        let e2 = kubeError { () throws(KubeError) -> JSON in try c.getPod(namespace: name, name: "p1") }
        let e3 = kubeError { () throws(KubeError) -> JSON in
            try c.getNetworkAttachmentDefinition(namespace: "ns1", name: name)
        }
        for e in [e1, e2, e3] { #expect(e?.kind == .invalidArgument) }
        #expect(t.requests.isEmpty)
    }

    @Test func validNamesAndEscaping() {
        #expect(KubernetesNames.isDNS1123Subdomain("a.b-c.d1"))
        #expect(!KubernetesNames.isDNS1123Label("a.b"))
        #expect(KubernetesNames.isDNS1123Label(String(repeating: "a", count: 63)))
        #expect(!KubernetesNames.isDNS1123Label(String(repeating: "a", count: 64)))
        #expect(KubePaths.escape("a b/../?%") == "a%20b%2F..%2F%3F%25")
    }

    @Test func kindMismatchIsInvalidResponse() {
        let clock = FakeClock()
        let t = FakeTransport([.respond(HTTPResponse(status: 200, body: Fixtures.nad))], clock: clock)
        let e = kubeError { () throws(KubeError) -> JSON in try client(t, clock: clock).getPod(namespace: "ns1", name: "p1") }
        #expect(e?.kind == .invalidResponse)
    }

    @Test func nonJSONSuccessIsInvalidResponseAndNotRetried() {
        let clock = FakeClock()
        let t = FakeTransport([.respond(HTTPResponse(status: 200, body: "<html>proxy</html>"))], clock: clock)
        let e = kubeError { () throws(KubeError) -> JSON in try client(t, clock: clock).getPod(namespace: "ns1", name: "p1") }
        #expect(e?.kind == .invalidResponse)
        #expect(e?.detail?.contains("<html>proxy</html>") == true)
        #expect(t.requests.count == 1)
    }
}

@Suite struct StatusDecodingTests {
    @Test func notFoundStatusIsDecoded() {
        let clock = FakeClock()
        let t = FakeTransport([.respond(Fixtures.status(404, "NotFound",
            #"network-attachment-definitions.k8s.cni.cncf.io "nope" not found"#))], clock: clock)
        let e = kubeError { () throws(KubeError) -> JSON in
            try client(t, clock: clock).getNetworkAttachmentDefinition(namespace: "ns1", name: "nope")
        }
        #expect(e?.kind == .notFound)
        #expect(e?.httpCode == 404)
        #expect(e?.statusReason == "NotFound")
        #expect(e?.statusMessage == #"network-attachment-definitions.k8s.cni.cncf.io "nope" not found"#)
        #expect(e?.operation == "get network-attachment-definition ns1/nope")
        #expect(e?.attempts == 1)
        #expect(e?.description == #"get network-attachment-definition ns1/nope: HTTP 404 NotFound: network-attachment-definitions.k8s.cni.cncf.io "nope" not found"#)
        #expect(t.requests.count == 1)
    }

    @Test func nonStatusErrorBodyBecomesDetail() {
        let clock = FakeClock()
        let t = FakeTransport([.respond(HTTPResponse(status: 403, body: "forbidden by proxy\n"))], clock: clock)
        let e = kubeError { () throws(KubeError) -> JSON in try client(t, clock: clock).getPod(namespace: "ns1", name: "p1") }
        #expect(e?.kind == .forbidden)
        #expect(e?.statusMessage == nil)
        #expect(e?.description.contains("forbidden by proxy") == true)
    }

    @Test(arguments: [(401, KubeError.Kind.unauthorized), (403, .forbidden), (404, .notFound), (409, .conflict),
                      (422, .rejected(422)), (400, .rejected(400)), (415, .rejected(415))])
    func notRetried(code: Int, kind: KubeError.Kind) {
        let clock = FakeClock()
        let t = FakeTransport([.respond(Fixtures.status(code, "X", "m"))], fallback: .respond(Fixtures.podOK),
                              clock: clock)
        let e = kubeError { () throws(KubeError) -> JSON in try client(t, clock: clock).getPod(namespace: "ns1", name: "p1") }
        #expect(e?.kind == kind)
        #expect(t.requests.count == 1)
        #expect(clock.sleeps.isEmpty)
    }

    @Test func tokensNeverAppearInErrorsOrDescriptions() {
        let clock = FakeClock()
        let t = FakeTransport([.respond(Fixtures.status(401, "Unauthorized", "Unauthorized"))], clock: clock)
        let e = kubeError { () throws(KubeError) -> JSON in try client(t, clock: clock).getPod(namespace: "ns1", name: "p1") }
        #expect(e?.kind == .unauthorized)
        #expect(e?.description.contains("s3cr3t") == false)
        #expect(!Fixtures.config.description.contains("s3cr3t"))
    }
}

@Suite struct RetryTests {
    @Test func tooManyRequestsHonoursRetryAfter() throws {
        let clock = FakeClock()
        let t = FakeTransport([.respond(Fixtures.status(429, "TooManyRequests", "slow down", retryAfter: 1)),
                               .respond(Fixtures.podOK)], clock: clock)
        let c = client(t, clock: clock)
        _ = try c.getPod(namespace: "ns1", name: "p1")
        #expect(t.requests.count == 2)
        #expect(clock.sleeps == [1 * second])
        #expect(c.requestCount == 2)
    }

    @Test func retryAfterFromStatusDetailsAndCap() throws {
        let clock = FakeClock()
        var noHeader = Fixtures.status(429, "TooManyRequests", "x", retryAfter: 1)
        noHeader.headers["retry-after"] = nil
        let t = FakeTransport([.respond(noHeader), .respond(Fixtures.status(429, "TooManyRequests", "x", retryAfter: 30)),
                               .respond(Fixtures.podOK)], clock: clock)
        _ = try client(t, clock: clock).getPod(namespace: "ns1", name: "p1")
        #expect(clock.sleeps == [1 * second, RetryPolicy.default.maxRetryAfterNanoseconds])
    }

    @Test func serviceUnavailableBacksOffExponentiallyWithJitter() throws {
        let clock = FakeClock()
        let t = FakeTransport([.respond(Fixtures.status(503, "ServiceUnavailable", "x")),
                               .respond(Fixtures.status(500, "InternalError", "x")),
                               .respond(Fixtures.status(503, "ServiceUnavailable", "x")),
                               .respond(Fixtures.podOK)], clock: clock)
        _ = try client(t, clock: clock).getPod(namespace: "ns1", name: "p1")
        #expect(t.requests.count == 4)
        #expect(clock.sleeps.count == 3)
        let bounds: [(Int64, Int64)] = [(25 * ms, 50 * ms), (50 * ms, 100 * ms), (100 * ms, 200 * ms)]
        for (s, (lo, hi)) in zip(clock.sleeps, bounds) { #expect(s >= lo && s <= hi, "sleep \(s) not in \(lo)...\(hi)") }
    }

    @Test func connectionErrorsAreRetried() throws {
        let clock = FakeClock()
        let t = FakeTransport([.fail(TransportError(.connection, "Couldn't connect to server", code: 7)),
                               .fail(TransportError(.connection, "Connection reset by peer", code: 56)),
                               .respond(Fixtures.podOK)], clock: clock)
        _ = try client(t, clock: clock).getPod(namespace: "ns1", name: "p1")
        #expect(t.requests.count == 3)
    }

    @Test func attemptsAreBounded() {
        let clock = FakeClock()
        let t = FakeTransport([], fallback: .respond(Fixtures.status(500, "InternalError", "Internal error occurred")),
                              clock: clock)
        let e = kubeError { () throws(KubeError) -> JSON in try client(t, clock: clock).getPod(namespace: "ns1", name: "p1") }
        #expect(e?.kind == .server(500))
        #expect(e?.attempts == 4)
        #expect(e?.description.contains("[after 4 attempts]") == true)
        #expect(t.requests.count == 4)
        #expect(clock.sleeps.count == 3)
    }

    @Test func unreachableAfterAllAttempts() {
        let clock = FakeClock()
        let t = FakeTransport([], fallback: .fail(TransportError(.connection, "Couldn't connect to server", code: 7)),
                              clock: clock)
        let e = kubeError { () throws(KubeError) -> JSON in try client(t, clock: clock).getPod(namespace: "ns1", name: "p1") }
        #expect(e?.kind == .unreachable)
        #expect(e?.detail?.contains("https://10.0.0.1:6443") == true)
        #expect(t.requests.count == 4)
    }

    @Test func tlsFailuresAreNotRetried() {
        let clock = FakeClock()
        let t = FakeTransport([.fail(TransportError(.tls, "SSL peer certificate or SSH remote key was not OK", code: 60))],
                              fallback: .respond(Fixtures.podOK), clock: clock)
        let e = kubeError { () throws(KubeError) -> JSON in try client(t, clock: clock).getPod(namespace: "ns1", name: "p1") }
        #expect(e?.kind == .tls)
        #expect(t.requests.count == 1)
    }

    @Test func retryAfterBeyondDeadlineFailsWithoutSleeping() {
        let clock = FakeClock()
        let t = FakeTransport([.respond(Fixtures.status(429, "TooManyRequests", "x", retryAfter: 1))],
                              fallback: .respond(Fixtures.podOK), clock: clock)
        let e = kubeError { () throws(KubeError) -> JSON in
            try client(t, clock: clock, deadlineIn: 500 * ms).getPod(namespace: "ns1", name: "p1")
        }
        #expect(e?.kind == .tooManyRequests)
        #expect(e?.statusMessage == "x")
        #expect(clock.sleeps.isEmpty)
        #expect(t.requests.count == 1)
    }

    @Test func noAttemptOrSleepPassesTheDeadline() {
        let clock = FakeClock()
        let start = clock.now()
        let deadline = start + 2 * second
        // Each attempt hangs until its timeout: attempts are cut to the time left, and the loop stops in time.
        let t = FakeTransport([], fallback: .hang, clock: clock)
        let policy = RetryPolicy(maxAttempts: 10, attemptTimeoutNanoseconds: 700 * ms)
        let c = KubeHTTPClient(config: Fixtures.config, transport: t, deadline: deadline, retryPolicy: policy,
                               clock: clock, jitterSeed: 1)
        let e = kubeError { () throws(KubeError) -> JSON in try c.getPod(namespace: "ns1", name: "p1") }
        #expect(e?.kind == .timeout)
        #expect(clock.now() <= deadline)
        #expect(t.requests.count >= 2)
        for (r, at) in zip(t.requests, t.sentAt) {
            #expect(at + r.timeoutNanoseconds <= deadline)
            #expect(r.connectTimeoutNanoseconds <= r.timeoutNanoseconds)
        }
    }

    @Test func expiredDeadlineSendsNothing() {
        let clock = FakeClock()
        let t = FakeTransport([], clock: clock)
        let c = client(t, clock: clock, deadlineIn: 0)
        let e = kubeError { () throws(KubeError) -> JSON in try c.getPod(namespace: "ns1", name: "p1") }
        #expect(e?.kind == .timeout)
        #expect(e?.attempts == 0)
        #expect(t.requests.isEmpty)
    }

    @Test func backoffBounds() {
        let p = RetryPolicy.default
        #expect(p.backoffNanoseconds(afterAttempt: 1, random: 0) == 50 * ms)
        #expect(p.backoffNanoseconds(afterAttempt: 1, random: 0.999_999) > 25 * ms - 1)
        #expect(p.backoffNanoseconds(afterAttempt: 2, random: 0) == 100 * ms)
        #expect(p.backoffNanoseconds(afterAttempt: 10, random: 0) == 1 * second)
        #expect(p.backoffNanoseconds(afterAttempt: 100, random: 0) == 1 * second)
        var j = JitterSource(seed: 7)
        for _ in 0..<1000 {
            let r = j.next()
            #expect(r >= 0 && r < 1)
        }
    }
}

@Suite struct TokenTests {
    @Test func tokenFileIsReadAndReReadAfter401() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/token", "old-token\n")
        let cfg = KubeConfig(server: "https://h:1", tokenFile: dir + "/token")
        let clock = FakeClock()
        let t = FakeTransport([.respond(Fixtures.podOK), .respond(Fixtures.status(401, "Unauthorized", "Unauthorized")),
                               .respond(Fixtures.podOK)], clock: clock)
        let c = client(t, clock: clock, config: cfg)
        _ = try c.getPod(namespace: "ns1", name: "p1")
        #expect(t.requests[0].header("Authorization") == "Bearer old-token")
        writeFile(dir + "/token", "new-token\n")  // rotated by the kubelet
        _ = try c.getPod(namespace: "ns1", name: "p1")
        #expect(t.requests[1].header("Authorization") == "Bearer old-token")
        #expect(t.requests[2].header("Authorization") == "Bearer new-token")
        #expect(t.requests.count == 3)
        #expect(clock.sleeps.isEmpty)
    }

    @Test func unchangedTokenFileMeans401() {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/token", "same\n")
        let clock = FakeClock()
        let t = FakeTransport([], fallback: .respond(Fixtures.status(401, "Unauthorized", "Unauthorized")), clock: clock)
        let c = client(t, clock: clock, config: KubeConfig(server: "https://h:1", tokenFile: dir + "/token"))
        let e = kubeError { () throws(KubeError) -> JSON in try c.getPod(namespace: "ns1", name: "p1") }
        #expect(e?.kind == .unauthorized)
        #expect(t.requests.count == 1)
    }

    @Test func eachClientReadsTheCurrentTokenFile() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let cfg = KubeConfig(server: "https://h:1", tokenFile: dir + "/token")
        for token in ["first", "second"] {
            writeFile(dir + "/token", token + "\n")
            let clock = FakeClock()
            let t = FakeTransport([.respond(Fixtures.podOK)], clock: clock)
            _ = try client(t, clock: clock, config: cfg).getPod(namespace: "ns1", name: "p1")
            #expect(t.requests[0].header("Authorization") == "Bearer \(token)")
        }
    }

    @Test func missingTokenFileFallsBackToStaticTokenOrFails() throws {
        let clock = FakeClock()
        let t = FakeTransport([.respond(Fixtures.podOK)], clock: clock)
        _ = try client(t, clock: clock, config: KubeConfig(server: "https://h:1", token: "static",
                                                            tokenFile: "/nonexistent/token")).getPod(namespace: "a", name: "b")
        #expect(t.requests[0].header("Authorization") == "Bearer static")

        let t2 = FakeTransport([], clock: clock)
        let e = kubeError { () throws(KubeError) -> JSON in
            try client(t2, clock: clock, config: KubeConfig(server: "https://h:1", tokenFile: "/nonexistent/token"))
                .getPod(namespace: "a", name: "b")
        }
        #expect(e?.kind == .config)
        #expect(e?.detail?.contains("/nonexistent/token") == true)
        #expect(t2.requests.isEmpty)
    }

    @Test func noCredentialsSendsNoAuthorization() throws {
        let clock = FakeClock()
        let t = FakeTransport([.respond(Fixtures.podOK)], clock: clock)
        _ = try client(t, clock: clock, config: KubeConfig(server: "https://h:1")).getPod(namespace: "a", name: "b")
        #expect(t.requests[0].header("Authorization") == nil)
    }
}

@Suite struct HTTPPiecesTests {
    @Test func headerBlockParsing() {
        let block = "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After:  3 \r\n"
            + "X-Other: y\r\nWarning: 299 - \"a\"\r\nwarning: 299 - \"b\"\r\n\r\n"
        let h = HTTPResponse.parseHeaders(block)
        #expect(h["retry-after"] == "3")
        #expect(h["content-type"] == "application/json")
        #expect(h["x-other"] == nil)
        #expect(h["warning"] == #"299 - "a", 299 - "b""#)
        #expect(HTTPResponse(status: 429, headers: h).retryAfterSeconds == 3)
        #expect(HTTPResponse(status: 429, headers: ["retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"]).retryAfterSeconds == nil)
    }

    @Test func headerInjectionIsRefused() {
        #expect(CurlTransport.isSafeHeader(HTTPHeader("Authorization", "Bearer x")))
        #expect(!CurlTransport.isSafeHeader(HTTPHeader("Authorization", "Bearer x\r\nX-Evil: 1")))
        #expect(!CurlTransport.isSafeHeader(HTTPHeader("Bad Name", "v")))
    }

    @Test func curlErrorMapping() {
        #expect(CurlTransport.error(code: 28, detail: "").kind == .timeout)
        #expect(CurlTransport.error(code: 60, detail: "").kind == .tls)
        #expect(CurlTransport.error(code: 7, detail: "").kind == .connection)
        #expect(CurlTransport.error(code: 56, detail: "").kind == .connection)
        #expect(CurlTransport.error(code: 3, detail: "").kind == .setup)
    }
}
