import CNISpec
import KubeClient
import SystemKit
import Testing
@testable import PlexusDaemon

/// A cache of pods' uids: objects without a uid decode to nil.
private func uidCache(path: String = "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1") -> WatchCache<String> {
    WatchCache(resource: "pods", path: path) { $0["metadata"]?["uid"]?.stringValue }
}

/// An event as the watch decodes it (`WatchEvent`'s initializer is internal to KubeClient).
private func event(_ kind: WatchEvent.Kind, _ object: String) -> WatchEvent {
    var d = WatchEventDecoder()
    guard let e = try? d.feed(Array(K8s.event(kind.rawValue, object).utf8)).first else { fatalError("bad test event \(object)") }
    return e
}

@Suite struct WatchCacheStateTests {
    @Test func replaceKeepsNamedDecodableObjectsOnly() {
        let c = uidCache()
        #expect(!c.isSynced)
        #expect(c.count == 0)
        c.replace(items: [K8s.json(K8s.pod("a", uid: "ua")), K8s.json(K8s.pod("b", ns: "ns2", uid: "ub")),
                          K8s.json(#"{"metadata":{"namespace":"ns1","uid":"nameless"}}"#),
                          K8s.json(K8s.pod("c"))],  // no uid: decode answers nil
                  resourceVersion: "10")
        #expect(c.isSynced)
        #expect(c.count == 2)
        #expect(c.resourceVersion == "10")
        #expect(c.get(namespace: "ns1", name: "a") == "ua")
        #expect(c.get(namespace: "ns2", name: "b") == "ub")
        #expect(c.get(namespace: "ns1", name: "b") == nil)
        #expect(c.get(namespace: "ns1", name: "c") == nil)

        // A new list replaces everything.
        c.replace(items: [K8s.json(K8s.pod("d", uid: "ud"))], resourceVersion: "20")
        #expect(c.count == 1)
        #expect(c.get(namespace: "ns1", name: "a") == nil)
        #expect(c.get(namespace: "ns1", name: "d") == "ud")
        #expect(c.resourceVersion == "20")
    }

    @Test func eventsUpdateObjectsAndResourceVersion() {
        let c = uidCache()
        c.replace(items: [K8s.json(K8s.pod("a", uid: "ua"))], resourceVersion: "1")
        c.apply(event(.added, K8s.pod("b", uid: "ub", rv: "2")))
        #expect(c.get(namespace: "ns1", name: "b") == "ub")
        #expect(c.resourceVersion == "2")
        c.apply(event(.modified, K8s.pod("a", uid: "ua2", rv: "3")))
        #expect(c.get(namespace: "ns1", name: "a") == "ua2")
        #expect(c.resourceVersion == "3")
        c.apply(event(.deleted, K8s.pod("b", uid: "ub", rv: "4")))
        #expect(c.get(namespace: "ns1", name: "b") == nil)
        #expect(c.resourceVersion == "4")
        c.apply(event(.bookmark, #"{"kind":"Pod","metadata":{"resourceVersion":"5"}}"#))
        #expect(c.resourceVersion == "5")
        #expect(c.count == 1)
        // Deleting what is not there is harmless.
        c.apply(event(.deleted, K8s.pod("zz", rv: "6")))
        #expect(c.count == 1)
        #expect(c.resourceVersion == "6")
        // An event without a resourceVersion keeps the last one.
        c.apply(event(.added, K8s.pod("e", uid: "ue")))
        #expect(c.get(namespace: "ns1", name: "e") == "ue")
        #expect(c.resourceVersion == "6")
        // An object that no longer decodes (its uid is gone) is removed.
        c.apply(event(.modified, K8s.pod("a", rv: "7")))
        #expect(c.get(namespace: "ns1", name: "a") == nil)
        #expect(c.count == 1)
        #expect(c.resourceVersion == "7")
    }

    @Test func namelessObjectsAndErrorEventsAreIgnored() {
        let c = uidCache()
        c.replace(items: [K8s.json(K8s.pod("a", uid: "ua"))], resourceVersion: "1")
        c.apply(event(.added, #"{"metadata":{"namespace":"ns1","uid":"x","resourceVersion":"9"}}"#))
        c.apply(event(.deleted, #"{"metadata":{"namespace":"ns1","resourceVersion":"9"}}"#))
        c.apply(event(.error, #"{"kind":"Status","code":500,"metadata":{"resourceVersion":"9"}}"#))
        #expect(c.count == 1)
        #expect(c.get(namespace: "ns1", name: "a") == "ua")
        #expect(c.resourceVersion == "1")

        // Cluster-scoped objects are keyed by name alone.
        let nodes = WatchCache<String>(resource: "nodes", path: "/api/v1/nodes") { $0["metadata"]?["name"]?.stringValue }
        nodes.apply(event(.added, #"{"metadata":{"name":"n1","resourceVersion":"3"}}"#))
        #expect(nodes.get(namespace: "", name: "n1") == "n1")
    }
}

/// Runs a cache against a script: stops once `stopAfter` requests have been answered.
private final class Run: @unchecked Sendable {
    let transport: ScriptedTransport
    let cache: WatchCache<String>
    let restarts = Locked<[String]>([])
    let log = Locked<[String]>([])
    let events = Locked<[WatchEvent.Kind]>([])
    let requests = Locked(0)
    let syncedAtRestart = Locked<[Bool]>([])

    init(_ steps: [ScriptedTransport.Step], cache: WatchCache<String> = uidCache()) {
        transport = ScriptedTransport(steps)
        self.cache = cache
    }

    func run(pageSize: Int = 500, stopAfter: Int? = nil, shouldStop: (@Sendable () -> Bool)? = nil,
             minimumWatchNanoseconds: Int64 = 0) {
        let t = transport
        let limit = stopAfter ?? t.remainingSteps
        let stop: @Sendable () -> Bool = shouldStop ?? { t.completed >= limit }
        let client = K8s.client(t)
        cache.run(client: client, pageSize: pageSize, watchTimeoutSeconds: 30, logger: Logger(level: .error, toStderr: false),
                  shouldStop: stop,
                  onRestart: { [self] reason in
                      restarts.withLock { $0.append(reason) }
                      log.withLock { $0.append("restart:" + reason) }
                      syncedAtRestart.withLock { $0.append(cache.isSynced) }
                  },
                  onRequest: { [self] in requests.withLock { $0 += 1 } },
                  onEvent: { [self] kind in events.withLock { $0.append(kind) } },
                  minimumWatchNanoseconds: minimumWatchNanoseconds,
                  sleep: { [self] ms in log.withLock { $0.append("sleep:\(ms)") } })
    }

    /// The total sleep after each error restart.
    var backoffs: [Int] {
        var out: [Int] = []
        for entry in log.current {
            if entry == "restart:error" { out.append(0) }
            if entry.hasPrefix("sleep:"), !out.isEmpty { out[out.count - 1] += Int(entry.dropFirst(6)) ?? 0 }
        }
        return out
    }
}

@Suite struct WatchCacheRunTests {
    @Test func listsEveryPageThenWatchesAndResumes() {
        let r = Run([
            .respond(K8s.list(rv: "100", continueToken: "c/1=", items: [K8s.pod("a", uid: "ua"), #"{"metadata":{"uid":"x"}}"#])),
            .respond(K8s.list(rv: "100", continueToken: "", items: [K8s.pod("b", uid: "ub")])),
            .stream([String(K8s.event("ADDED", K8s.pod("c", uid: "uc", rv: "101")).prefix(20)),
                     String(K8s.event("ADDED", K8s.pod("c", uid: "uc", rv: "101")).dropFirst(20))
                         + K8s.event("MODIFIED", K8s.pod("a", uid: "ua2", rv: "102")) + K8s.bookmark("103")]),
            .stream([K8s.event("DELETED", K8s.pod("b", uid: "ub", rv: "104"))]),
        ])
        r.run(pageSize: 2)
        let paths = r.transport.paths
        #expect(paths.count == 4)
        #expect(paths[0] == "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=2")
        #expect(paths[1] == "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1&limit=2&continue=c%2F1%3D")
        // The watch starts at the list's resourceVersion, and resumes from the last one seen (the bookmark's).
        #expect(query(paths[2], "watch") == "1")
        #expect(query(paths[2], "resourceVersion") == "100")
        #expect(query(paths[2], "timeoutSeconds") == "30")
        #expect(query(paths[3], "resourceVersion") == "103")
        #expect(query(paths[2], "limit") == nil)

        #expect(r.cache.isSynced)
        #expect(r.cache.count == 2)
        #expect(r.cache.get(namespace: "ns1", name: "a") == "ua2")
        #expect(r.cache.get(namespace: "ns1", name: "b") == nil)
        #expect(r.cache.get(namespace: "ns1", name: "c") == "uc")
        #expect(r.cache.resourceVersion == "104")
        #expect(r.restarts.current == ["closed", "closed"])
        #expect(r.requests.current == 4)
        #expect(r.events.current == [.added, .modified, .bookmark, .deleted])
        #expect(r.backoffs.isEmpty)
    }

    @Test(arguments: [true, false])
    func expiredWatchListsAgain(asEvent: Bool) {
        let gone: ScriptedTransport.Step = asEvent
            ? .stream([K8s.errorEvent(410, "too old resource version")])
            : .respond(K8s.status(410, "Expired", "too old resource version"))
        let r = Run([
            .respond(K8s.list(rv: "10", items: [K8s.pod("a", uid: "ua")])),
            gone,
            .respond(K8s.list(rv: "20", items: [K8s.pod("b", uid: "ub")])),
            .stream([]),
        ])
        r.run()
        let paths = r.transport.paths
        #expect(query(paths[1], "resourceVersion") == "10")
        #expect(query(paths[2], "limit") == "500")
        #expect(query(paths[2], "watch") == nil)
        #expect(query(paths[3], "resourceVersion") == "20")
        #expect(r.restarts.current == ["expired", "closed"])
        #expect(r.cache.get(namespace: "ns1", name: "a") == nil)
        #expect(r.cache.get(namespace: "ns1", name: "b") == "ub")
        #expect(r.events.current.isEmpty)  // the ERROR event is not applied
        #expect(r.backoffs.isEmpty)
    }

    @Test func watchErrorsBackOffDoublingAndResumeWithoutListing() {
        let r = Run([
            .respond(K8s.list(rv: "1", items: [K8s.pod("a", uid: "ua")])),
            .fail(TransportError(.connection, "connection reset by peer")),
            .stream([K8s.errorEvent(500, "internal error")]),
            .stream([K8s.event("ADDED", K8s.pod("b", uid: "ub", rv: "2"))]),
        ])
        r.run()
        let paths = r.transport.paths
        #expect(paths.count == 4)
        #expect(paths[1...].allSatisfy { query($0, "watch") == "1" && query($0, "resourceVersion") == "1" })
        #expect(r.restarts.current == ["error", "error", "closed"])
        #expect(r.log.current.filter { $0.hasPrefix("sleep:") }.allSatisfy { $0 == "sleep:100" })
        let b = r.backoffs
        #expect(b.count == 2)
        // 0.5 s then 1 s, each with up to 25 % jitter, slept in 100 ms steps.
        if b.count == 2 {
            #expect((500...700).contains(b[0]))
            #expect((1000...1300).contains(b[1]))
        }
        #expect(r.cache.get(namespace: "ns1", name: "b") == "ub")
        #expect(r.cache.get(namespace: "ns1", name: "a") == "ua")
    }

    @Test func aWatchClosedAtOnceWithoutEventsBacksOff() {
        // A proxy that ends every watch at once: with the default minimum duration this is an error with backoff.
        let r = Run([
            .respond(K8s.list(rv: "1", items: [])),
            .stream([]),
            .stream([K8s.event("ADDED", K8s.pod("b", uid: "ub", rv: "2"))]),
        ])
        r.run(minimumWatchNanoseconds: 1_000_000_000)
        #expect(r.restarts.current == ["error", "closed"])
        #expect(r.backoffs.count == 1)
        #expect(r.cache.get(namespace: "ns1", name: "b") == "ub")
    }

    @Test func aFailedListIsRetriedAfterBackoff() {
        let r = Run([
            .respond(K8s.status(403, "Forbidden", "cannot list pods")),
            .respond(K8s.list(rv: "5", items: [K8s.pod("a", uid: "ua")])),
            .stream([]),
        ])
        r.run()
        let paths = r.transport.paths
        #expect(query(paths[0], "limit") == "500")
        #expect(query(paths[1], "limit") == "500")
        #expect(query(paths[2], "resourceVersion") == "5")
        #expect(r.restarts.current == ["error", "closed"])
        #expect(r.syncedAtRestart.current == [false, true])
        #expect(r.backoffs.count == 1)
        #expect(r.cache.get(namespace: "ns1", name: "a") == "ua")
    }

    @Test func shouldStopEndsTheRun() {
        // Before anything was sent.
        let idle = Run([])
        idle.run(shouldStop: { true })
        #expect(idle.transport.requests.isEmpty)
        #expect(!idle.cache.isSynced)

        // During a backoff wait: no further sleep, no further request.
        let r = Run([
            .respond(K8s.list(rv: "1", items: [])),
            .fail(TransportError(.connection, "refused")),
        ])
        let t = r.transport
        // Stop as soon as the first backoff sleep happened.
        r.run(shouldStop: { t.completed >= 2 && r.log.current.contains("sleep:100") })
        #expect(r.log.current.filter { $0.hasPrefix("sleep:") }.count == 1)
        #expect(r.transport.requests.count == 2)
        #expect(r.restarts.current == ["error"])

        // During a watch: the event that saw the stop is applied, the rest of the stream is not.
        let stop = Locked(false)
        let w = Run([
            .respond(K8s.list(rv: "1", items: [])),
            .stream([K8s.event("ADDED", K8s.pod("a", uid: "ua", rv: "2")) + K8s.event("ADDED", K8s.pod("b", uid: "ub", rv: "3"))]),
        ])
        let cache = w.cache
        w.run(shouldStop: {
            if cache.get(namespace: "ns1", name: "a") != nil { stop.withLock { $0 = true } }
            return stop.current
        })
        #expect(w.cache.get(namespace: "ns1", name: "a") == "ua")
        #expect(w.cache.get(namespace: "ns1", name: "b") == nil)
        #expect(w.transport.delivered.last?.stopped == true)
        #expect(w.restarts.current.isEmpty)
    }
}
