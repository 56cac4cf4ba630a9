#if canImport(Glibc)
import Glibc
#endif
import SystemKit

/// A minimal HTTP/1.1 server for `/metrics`, `/healthz` and `/readyz` on a loopback TCP port or a unix socket:
/// one request per connection, GET only, answered and closed.
public final class HTTPEndpoint: Sendable {
    public struct Response: Sendable {
        public var status: Int
        public var contentType: String
        public var body: [UInt8]
        public init(status: Int, contentType: String = "text/plain; charset=utf-8", body: String) {
            self.status = status
            self.contentType = contentType
            self.body = Array(body.utf8)
        }
    }
    public typealias Route = @Sendable (_ path: String) -> Response?

    let route: Route
    let logger: Logger

    public init(logger: Logger, route: @escaping Route) {
        self.logger = logger
        self.route = route
    }

    /// Where to listen: `127.0.0.1:9494`, `unix:/run/plexus/metrics.sock`.
    public enum Address: Equatable, Sendable {
        case tcp(host: String, port: UInt16)
        case unix(String)

        public init?(_ text: String) {
            if text.hasPrefix("unix:") {
                let p = String(text.dropFirst(5))
                guard p.hasPrefix("/") else { return nil }
                self = .unix(p)
                return
            }
            guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
            let host = String(text[..<colon])
            var a = in_addr()
            guard inet_pton(AF_INET, host, &a) == 1 else { return nil }   // a literal IPv4 address, as listen needs
            self = .tcp(host: host, port: port)
        }
    }

    final class Listener: @unchecked Sendable {
        let socket: StreamSocket
        init(_ s: consuming StreamSocket) { socket = s }
    }

    /// Binds and serves on a thread of its own. Returns the bound TCP port (for port 0), if TCP.
    @discardableResult
    public func start(_ address: Address) throws(SystemError) -> UInt16? {
        let s: StreamSocket
        switch address {
        case .tcp(let host, let port): s = try StreamSocket.listen(tcpHost: host, port: port)
        case .unix(let path):
            try FileSystem.makeDirectories(FileSystem.directoryName(of: path), mode: 0o700)
            s = try StreamSocket.listen(unixPath: path, mode: 0o600)
        }
        let port = s.localPort
        let l = Listener(s)
        Threads.detach { [self] in
            while true {
                guard let c = try? l.socket.accept(timeoutMilliseconds: 1000) else { continue }
                let box = Listener(c)
                Threads.detach { [self] in answer(box) }
            }
        }
        if case .tcp = address { return port }
        return nil
    }

    func answer(_ c: Listener) {
        let deadline = Clock.deadline(afterSeconds: 5)
        var head: [UInt8] = []
        while !head.ends(with: [13, 10, 13, 10]) && !head.ends(with: [10, 10]) {
            guard head.count < 8192, let more = try? c.socket.readSome(max: 2048, deadline: deadline), !more.isEmpty else { return }
            head += more
        }
        let line = head.split(separator: 10, maxSplits: 1).first.map { String(decoding: $0, as: UTF8.self) } ?? ""
        let parts = line.split(separator: " ")
        var response: Response
        if parts.count < 2 || (parts[0] != "GET" && parts[0] != "HEAD") {
            response = Response(status: 405, body: "only GET\n")
        } else {
            let target = String(parts[1])
            let path = String(target.split(separator: "?", maxSplits: 1).first ?? "")
            response = route(path) ?? Response(status: 404, body: "not found\n")
            if parts[0] == "HEAD" { response.body = [] }
        }
        let reason: String
        switch response.status {
        case 200: reason = "OK"
        case 404: reason = "Not Found"
        case 405: reason = "Method Not Allowed"
        default: reason = "Service Unavailable"
        }
        let header = "HTTP/1.1 \(response.status) \(reason)\r\nContent-Type: \(response.contentType)\r\nContent-Length: \(response.body.count)\r\nConnection: close\r\n\r\n"
        try? c.socket.write(Array(header.utf8) + response.body, deadline: deadline)
    }
}

extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}
