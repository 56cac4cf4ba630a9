// rtnetlink objects Plexus reads and writes: links, addresses and routes, with their request builders and reply
// parsers. Pure functions over bytes; `NetlinkSession` does the I/O.

/// A link (RTM_NEWLINK).
public struct Link: Sendable, Equatable {
    public var index: Int32
    public var name: String
    /// IFLA_ADDRESS: the hardware address (6 bytes for Ethernet), empty when the link has none.
    public var hardwareAddress: [UInt8]
    public var mtu: UInt32?
    public var flags: UInt32

    public init(index: Int32, name: String, hardwareAddress: [UInt8] = [], mtu: UInt32? = nil, flags: UInt32 = 0) {
        self.index = index
        self.name = name
        self.hardwareAddress = hardwareAddress
        self.mtu = mtu
        self.flags = flags
    }
}

/// An interface address (RTM_NEWADDR).
public struct Address: Sendable, Equatable {
    public var index: Int32
    public var family: UInt8
    /// 4 or 16 bytes: IFA_LOCAL for IPv4 (the local end, also on point-to-point links), IFA_ADDRESS otherwise.
    public var address: [UInt8]
    public var prefixLength: UInt8
    public var scope: UInt8

    public init(index: Int32, family: UInt8, address: [UInt8], prefixLength: UInt8, scope: UInt8 = NL.RT_SCOPE_UNIVERSE) {
        self.index = index
        self.family = family
        self.address = address
        self.prefixLength = prefixLength
        self.scope = scope
    }
}

/// A route (RTM_NEWROUTE), with the fields the default-route handling needs.
public struct Route: Sendable, Equatable {
    public var family: UInt8
    public var destinationLength: UInt8
    public var destination: [UInt8]
    public var tos: UInt8
    public var table: UInt32
    public var protocolID: UInt8
    public var scope: UInt8
    public var type: UInt8
    public var outputInterface: Int32?
    public var gateway: [UInt8]?
    /// RTA_PREFSRC: the source address the route prefers (policy routing sets it on a table's subnet route).
    public var preferredSource: [UInt8]?
    public var priority: UInt32?
    /// RTA_MULTIPATH next hops (interface, gateway); empty for a single-path route.
    public var nextHops: [(interface: Int32, gateway: [UInt8]?)]

    public init(family: UInt8, destinationLength: UInt8 = 0, destination: [UInt8] = [], tos: UInt8 = 0,
                table: UInt32 = NL.RT_TABLE_MAIN, protocolID: UInt8 = NL.RTPROT_STATIC, scope: UInt8 = NL.RT_SCOPE_UNIVERSE,
                type: UInt8 = NL.RTN_UNICAST, outputInterface: Int32? = nil, gateway: [UInt8]? = nil,
                preferredSource: [UInt8]? = nil, priority: UInt32? = nil,
                nextHops: [(interface: Int32, gateway: [UInt8]?)] = []) {
        self.preferredSource = preferredSource
        self.family = family
        self.destinationLength = destinationLength
        self.destination = destination
        self.tos = tos
        self.table = table
        self.protocolID = protocolID
        self.scope = scope
        self.type = type
        self.outputInterface = outputInterface
        self.gateway = gateway
        self.priority = priority
        self.nextHops = nextHops
    }

    /// Whether the route has RTA_MULTIPATH next hops (then `outputInterface`/`gateway` say nothing).
    public var isMultipath: Bool { !nextHops.isEmpty }

    /// A main-table unicast default route (what "the pod's default route" means).
    public var isMainDefault: Bool { destinationLength == 0 && table == NL.RT_TABLE_MAIN && type == NL.RTN_UNICAST }

    /// Whether the route leaves through `index` (its own interface or one of its next hops).
    public func uses(interface index: Int32) -> Bool {
        outputInterface == index || nextHops.contains { $0.interface == index }
    }

    public static func == (a: Route, b: Route) -> Bool {
        a.family == b.family && a.destinationLength == b.destinationLength && a.destination == b.destination
            && a.tos == b.tos && a.table == b.table && a.protocolID == b.protocolID && a.scope == b.scope
            && a.type == b.type && a.outputInterface == b.outputInterface && a.gateway == b.gateway
            && a.preferredSource == b.preferredSource && a.priority == b.priority && a.nextHops.map(\.interface) == b.nextHops.map(\.interface)
            && a.nextHops.map(\.gateway) == b.nextHops.map(\.gateway)
    }
}

