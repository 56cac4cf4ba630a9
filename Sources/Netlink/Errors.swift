#if canImport(Glibc)
import Glibc
#endif

/// A failed netlink operation: the operation, the errno (from a syscall or the kernel's NLMSG_ERROR) and the
/// kernel's extended-ack message when it sent one ("Nexthop has invalid gateway").
public struct NetlinkError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    /// The positive errno, or nil for a protocol violation (a reply that does not parse).
    public var errno: Int32?
    public var kernelMessage: String?
    /// Free text for protocol violations and set-up failures.
    public var detail: String?

    public init(operation: String, errno: Int32? = nil, kernelMessage: String? = nil, detail: String? = nil) {
        self.operation = operation
        self.errno = errno
        self.kernelMessage = kernelMessage
        self.detail = detail
    }

    public var description: String {
        var s = operation
        if let errno { s += ": " + NetlinkError.text(of: errno) }
        if let kernelMessage, !kernelMessage.isEmpty { s += " (\(kernelMessage))" }
        if let detail, !detail.isEmpty { s += ": " + detail }
        return s
    }

    static func text(of errno: Int32) -> String {
        guard let p = strerror(errno) else { return "errno \(errno)" }
        return String(cString: p)
    }
}
