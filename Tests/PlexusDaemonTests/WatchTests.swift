import CNISpec
import KubeClient
import SystemKit
import Testing

@Suite struct WatchEventDecoderTests {
    @Test func eventsSplitAcrossFeedsAreDecodedOnceCompleteAndInOrder() throws {
        var d = WatchEventDecoder()
        let line = K8s.event("ADDED", K8s.pod("a", uid: "u1", rv: "7"))
        let bytes = Array(line.utf8)
        let cut = bytes.count / 2
        #expect(try d.feed(Array(bytes[..<cut])).isEmpty)
        let events = try d.feed(Array(bytes[cut...]) + Array(K8s.bookmark("8").utf8.prefix(10)))
        #expect(events.count == 1)
        #expect(events[0].kind == .added)
        #expect(events[0].object["metadata"]?["name"]?.stringValue == "a")
        #expect(events[0].resourceVersion == "7")
        // The rest of the bookmark, fed byte by byte.
        var rest: [WatchEvent] = []
        for b in Array(K8s.bookmark("8").utf8.dropFirst(10)) { rest += try d.feed([b]) }
        #expect(rest.count == 1)
        #expect(rest[0].kind == .bookmark)
        #expect(rest[0].resourceVersion == "8")

        // Several events in one feed keep their order; blank lines and CRLF endings are fine.
        let text = K8s.event("ADDED", K8s.pod("a")) + "\n  \r\n\t\n" + K8s.event("MODIFIED", K8s.pod("b"))
            + K8s.event("DELETED", K8s.pod("c")).replacingNewlineWithCRLF + K8s.errorEvent(410, "too old")
        let batch = try d.feed(Array(text.utf8))
        #expect(batch.map(\.kind) == [.added, .modified, .deleted, .error])
        #expect(batch.map { $0.object["metadata"]?["name"]?.stringValue } == ["a", "b", "c", nil])
        #expect(batch[3].object["code"]?.intValue == 410)
        #expect(try d.feed([]).isEmpty)
    }

    @Test(arguments: [
        "not json",
        #"{"type":"ADDED"}"#,
        #"{"type":"ADDED","object":"a string"}"#,
        #"{"type":"RENAMED","object":{}}"#,
        #"{"object":{}}"#,
        #"[1,2]"#,
    ])
    func malformedLinesAreRejected(_ line: String) {
        var d = WatchEventDecoder()
        let error = #expect(throws: WatchEventDecoder.DecodeError.self) {
            _ = try d.feed(Array((K8s.event("ADDED", K8s.pod("ok")) + line + "\n").utf8))
        }
        guard case .notAnEvent = error else {
            Issue.record("expected notAnEvent, got \(String(describing: error))")
            return
        }
    }

    @Test func aLineLongerThanTheLimitIsAnError() throws {
        var d = WatchEventDecoder()
        d.maxLine = 64
        // Exactly the limit pending is fine…
        #expect(try d.feed(Array(repeating: UInt8(ascii: "x"), count: 64)).isEmpty)
        // …one byte more without a newline is not.
        #expect(throws: WatchEventDecoder.DecodeError.lineTooLong) { _ = try d.feed([UInt8(ascii: "x")]) }

        // A line growing over several feeds is caught once the pending part passes the limit.
        let event = Array(K8s.event("ADDED", K8s.pod("a")).utf8)
        var e = WatchEventDecoder()
        e.maxLine = event.count + 40
        #expect(try e.feed(event + Array(repeating: UInt8(ascii: " "), count: 40)).count == 1)
        #expect(throws: WatchEventDecoder.DecodeError.lineTooLong) { _ = try e.feed(Array(repeating: UInt8(ascii: " "), count: event.count + 1)) }

        // A complete line over the limit, arriving in one piece, is rejected too.
        var f = WatchEventDecoder()
        f.maxLine = event.count - 2
        #expect(throws: WatchEventDecoder.DecodeError.lineTooLong) { _ = try f.feed(event) }
    }
}

extension String {
    var replacingNewlineWithCRLF: String { String(dropLast()) + "\r\n" }
}

@Suite struct WatchRequestTests {
    private func watch(_ t: ScriptedTransport, path: String = "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1",
                       rv: String = "42", client: KubeHTTPClient? = nil,
                       onEvent: @escaping (WatchEvent) -> Bool = { _ in true }) throws(KubeError) -> WatchEnd {
        let c = client ?? K8s.client(t)
        return try c.watch(path, resourceVersion: rv, timeoutSeconds: 300, operation: "watch pods", onEvent: onEvent)
    }

