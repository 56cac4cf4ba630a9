// Netlink wire format (linux/netlink.h, linux/rtnetlink.h): a 16-byte header, a fixed family struct, then
// attributes (TLVs), everything 4-byte aligned and in host byte order. Only what Plexus sends and reads.

/// Constants of the netlink and rtnetlink ABI, with their kernel names.
public enum NL {
    // Message types
    public static let NLMSG_NOOP: UInt16 = 1
    public static let NLMSG_ERROR: UInt16 = 2
    public static let NLMSG_DONE: UInt16 = 3
    public static let NLMSG_OVERRUN: UInt16 = 4
    public static let RTM_NEWLINK: UInt16 = 16
    public static let RTM_GETLINK: UInt16 = 18
    public static let RTM_NEWADDR: UInt16 = 20
    public static let RTM_GETADDR: UInt16 = 22
    public static let RTM_NEWROUTE: UInt16 = 24
    public static let RTM_DELROUTE: UInt16 = 25
    public static let RTM_GETROUTE: UInt16 = 26

    // Header flags
    public static let NLM_F_REQUEST: UInt16 = 0x1
    public static let NLM_F_MULTI: UInt16 = 0x2
    public static let NLM_F_ACK: UInt16 = 0x4
    public static let NLM_F_DUMP_INTR: UInt16 = 0x10
    public static let NLM_F_DUMP: UInt16 = 0x300
    public static let NLM_F_REPLACE: UInt16 = 0x100
    public static let NLM_F_EXCL: UInt16 = 0x200
    public static let NLM_F_CREATE: UInt16 = 0x400
    /// On NLMSG_ERROR: the echoed request is only its header / extended-ack TLVs follow.
    public static let NLM_F_CAPPED: UInt16 = 0x100
    public static let NLM_F_ACK_TLVS: UInt16 = 0x200
    public static let NLMSGERR_ATTR_MSG: UInt16 = 1

    // Address families
    public static let AF_UNSPEC: UInt8 = 0
    public static let AF_INET: UInt8 = 2
    public static let AF_INET6: UInt8 = 10

    // Link attributes
    public static let IFLA_ADDRESS: UInt16 = 1
    public static let IFLA_IFNAME: UInt16 = 3
    public static let IFLA_MTU: UInt16 = 4

    // Address attributes and scopes
    public static let IFA_ADDRESS: UInt16 = 1
    public static let IFA_LOCAL: UInt16 = 2
    public static let RT_SCOPE_UNIVERSE: UInt8 = 0
    public static let RT_SCOPE_LINK: UInt8 = 253
    public static let RT_SCOPE_HOST: UInt8 = 254
    public static let RT_SCOPE_NOWHERE: UInt8 = 255

    // Route attributes and values
    public static let RTA_DST: UInt16 = 1
    public static let RTA_OIF: UInt16 = 4
    public static let RTA_GATEWAY: UInt16 = 5
    public static let RTA_PRIORITY: UInt16 = 6
    public static let RTA_MULTIPATH: UInt16 = 9
    public static let RTA_TABLE: UInt16 = 15
    public static let RT_TABLE_MAIN: UInt32 = 254
    public static let RTN_UNICAST: UInt8 = 1
    public static let RTPROT_STATIC: UInt8 = 4

    /// Attribute type bits that are flags, not part of the type.
    static let NLA_TYPE_MASK: UInt16 = 0x3FFF
}

/// Little helpers over host-order integers in byte arrays.
enum Bytes {
    static func append<T: FixedWidthInteger>(_ v: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: v) { out.append(contentsOf: $0) }
    }

    static func read<T: FixedWidthInteger>(_: T.Type, _ b: ArraySlice<UInt8>, at offset: Int) -> T? {
        let start = b.startIndex + offset
        guard offset >= 0, start + MemoryLayout<T>.size <= b.endIndex else { return nil }
        var v: T = 0
        withUnsafeMutableBytes(of: &v) { dst in
            for i in 0..<MemoryLayout<T>.size { dst[i] = b[start + i] }
        }
        return v
    }

    static func align4(_ n: Int) -> Int { (n + 3) & ~3 }
}

/// One attribute: type (flag bits stripped) and payload.
public struct NetlinkAttribute: Sendable, Equatable {
    public var type: UInt16
    public var payload: [UInt8]

    public init(type: UInt16, payload: [UInt8]) {
        self.type = type
        self.payload = payload
    }

    public static func u32(_ type: UInt16, _ v: UInt32) -> NetlinkAttribute {
        var p: [UInt8] = []
        Bytes.append(v, to: &p)
        return NetlinkAttribute(type: type, payload: p)
    }

    public var u32: UInt32? { Bytes.read(UInt32.self, payload[...], at: 0) }

