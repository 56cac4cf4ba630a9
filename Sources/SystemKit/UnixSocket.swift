#if canImport(Glibc)
import Glibc
#endif
internal import CSystemShim

/// Stream sockets (unix and loopback TCP) with deadlines: what the node daemon serves on and the thin plugin
/// connects with. Every blocking step waits with `poll` until an absolute monotonic deadline, so no peer can hang
/// a caller. Descriptors are close-on-exec: delegates never inherit them.
public struct StreamSocket: ~Copyable {
    public let fd: Int32

    public init(adopting fd: Int32) { self.fd = fd }

    deinit { close(fd) }

    /// Fills a `sockaddr_un` for `path`; paths over 107 bytes or with NUL cannot be unix socket addresses.
    static func address(_ path: String) throws(SystemError) -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: addr.sun_path)
        guard !bytes.isEmpty, bytes.count < capacity, !bytes.contains(0) else {
            throw SystemError("unix socket address", path: path, errno: ENAMETOOLONG)
        }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            raw[bytes.count] = 0
        }
        return addr
    }

    /// Connects to the unix socket at `path` within `timeoutMilliseconds`. ENOENT/ECONNREFUSED mean nobody serves.
    public static func connect(unixPath path: String, timeoutMilliseconds: Int) throws(SystemError) -> StreamSocket {
        var addr = try address(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        if fd < 0 { throw SystemError.last("socket") }
        let s = StreamSocket(adopting: fd)
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if rc != 0 {
            let e = px_errno()
            // A unix socket whose listen backlog is full answers EAGAIN at once: the caller treats it as "not answering".
            guard e == EINPROGRESS else { throw SystemError("connect", path: path, errno: e) }
            let deadline = Clock.monotonicNanoseconds() + Int64(timeoutMilliseconds) * 1_000_000
            try s.wait(for: Int16(POLLOUT), deadline: deadline, what: "connect")
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 { throw SystemError("connect", path: path, errno: err) }
        }
        return s
    }

    /// Binds and listens on the unix socket `path` (a stale socket file there is replaced) with mode `mode`, set
    /// before `listen`, so there is no moment when others could connect.
    public static func listen(unixPath path: String, mode: UInt32 = 0o600, backlog: Int32 = 128) throws(SystemError) -> StreamSocket {
        var addr = try address(path)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError.last("socket") }
        let s = StreamSocket(adopting: fd)
        var st = stat()
        if lstat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFSOCK else { throw SystemError("bind (not a socket)", path: path, errno: EEXIST) }
            unlink(path)
        }
        // No umask change (it is process-wide: other threads' files would lose permissions): nobody can connect
        // before listen(), and the mode is set before that.
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if rc != 0 { throw SystemError.last("bind", path: path) }
        if chmod(path, mode_t(mode)) != 0 { throw SystemError.last("chmod", path: path) }
        if Glibc.listen(fd, backlog) != 0 { throw SystemError.last("listen", path: path) }
        return s
    }

    /// Listens on `127.0.0.1:port` (or another IPv4 literal); port 0 picks a free one (see `localPort`).
    public static func listen(tcpHost host: String, port: UInt16, backlog: Int32 = 64) throws(SystemError) -> StreamSocket {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError.last("socket") }
        let s = StreamSocket(adopting: fd)
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &addr.sin_addr) == 1 else {
            throw SystemError("listen (not an IPv4 address)", path: host, errno: EINVAL)
        }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if rc != 0 { throw SystemError.last("bind", path: "\(host):\(port)") }
        if Glibc.listen(fd, backlog) != 0 { throw SystemError.last("listen", path: "\(host):\(port)") }
        return s
    }

    /// The bound TCP port (for `port: 0`).
    public var localPort: UInt16? {
        var addr = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return rc == 0 ? UInt16(bigEndian: addr.sin_port) : nil
    }

    /// Accepts one connection, waiting at most `timeoutMilliseconds` (nil when none arrived).
    public func accept(timeoutMilliseconds: Int32) throws(SystemError) -> StreamSocket? {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let n = retryingEINTR { poll(&p, 1, timeoutMilliseconds) }
        if n < 0 { throw SystemError.last("poll") }
        if n == 0 { return nil }
        let c = retryingEINTR { Glibc.accept(fd, nil, nil) }
        if c < 0 {
            let e = px_errno()
            if e == EAGAIN || e == ECONNABORTED || e == EMFILE || e == ENFILE { return nil }
            throw SystemError("accept", errno: e)
        }
        _ = fcntl(c, F_SETFD, FD_CLOEXEC)
        return StreamSocket(adopting: c)
    }

    func wait(for events: Int16, deadline: Int64, what: String) throws(SystemError) {
        while true {
            let left = deadline - Clock.monotonicNanoseconds()
            if left <= 0 { throw SystemError(what, errno: ETIMEDOUT) }
            var p = pollfd(fd: fd, events: events, revents: 0)
            let ms = Int32(clamping: max(1, (left + 999_999) / 1_000_000))
            let n = poll(&p, 1, ms)
            if n < 0 {
                if px_errno() == EINTR { continue }
                throw SystemError.last(what)
            }
            if n > 0 { return }
        }
    }

    /// Writes all of `bytes` before `deadline`.
    public func write(_ bytes: [UInt8], deadline: Int64) throws(SystemError) {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                send(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_NOSIGNAL) | Int32(MSG_DONTWAIT))
            }
            if n > 0 { off += n; continue }
            let e = px_errno()
            if n < 0 && (e == EAGAIN || e == EINTR) {
                try wait(for: Int16(POLLOUT), deadline: deadline, what: "send")
                continue
            }
            throw SystemError("send", errno: n == 0 ? EPIPE : e)
        }
    }

    /// Reads exactly `count` bytes before `deadline`; a peer that closes first is EPIPE (`partial` tells how many).
    public func read(exactly count: Int, deadline: Int64) throws(SystemError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        var off = 0
        while off < count {
            let n = out.withUnsafeMutableBytes { raw in recv(fd, raw.baseAddress! + off, raw.count - off, Int32(MSG_DONTWAIT)) }
            if n > 0 { off += n; continue }
            if n == 0 { throw SystemError("recv (peer closed)", errno: EPIPE) }
            let e = px_errno()
            if e == EAGAIN || e == EINTR {
                try wait(for: Int16(POLLIN), deadline: deadline, what: "recv")
                continue
            }
            throw SystemError("recv", errno: e)
        }
        return out
    }

    /// Reads what is available (up to `max` bytes) before `deadline`; empty when the peer closed.
    public func readSome(max: Int, deadline: Int64) throws(SystemError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: max)
        while true {
            let n = out.withUnsafeMutableBytes { raw in recv(fd, raw.baseAddress!, raw.count, Int32(MSG_DONTWAIT)) }
            if n >= 0 { return Array(out.prefix(n)) }
            let e = px_errno()
            if e == EAGAIN || e == EINTR {
                try wait(for: Int16(POLLIN), deadline: deadline, what: "recv")
                continue
            }
            throw SystemError("recv", errno: e)
        }
    }

    /// Half-closes the sending side (the peer reads EOF).
    public func shutdownWrite() { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }
}