    @Test func queryHeadersAndTimeout() throws {
        let t = ScriptedTransport([.stream([]), .stream([])])
        let c = K8s.client(t)
        #expect(try watch(t, client: c) == .closed)
        let r = t.requests[0]
        #expect(r.method == "GET")
        #expect(r.path.hasPrefix("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&"))
        #expect(query(r.path, "watch") == "1")
        #expect(query(r.path, "allowWatchBookmarks") == "true")
        #expect(query(r.path, "resourceVersion") == "42")
        #expect(query(r.path, "timeoutSeconds") == "300")
        #expect(r.header("Authorization") == "Bearer s3cr3t")
        #expect(r.header("Accept") == "application/json")
        // The server ends the stream after timeoutSeconds; the transport allows a minute more.
        #expect(r.timeoutNanoseconds == 360 * 1_000_000_000)
        #expect(c.requestCount == 1)

        // A path without a query gets one; an empty resourceVersion is left out (watch from now).
        #expect(try watch(t, path: "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions", rv: "a b/c", client: c) == .closed)
        let p = t.requests[1].path
        #expect(p.hasPrefix("/apis/k8s.cni.cncf.io/v1/network-attachment-definitions?"))
        #expect(query(p, "resourceVersion") == "a%20b%2Fc")
        #expect(c.requestCount == 2)

        let t2 = ScriptedTransport([.stream([])])
        _ = try watch(t2, rv: "")
        #expect(query(t2.requests[0].path, "resourceVersion") == nil)
        #expect(query(t2.requests[0].path, "watch") == "1")
    }

    @Test func eventsSplitMidLineArriveWholeAndFalseStops() throws {
        let first = K8s.event("ADDED", K8s.pod("a", rv: "1"))
        let bytes = Array(first + K8s.event("MODIFIED", K8s.pod("a", rv: "2")) + K8s.bookmark("3"))
        let n1 = first.count
        // Cuts inside the first line, just before its newline, and inside the second line.
        let pieces = [String(bytes[..<10]), String(bytes[10..<(n1 - 1)]), String(bytes[(n1 - 1)..<(n1 + 20)]), String(bytes[(n1 + 20)...])]
        let t = ScriptedTransport([.stream(pieces)])
        var seen: [(WatchEvent.Kind, String?)] = []
        #expect(try watch(t) { seen.append(($0.kind, $0.resourceVersion)); return true } == .closed)
        #expect(seen.map(\.0) == [.added, .modified, .bookmark])
        #expect(seen.map(\.1) == ["1", "2", "3"])
        #expect(t.delivered.first?.pieces == 4)
        #expect(t.delivered.first?.stopped == false)

        // onEvent answering false stops at once: later events are not handed over, the transfer is ended.
        let t2 = ScriptedTransport([.stream([K8s.event("ADDED", K8s.pod("a")) + K8s.event("ADDED", K8s.pod("b")),
                                             K8s.event("ADDED", K8s.pod("c"))])])
        var n = 0
        #expect(try watch(t2) { _ in n += 1; return false } == .stopped)
        #expect(n == 1)
        #expect(t2.delivered.first?.stopped == true)
        #expect(t2.delivered.first?.pieces == 1)
    }

    @Test func goneExpires() throws {
        let t = ScriptedTransport([.stream([K8s.event("ADDED", K8s.pod("a")) + K8s.errorEvent(410, "too old resource version"),
                                            K8s.event("ADDED", K8s.pod("b"))])])
        var names: [String?] = []
        #expect(try watch(t) { names.append($0.object["metadata"]?["name"]?.stringValue); return true } == .expired)
        #expect(names == ["a"])
        #expect(t.delivered.first?.pieces == 1)
        #expect(t.delivered.first?.stopped == true)

        // 410 as the answer itself.
        let t2 = ScriptedTransport([.respond(K8s.status(410, "Expired", "too old"))])
        var called = false
        #expect(try watch(t2) { _ in called = true; return true } == .expired)
        #expect(!called)
    }

    @Test func failuresThrow() {
        // A non-410 ERROR event.
        let t = ScriptedTransport([.stream([K8s.errorEvent(500, "etcd is sad")]),
                                   .stream(["<html>proxy error</html>\n"]),
                                   .respond(K8s.status(403, "Forbidden", "no watch for you")),
                                   .fail(TransportError(.connection, "connection reset")),
                                   .fail(TransportError(.timeout, "timed out"))])
        let e = kubeError { () throws(KubeError) in try watch(t) }
        #expect(e?.kind == .invalidResponse)
        #expect(e?.httpCode == 500)
        #expect(e?.description.contains("etcd is sad") == true)
        // A stream that is not watch events.
        #expect(kubeError { () throws(KubeError) in try watch(t) }?.kind == .invalidResponse)
        #expect(t.delivered.last?.stopped == true)
        // Other non-2xx answers and transport errors.
        #expect(kubeError { () throws(KubeError) in try watch(t) }?.kind == .forbidden)
        #expect(kubeError { () throws(KubeError) in try watch(t) }?.kind == .unreachable)
        #expect(kubeError { () throws(KubeError) in try watch(t) }?.kind == .timeout)
        #expect(t.requests.count == 5)  // never retried inside watch

        // A transport that cannot stream.
        let c = K8s.client(PlainTransport())
        let e2 = kubeError { () throws(KubeError) in
            try c.watch("/api/v1/pods", resourceVersion: "1", timeoutSeconds: 5, operation: "watch pods") { _ in true }
        }
        #expect(e2?.kind == .config)
    }

