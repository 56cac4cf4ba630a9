internal import CNetlinkShim

/// One netlink datagram socket. The real one is `MnlSocket`; tests replay recorded kernel answers through a fake.
public protocol NetlinkSocket: AnyObject {
    /// The port id the kernel addresses replies to.
    var portID: UInt32 { get }
    func send(_ datagram: [UInt8]) throws(NetlinkError)
    /// One datagram; throws with EAGAIN when the socket's timeout passed.
    func receive() throws(NetlinkError) -> [UInt8]
}

/// A NETLINK_ROUTE socket over libmnl (dlopen()ed on first use), opened inside a network namespace by a dedicated
/// thread, so no thread of this process ever runs in the pod's namespace (see `px_nl_open`). Not thread-safe.
public final class MnlSocket: NetlinkSocket {
    private let handle: OpaquePointer
    public let portID: UInt32
    private var buffer = [UInt8](repeating: 0, count: 1 << 16)

    /// Opens the socket in the namespace at `netnsPath` (nil: this process' own). Each receive waits at most
    /// `timeoutMilliseconds`. `enteringOnThisThread`: see `px_nl_open_on_this_thread`.
    public init(netnsPath: String?, timeoutMilliseconds: Int, enteringOnThisThread: Bool = false) throws(NetlinkError) {
        if let p = netnsPath, p.utf8.contains(0) {
            throw NetlinkError(operation: "open netlink socket", detail: "netns path holds a NUL byte")
        }
        var err = [CChar](repeating: 0, count: 256)
        var errNo: Int32 = 0
        let timeout = Int32(clamping: max(1, timeoutMilliseconds))
        let open = enteringOnThisThread ? px_nl_open_on_this_thread : px_nl_open
        let h: OpaquePointer? = netnsPath.map { open($0, timeout, &err, err.count, &errNo) } ?? open(nil, timeout, &err, err.count, &errNo)
        guard let h else {
            let text = String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw NetlinkError(operation: "open netlink socket", errno: errNo == 0 ? nil : errNo,
                               detail: errNo == 0 ? text : text.split(separator: ":").first.map(String.init))
        }
        handle = h
        portID = px_nl_portid(h)
    }

    deinit { px_nl_close(handle) }

    public func send(_ datagram: [UInt8]) throws(NetlinkError) {
        let r = datagram.withUnsafeBytes { px_nl_send(handle, $0.baseAddress, $0.count) }
        if r < 0 { throw NetlinkError(operation: "netlink send", errno: Int32(clamping: -r)) }
    }

    public func receive() throws(NetlinkError) -> [UInt8] {
        let count = buffer.count
        let r = buffer.withUnsafeMutableBytes { px_nl_recv(handle, $0.baseAddress, count) }
        if r < 0 { throw NetlinkError(operation: "netlink receive", errno: Int32(clamping: -r)) }
        return Array(buffer[0..<Int(r)])
    }
}

@available(*, unavailable)
extension MnlSocket: Sendable {}