    /// A NUL-terminated string payload, without the NUL.
    public var string: String { String(decoding: payload.prefix { $0 != 0 }, as: UTF8.self) }

    func encode(into out: inout [UInt8]) {
        Bytes.append(UInt16(4 + payload.count), to: &out)
        Bytes.append(type, to: &out)
        out.append(contentsOf: payload)
        out.append(contentsOf: [UInt8](repeating: 0, count: Bytes.align4(payload.count) - payload.count))
    }

    /// Parses a run of attributes; a length that overruns the run or is below the header is a protocol error.
    static func parseAll(_ b: ArraySlice<UInt8>) throws(NetlinkError) -> [NetlinkAttribute] {
        var out: [NetlinkAttribute] = []
        var off = 0
        while off + 4 <= b.count {
            guard let len = Bytes.read(UInt16.self, b, at: off), let type = Bytes.read(UInt16.self, b, at: off + 2) else { break }
            guard len >= 4, off + Int(len) <= b.count else {
                throw NetlinkError(operation: "parse netlink attribute", detail: "length \(len) at offset \(off) overruns \(b.count) bytes")
            }
            let start = b.startIndex + off + 4
            out.append(NetlinkAttribute(type: type & NL.NLA_TYPE_MASK, payload: Array(b[start..<(start + Int(len) - 4)])))
            off += Bytes.align4(Int(len))
        }
        return out
    }
}

/// One netlink message: header fields and the payload after the 16-byte header.
public struct NetlinkMessage: Sendable, Equatable {
    public var type: UInt16
    public var flags: UInt16
    public var seq: UInt32
    public var pid: UInt32
    public var payload: [UInt8]

    public init(type: UInt16, flags: UInt16, seq: UInt32, pid: UInt32 = 0, payload: [UInt8]) {
        self.type = type
        self.flags = flags
        self.seq = seq
        self.pid = pid
        self.payload = payload
    }

    /// A request: header, the family struct `fixed` (already padded to 4 bytes) and attributes.
    public init(type: UInt16, flags: UInt16, seq: UInt32, fixed: [UInt8], attributes: [NetlinkAttribute] = []) {
        var p = fixed
        for a in attributes { a.encode(into: &p) }
        self.init(type: type, flags: flags, seq: seq, payload: p)
    }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        Bytes.append(UInt32(16 + payload.count), to: &out)
        Bytes.append(type, to: &out)
        Bytes.append(flags, to: &out)
        Bytes.append(seq, to: &out)
        Bytes.append(pid, to: &out)
        out.append(contentsOf: payload)
        return out
    }

    /// Splits one received datagram into messages. A header whose length is below 16 or overruns the datagram is a
    /// protocol error (never a trap).
    public static func parse(datagram b: [UInt8]) throws(NetlinkError) -> [NetlinkMessage] {
        var out: [NetlinkMessage] = []
        var off = 0
        let s = b[...]
        while off + 16 <= b.count {
            guard let len = Bytes.read(UInt32.self, s, at: off), let type = Bytes.read(UInt16.self, s, at: off + 4),
                  let flags = Bytes.read(UInt16.self, s, at: off + 6), let seq = Bytes.read(UInt32.self, s, at: off + 8),
                  let pid = Bytes.read(UInt32.self, s, at: off + 12)
            else { break }
            guard len >= 16, UInt64(off) + UInt64(len) <= UInt64(b.count) else {
                throw NetlinkError(operation: "parse netlink message", detail: "length \(len) at offset \(off) overruns \(b.count) bytes")
            }
            out.append(NetlinkMessage(type: type, flags: flags, seq: seq, pid: pid, payload: Array(b[(off + 16)..<(off + Int(len))])))
            off += Bytes.align4(Int(len))
        }
        return out
    }

    /// For NLMSG_ERROR: the (positive) errno, 0 for an ACK, and the kernel's extended-ack message if any.
    public func errorCode() throws(NetlinkError) -> (errno: Int32, message: String?) {
        guard let e = Bytes.read(Int32.self, payload[...], at: 0) else {
            throw NetlinkError(operation: "parse netlink error", detail: "\(payload.count)-byte NLMSG_ERROR payload")
        }
        var message: String?
        if flags & NL.NLM_F_ACK_TLVS != 0, let echoedLength = Bytes.read(UInt32.self, payload[...], at: 4) {
            // The echoed request: its header only when capped, else all of it.
            let echoed = flags & NL.NLM_F_CAPPED != 0 ? 16 : Bytes.align4(Int(echoedLength))
            let start = 4 + echoed
            if start <= payload.count, let attrs = try? NetlinkAttribute.parseAll(payload[start...]) {
                message = attrs.first { $0.type == NL.NLMSGERR_ATTR_MSG }?.string
            }
        }
        return (e == Int32.min ? Int32.max : -e, message)
    }
}
