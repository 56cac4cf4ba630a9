import CNISpec
import KubeClient
import Synchronization
import SystemKit

/// A list+watch cache of one kind of namespaced object, as client-go's reflector keeps one: list (in pages), then
/// watch from the list's resourceVersion with bookmarks; a watch the server ends is resumed from the last
/// resourceVersion seen, a 410 Gone lists again, and errors back off (0.5 s doubling to 30 s, with jitter).
/// Entries are whatever `decode` keeps of an object, so the cache holds only what ADDs read.
public final class WatchCache<Entry: Sendable>: Sendable {
    public let resource: String
    /// The collection path with its selector, e.g. `/api/v1/pods?fieldSelector=spec.nodeName%3Dnode1`.
    public let path: String
    let decode: @Sendable (JSON) -> Entry?

    struct State {
        var objects: [String: Entry] = [:]
        var resourceVersion = ""
        var synced = false
    }
    private let state = Mutex(State())

    public init(resource: String, path: String, decode: @escaping @Sendable (JSON) -> Entry?) {
        self.resource = resource
        self.path = path
        self.decode = decode
    }

    public func get(namespace: String, name: String) -> Entry? {
        state.withLock { $0.objects[namespace + "/" + name] }
    }

    public var count: Int { state.withLock { $0.objects.count } }
    public var isSynced: Bool { state.withLock { $0.synced } }
    public var resourceVersion: String { state.withLock { $0.resourceVersion } }

    static func key(_ object: JSON) -> String? {
        guard let name = object["metadata"]?["name"]?.stringValue else { return nil }
        return (object["metadata"]?["namespace"]?.stringValue ?? "") + "/" + name
    }

    /// Replaces the whole content with a complete list at `resourceVersion`.
    public func replace(items: [JSON], resourceVersion: String) {
        var objects: [String: Entry] = [:]
        objects.reserveCapacity(items.count)
        for item in items {
            if let k = Self.key(item), let e = decode(item) { objects[k] = e }
        }
        store(objects, resourceVersion: resourceVersion)
    }

    /// Applies one watch event (ERROR events are handled by the watch itself).
    public func apply(_ event: WatchEvent) {
        let rv = event.resourceVersion
        switch event.kind {
        case .added, .modified:
            guard let k = Self.key(event.object) else { return }
            let entry = decode(event.object)
            state.withLock {
                $0.objects[k] = entry
                if let rv { $0.resourceVersion = rv }
            }
        case .deleted:
            guard let k = Self.key(event.object) else { return }
            state.withLock {
                $0.objects[k] = nil
                if let rv { $0.resourceVersion = rv }
            }
        case .bookmark:
            if let rv { state.withLock { $0.resourceVersion = rv } }
        case .error:
            break
        }
    }

    /// Lists every page (`limit` objects each) into the cache. Each page is decoded as it arrives, so only one
    /// page of whole objects is held at a time.
    func list(_ client: KubeHTTPClient, pageSize: Int, onRequest: @Sendable () -> Void = {}) throws(KubeError) {
        var objects: [String: Entry] = [:]
        var token: String?
        var rv = ""
        repeat {
            client.setDeadline(Clock.deadline(afterSeconds: 60))
            onRequest()
            let page = try client.listPage(path, limit: pageSize, continueToken: token, operation: "list \(resource)")
            if rv.isEmpty { rv = page["metadata"]?["resourceVersion"]?.stringValue ?? "" }
            for item in page["items"]?.arrayValue ?? [] {
                if let k = Self.key(item), let e = decode(item) { objects[k] = e }
            }
            token = page["metadata"]?["continue"]?.stringValue.flatMap { $0.isEmpty ? nil : $0 }
        } while token != nil
        store(objects, resourceVersion: rv)
    }

    private func store(_ objects: [String: Entry], resourceVersion: String) {
        state.withLock {
            $0.objects = objects
            $0.resourceVersion = resourceVersion
            $0.synced = true
        }
    }

    /// Runs until `shouldStop`: list, watch, resume, relist, back off. A watch the server closes within
    /// `minimumWatchNanoseconds` without a single event counts as an error (backoff), so it cannot spin. `onRestart(reason)` is called for every new
    /// watch after the first (`closed` by the server, `expired` 410, `error`).
    public func run(client: KubeHTTPClient, pageSize: Int = 500, watchTimeoutSeconds: Int, logger: Logger,
                    shouldStop: @escaping @Sendable () -> Bool, onRestart: @escaping @Sendable (String) -> Void,
                    onRequest: @escaping @Sendable () -> Void = {}, onEvent: @escaping @Sendable (WatchEvent.Kind) -> Void = { _ in },
                    minimumWatchNanoseconds: Int64 = 1_000_000_000,
                    sleep: (Int) -> Void = { Clock.sleep(milliseconds: $0) }) {
        var needList = true
        var backoff = 500
        var jitter = JitterSource(seed: UInt64(truncatingIfNeeded: Clock.monotonicNanoseconds()))
        while !shouldStop() {
            do throws(KubeError) {
                if needList {
                    try list(client, pageSize: pageSize, onRequest: onRequest)
                    needList = false
                    logger.info("watch cache listed", [("resource", resource), ("objects", String(count)),
                                                       ("resourceVersion", resourceVersion)])
                }
                onRequest()
                let started = Clock.monotonicNanoseconds()
                var events = 0
                let end = try client.watch(path, resourceVersion: resourceVersion, timeoutSeconds: watchTimeoutSeconds,
                                           operation: "watch \(resource)") { [self] event in
                    apply(event)
                    onEvent(event.kind)
                    events += 1
                    return !shouldStop()
                }
                // A watch closed at once with nothing in it (a proxy ending every stream) must not spin: as client-go,
                // treat it as an error and back off.
                if end == .closed && events == 0 && Clock.monotonicNanoseconds() - started < minimumWatchNanoseconds {
                    throw KubeError(.invalidResponse, operation: "watch \(resource)", detail: "the watch ended at once without events")
                }
                backoff = 500
                switch end {
                case .stopped: return
                case .closed: onRestart("closed")
                case .expired:
                    logger.info("watch expired, listing again", [("resource", resource)])
                    onRestart("expired")
                    needList = true
                }
            } catch {
                logger.warning("watch failed, retrying", [("resource", resource), ("error", error.description),
                                                          ("backoffMs", String(backoff))])
                onRestart("error")
                let extra = Int(jitter.next() * Double(backoff / 4 + 1))   // up to 25 %
                var waited = 0
                while waited < backoff + extra && !shouldStop() {
                    sleep(100)
                    waited += 100
                }
                backoff = min(backoff * 2, 30_000)
            }
        }
    }
}
