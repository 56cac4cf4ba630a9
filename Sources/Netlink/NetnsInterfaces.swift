internal import CNetlinkShim
import SystemKit

/// A failed netlink query, with libmnl's or the kernel's reason.
public struct NetlinkError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Facts about the links of a network namespace, read over rtnetlink with libmnl (loaded on first use).
public enum NetnsInterfaces {
    /// The names of every link in the namespace at `netnsPath` (`lo` included).
    public static func names(netnsPath: String) throws(NetlinkError) -> [String] {
        guard FileSystem.isCSafe(netnsPath) else { throw NetlinkError(message: "netns path holds a NUL byte") }
        var buf = [CChar](repeating: 0, count: 1 << 16)
        var err = [CChar](repeating: 0, count: 256)
        let n = px_nl_link_names(netnsPath, &buf, buf.count, &err, err.count)
        if n < 0 {
            throw NetlinkError(message: String(decoding: err.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        var names: [String] = []
        var current: [UInt8] = []
        for c in buf where names.count < Int(n) {
            if c == 0 {
                names.append(String(decoding: current, as: UTF8.self))
                current = []
            } else {
                current.append(UInt8(bitPattern: c))
            }
        }
        return names
    }
}
