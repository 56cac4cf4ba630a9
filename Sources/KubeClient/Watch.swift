import CNISpec
import SystemKit

/// One event of a watch stream (`metav1.WatchEvent`: `{"type":…,"object":…}`, one JSON document per line).
public struct WatchEvent: Sendable {
    public enum Kind: String, Sendable {
        case added = "ADDED", modified = "MODIFIED", deleted = "DELETED", bookmark = "BOOKMARK", error = "ERROR"
    }
    public var kind: Kind
    public var object: JSON

    /// The `resourceVersion` of the event's object (a bookmark carries only that).
    public var resourceVersion: String? { object["metadata"]?["resourceVersion"]?.stringValue }
}

/// How a watch ended.
public enum WatchEnd: Sendable, Equatable {
    /// The server closed the stream normally (its `timeoutSeconds`): watch again from the last resourceVersion.
    case closed
    /// `onEvent` asked to stop.
    case stopped
    /// The resourceVersion is too old (410 Gone, as the response or as an ERROR event): list again.
    case expired
}

/// Splits a byte stream into lines and decodes each as a `WatchEvent`.
public struct WatchEventDecoder {
    private var pending: [UInt8] = []
    /// Longest line accepted (a single object); a longer one is a protocol error.
    public var maxLine = 16 << 20

    public init() {}

    public enum DecodeError: Error, Equatable { case lineTooLong, notAnEvent(String) }

    /// Feeds bytes; returns the complete events they finish.
    public mutating func feed(_ bytes: [UInt8]) throws(DecodeError) -> [WatchEvent] {
        pending += bytes
        var events: [WatchEvent] = []
        var start = 0
        while let nl = pending[start...].firstIndex(of: 0x0A) {
            if nl - start > maxLine { throw .lineTooLong }
            let line = Array(pending[start..<nl])
            start = nl + 1
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x0D || $0 == 0x09 }) { continue }
            events.append(try Self.decode(line))
        }
        pending.removeFirst(start)
        if pending.count > maxLine { throw .lineTooLong }
        return events
    }

    static func decode(_ line: [UInt8]) throws(DecodeError) -> WatchEvent {
        guard let json = try? JSON.parse(line), let type = json["type"]?.stringValue, let kind = WatchEvent.Kind(rawValue: type),
              let object = json["object"], object.objectValue != nil else {
            throw .notAnEvent(KubeStatus.excerpt(line))
        }
        return WatchEvent(kind: kind, object: object)
    }
}

extension KubeHTTPClient {
    /// One page of a list: `GET path?limit=…&continue=…`. Returns the list object (`items`, `metadata.continue`,
    /// `metadata.resourceVersion`).
    public func listPage(_ path: String, limit: Int, continueToken: String?, operation op: String) throws(KubeError) -> JSON {
        var p = path + (path.contains("?") ? "&" : "?") + "limit=\(limit)"
        if let continueToken, !continueToken.isEmpty { p += "&continue=" + KubePaths.escape(continueToken) }
        return try request(op, method: "GET", path: p, expectKind: nil)
    }

    /// A watch: `GET path?watch=1&resourceVersion=…&allowWatchBookmarks=true&timeoutSeconds=…`, each event handed
    /// to `onEvent` as it arrives (false stops). A 410 answer or a 410 ERROR event is `.expired`; other ERROR
    /// events and non-2xx answers throw. The token is sent as for any request; a 401 re-reads the token file once.
    public func watch(_ path: String, resourceVersion: String, timeoutSeconds: Int, operation op: String,
                      onEvent: @escaping (WatchEvent) -> Bool) throws(KubeError) -> WatchEnd {
        guard let streaming = transport as? any StreamingHTTPTransport else {
            throw KubeError(.config, operation: op, detail: "the transport cannot stream")
        }
        var p = path + (path.contains("?") ? "&" : "?") + "watch=1&allowWatchBookmarks=true&timeoutSeconds=\(timeoutSeconds)"
        if !resourceVersion.isEmpty { p += "&resourceVersion=" + KubePaths.escape(resourceVersion) }
        var retriedToken = false
        while true {
            var headers = [HTTPHeader("Accept", "application/json")]
            if let token = try bearerToken(op) { headers.append(HTTPHeader("Authorization", "Bearer " + token)) }
            // The server ends the stream after timeoutSeconds; allow a minute more before calling it dead.
            let req = HTTPRequest(method: "GET", path: p, headers: headers,
                                  connectTimeoutNanoseconds: retryPolicy.connectTimeoutNanoseconds,
                                  timeoutNanoseconds: Int64(timeoutSeconds + 60) * 1_000_000_000)
            countRequest()
            var decoder = WatchEventDecoder()
            var outcome: WatchEnd = .closed
            var failure: KubeError?
            let response: HTTPResponse
            do throws(TransportError) {
                response = try streaming.stream(req) { bytes in
                    let events: [WatchEvent]
                    do throws(WatchEventDecoder.DecodeError) { events = try decoder.feed(bytes) } catch {
                        failure = KubeError(.invalidResponse, operation: op, detail: "watch stream: \(error)")
                        return false
                    }
                    for e in events {
                        if e.kind == .error {
                            let code = e.object["code"]?.intValue ?? 0
                            if code == 410 { outcome = .expired } else {
                                failure = KubeError(.invalidResponse, operation: op, httpCode: code,
                                                    detail: "watch ERROR event: \(e.object["message"]?.stringValue ?? "")")
                            }
                            return false
                        }
                        if !onEvent(e) { outcome = .stopped; return false }
                    }
                    return true
                }
            } catch {
                throw KubeError(error.kind == .timeout ? .timeout : .unreachable, operation: op,
                                detail: "\(config.server): \(error.message)", attempts: 1)
            }
            if let failure { throw failure }
            if response.status == 410 { return .expired }
            if response.status == 401 && !retriedToken && config.tokenFile != nil {
                retriedToken = true
                invalidateToken()
                continue
            }
            if !(200..<300).contains(response.status) {
                throw KubeError.fromResponse(response, operation: op, attempts: 1)
            }
            return outcome
        }
    }
}