/// Request builders. `seq` is the caller's sequence number.
public enum RouteMessages {
    static func family(ofAddress a: [UInt8]) -> UInt8 { a.count == 4 ? NL.AF_INET : NL.AF_INET6 }

    /// RTM_GETLINK dump of every link.
    public static func dumpLinks(seq: UInt32) -> NetlinkMessage {
        // struct ifinfomsg (16 B): family, pad, type, index, flags, change: all zero.
        NetlinkMessage(type: NL.RTM_GETLINK, flags: NL.NLM_F_REQUEST | NL.NLM_F_DUMP, seq: seq,
                       fixed: [UInt8](repeating: 0, count: 16))
    }

    /// RTM_GETADDR dump of every address of `family` (AF_UNSPEC for both).
    public static func dumpAddresses(family: UInt8, seq: UInt32) -> NetlinkMessage {
        // struct ifaddrmsg (8 B): family, prefixlen, flags, scope, index.
        NetlinkMessage(type: NL.RTM_GETADDR, flags: NL.NLM_F_REQUEST | NL.NLM_F_DUMP, seq: seq,
                       fixed: [family, 0, 0, 0, 0, 0, 0, 0])
    }

    /// RTM_GETROUTE dump of every route of `family` (all tables; callers filter).
    public static func dumpRoutes(family: UInt8, seq: UInt32) -> NetlinkMessage {
        NetlinkMessage(type: NL.RTM_GETROUTE, flags: NL.NLM_F_REQUEST | NL.NLM_F_DUMP, seq: seq,
                       fixed: [family, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    }

    static func rtmsg(_ r: Route) -> [UInt8] {
        // struct rtmsg (12 B): family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
        [r.family, r.destinationLength, 0, r.tos, UInt8(truncatingIfNeeded: min(r.table, 255)), r.protocolID, r.scope, r.type,
         0, 0, 0, 0]
    }

    /// RTM_NEWROUTE with CREATE|REPLACE: the main-table default route of the gateway's family via `gateway` out of
    /// `interface`. REPLACE swaps a default route of the same priority atomically (the pod never lacks one).
    public static func replaceDefault(gateway: [UInt8], interface: Int32, seq: UInt32) -> NetlinkMessage {
        let r = Route(family: family(ofAddress: gateway), outputInterface: interface, gateway: gateway)
        return NetlinkMessage(type: NL.RTM_NEWROUTE,
                              flags: NL.NLM_F_REQUEST | NL.NLM_F_ACK | NL.NLM_F_CREATE | NL.NLM_F_REPLACE, seq: seq,
                              fixed: rtmsg(r),
                              attributes: [NetlinkAttribute(type: NL.RTA_GATEWAY, payload: gateway),
                                           .u32(NL.RTA_OIF, UInt32(bitPattern: interface))])
    }

    /// RTM_DELROUTE of exactly `route` as it was dumped (any scope; its table, priority, interface and gateway).
    public static func delete(_ route: Route, seq: UInt32) -> NetlinkMessage {
        var r = route
        r.scope = NL.RT_SCOPE_NOWHERE
        var attrs: [NetlinkAttribute] = []
        if route.destinationLength > 0 { attrs.append(NetlinkAttribute(type: NL.RTA_DST, payload: route.destination)) }
        if route.table > 255 { attrs.append(.u32(NL.RTA_TABLE, route.table)) }
        if let p = route.priority { attrs.append(.u32(NL.RTA_PRIORITY, p)) }
        if let o = route.outputInterface { attrs.append(.u32(NL.RTA_OIF, UInt32(bitPattern: o))) }
        if let g = route.gateway { attrs.append(NetlinkAttribute(type: NL.RTA_GATEWAY, payload: g)) }
        return NetlinkMessage(type: NL.RTM_DELROUTE, flags: NL.NLM_F_REQUEST | NL.NLM_F_ACK, seq: seq,
                              fixed: rtmsg(r), attributes: attrs)
    }
}

/// Reply parsers; a message that is too short or whose attributes overrun is a protocol error.
public enum RouteReplies {
    static func short(_ what: String, _ m: NetlinkMessage) -> NetlinkError {
        NetlinkError(operation: "parse \(what)", detail: "\(m.payload.count)-byte payload")
    }

    public static func link(_ m: NetlinkMessage) throws(NetlinkError) -> Link? {
        guard m.type == NL.RTM_NEWLINK else { return nil }
        let p = m.payload[...]
        guard let index = Bytes.read(Int32.self, p, at: 4), let flags = Bytes.read(UInt32.self, p, at: 8) else {
            throw short("RTM_NEWLINK", m)
        }
        var link = Link(index: index, name: "", flags: flags)
        for a in try NetlinkAttribute.parseAll(p.dropFirst(16)) {
            switch a.type {
            case NL.IFLA_IFNAME: link.name = a.string
            case NL.IFLA_ADDRESS: link.hardwareAddress = a.payload
            case NL.IFLA_MTU: link.mtu = a.u32
            default: break
            }
        }
        return link
    }

    public static func address(_ m: NetlinkMessage) throws(NetlinkError) -> Address? {
        guard m.type == NL.RTM_NEWADDR else { return nil }
        let p = m.payload[...]
        guard p.count >= 8, let index = Bytes.read(Int32.self, p, at: 4) else { throw short("RTM_NEWADDR", m) }
        var local: [UInt8]?, address: [UInt8]?
        for a in try NetlinkAttribute.parseAll(p.dropFirst(8)) {
            if a.type == NL.IFA_LOCAL { local = a.payload }
            if a.type == NL.IFA_ADDRESS { address = a.payload }
        }
        guard let bytes = local ?? address, bytes.count == 4 || bytes.count == 16 else { return nil }
        return Address(index: index, family: p[p.startIndex], address: bytes, prefixLength: p[p.startIndex + 1],
                       scope: p[p.startIndex + 3])
    }

    public static func route(_ m: NetlinkMessage) throws(NetlinkError) -> Route? {
        guard m.type == NL.RTM_NEWROUTE else { return nil }
        let p = m.payload[...]
        guard p.count >= 12 else { throw short("RTM_NEWROUTE", m) }
        let s = p.startIndex
        var r = Route(family: p[s], destinationLength: p[s + 1], tos: p[s + 3], table: UInt32(p[s + 4]),
                      protocolID: p[s + 5], scope: p[s + 6], type: p[s + 7])
        for a in try NetlinkAttribute.parseAll(p.dropFirst(12)) {
            switch a.type {
            case NL.RTA_DST: r.destination = a.payload
            case NL.RTA_OIF: r.outputInterface = a.u32.map { Int32(bitPattern: $0) }
            case NL.RTA_GATEWAY: r.gateway = a.payload
            case FIB.RTA_PREFSRC: r.preferredSource = a.payload
            case NL.RTA_PRIORITY: r.priority = a.u32
            case NL.RTA_TABLE: if let t = a.u32 { r.table = t }
            case NL.RTA_MULTIPATH: r.nextHops = try nextHops(a.payload[...])
            default: break
            }
        }
        return r
    }

    /// struct rtnexthop (8 B: len u16, flags u8, hops u8, ifindex i32) followed by its attributes, repeated.
    static func nextHops(_ b: ArraySlice<UInt8>) throws(NetlinkError) -> [(interface: Int32, gateway: [UInt8]?)] {
        var out: [(interface: Int32, gateway: [UInt8]?)] = []
        var off = 0
        while off + 8 <= b.count {
            guard let len = Bytes.read(UInt16.self, b, at: off), let index = Bytes.read(Int32.self, b, at: off + 4) else { break }
            guard len >= 8, off + Int(len) <= b.count else {
                throw NetlinkError(operation: "parse RTA_MULTIPATH", detail: "next hop length \(len) at offset \(off)")
            }
            let start = b.startIndex + off
            let attrs = try NetlinkAttribute.parseAll(b[(start + 8)..<(start + Int(len))])
            out.append((index, attrs.first { $0.type == NL.RTA_GATEWAY }?.payload))
            off += Bytes.align4(Int(len))
        }
        return out
    }
}