    @Test func unauthorizedRereadsTheTokenFileOnce() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/token", "old\n")
        let config = KubeConfig(server: "https://h:1", tokenFile: dir + "/token")
        let t = ScriptedTransport([.stream([]), .respond(K8s.status(401, "Unauthorized")), .stream([K8s.bookmark("9")])])
        let c = K8s.client(t, config: config)
        #expect(try watch(t, client: c) == .closed)
        writeFile(dir + "/token", "new\n")  // rotated by the kubelet
        var rvs: [String?] = []
        #expect(try watch(t, client: c) { rvs.append($0.resourceVersion); return true } == .closed)
        #expect(t.requests.map { $0.header("Authorization") } == ["Bearer old", "Bearer old", "Bearer new"])
        #expect(rvs == ["9"])
        #expect(c.requestCount == 3)

        // Only once per watch: a second 401 is an error.
        let t2 = ScriptedTransport([.respond(K8s.status(401, "Unauthorized")), .respond(K8s.status(401, "Unauthorized"))])
        let e = kubeError { () throws(KubeError) in try watch(t2, client: K8s.client(t2, config: config)) }
        #expect(e?.kind == .unauthorized)
        #expect(t2.requests.count == 2)

        // Without a token file there is nothing to re-read.
        let t3 = ScriptedTransport([.respond(K8s.status(401, "Unauthorized"))])
        #expect(kubeError { () throws(KubeError) in try watch(t3) }?.kind == .unauthorized)
        #expect(t3.requests.count == 1)
    }

    @Test func listPageQuery() throws {
        let t = ScriptedTransport([.respond(K8s.list(rv: "5", continueToken: "x", items: [K8s.pod("a")])),
                                   .respond(K8s.list(rv: "5", items: [])),
                                   .respond(K8s.list(rv: "5", items: []))])
        let c = K8s.client(t)
        let page = try c.listPage("/api/v1/pods?fieldSelector=a%3Db", limit: 50, continueToken: nil, operation: "list pods")
        #expect(page["metadata"]?["continue"]?.stringValue == "x")
        #expect(page["items"]?.arrayValue?.count == 1)
        _ = try c.listPage("/apis/k8s.cni.cncf.io/v1/network-attachment-definitions", limit: 2, continueToken: "c/1+=", operation: "list")
        _ = try c.listPage("/api/v1/pods", limit: 3, continueToken: "", operation: "list")
        #expect(t.paths == [
            "/api/v1/pods?fieldSelector=a%3Db&limit=50",
            "/apis/k8s.cni.cncf.io/v1/network-attachment-definitions?limit=2&continue=c%2F1%2B%3D",
            "/api/v1/pods?limit=3",
        ])
    }
}

@Suite struct TokenMaxAgeTests {
    private let second: Int64 = 1_000_000_000

    private func run(maxAge: Int64?) throws -> [String?] {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        writeFile(dir + "/token", "first\n")
        let clock = FakeClock()
        let pod = K8s.ok(K8s.pod("p1", uid: "u"))
        let t = ScriptedTransport([.respond(pod), .respond(pod), .respond(pod), .respond(pod)])
        let c = KubeHTTPClient(config: KubeConfig(server: "https://h:1", tokenFile: dir + "/token"), transport: t,
                               deadline: clock.now() + 3600 * second, clock: clock, jitterSeed: 1)
        c.tokenMaxAgeNanoseconds = maxAge
        _ = try c.getPod(namespace: "ns1", name: "p1")
        writeFile(dir + "/token", "second\n")
        clock.advance(30 * second)
        _ = try c.getPod(namespace: "ns1", name: "p1")
        clock.advance(31 * second)  // 61 s since the file was read
        _ = try c.getPod(namespace: "ns1", name: "p1")
        writeFile(dir + "/token", "third\n")
        clock.advance(10 * second)  // 10 s since the re-read
        _ = try c.getPod(namespace: "ns1", name: "p1")
        return t.requests.map { $0.header("Authorization") }
    }

    @Test func tokenFileIsReReadOnceOlderThanTheMaximumAge() throws {
        #expect(try run(maxAge: 60 * second) == ["Bearer first", "Bearer first", "Bearer second", "Bearer second"])
        // Without a maximum age (the plugin's short-lived clients) the file is read once.
        #expect(try run(maxAge: nil) == ["Bearer first", "Bearer first", "Bearer first", "Bearer first"])
    }
}
