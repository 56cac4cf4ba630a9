// FIB rules (linux/fib_rules.h) and routes of one table with a preferred source: what source-based policy routing
// sends and reads. Pure functions over bytes; `NetlinkSession` (PolicySession.swift) does the I/O. Hex goldens of
// every builder and parser, captured from a real kernel, are in Tests/NetlinkTests/RuleTests.swift.

/// Constants of the FIB rule ABI and the route attributes policy routing needs beyond `NL`, with their kernel names.
public enum FIB {
    // Message types (linux/rtnetlink.h)
    public static let RTM_NEWRULE: UInt16 = 32
    public static let RTM_DELRULE: UInt16 = 33
    public static let RTM_GETRULE: UInt16 = 34

    // Rule attributes (enum fra_attr)
    public static let FRA_DST: UInt16 = 1
    public static let FRA_SRC: UInt16 = 2
    public static let FRA_PRIORITY: UInt16 = 6
    public static let FRA_TABLE: UInt16 = 15
    public static let FRA_SUPPRESS_PREFIXLEN: UInt16 = 14
    public static let FRA_PAD: UInt16 = 18
    public static let FRA_PROTOCOL: UInt16 = 21

    // Rule actions and flags
    public static let FR_ACT_TO_TBL: UInt8 = 1
    public static let FIB_RULE_INVERT: UInt32 = 0x2
    /// FRA_SUPPRESS_PREFIXLEN's "not set" value (the kernel reports it on every rule).
    public static let suppressPrefixLengthUnset: UInt32 = 0xFFFF_FFFF

    // Route attributes and tables
    public static let RTA_PREFSRC: UInt16 = 7
    /// The header's table byte when the table does not fit in it (the attribute holds the real one).
    public static let RT_TABLE_UNSPEC: UInt8 = 0
    /// What the kernel writes in a rule's header byte for a table above 255.
    public static let RT_TABLE_COMPAT: UInt8 = 252

    /// The header byte for `table`: the table itself up to 255, otherwise RT_TABLE_UNSPEC (FRA_TABLE/RTA_TABLE,
    /// which every request here carries, is what the kernel uses).
    static func headerTable(_ table: UInt32) -> UInt8 { table < 256 ? UInt8(table) : RT_TABLE_UNSPEC }
}

/// A FIB rule (`ip rule`): the selectors this module models (source and destination prefix, tos), the action, its
/// table and priority, and the types of any other selector the kernel reported (iif, oif, fwmark, uid range, ports…),
/// so callers can tell a plain `from <prefix> lookup <table>` rule from a narrower one.
public struct Rule: Sendable, Equatable {
    public var family: UInt8
    public var sourceLength: UInt8
    /// FRA_SRC: 4 or 16 bytes, empty for "from all".
    public var source: [UInt8]
    public var destinationLength: UInt8
    /// FRA_DST: 4 or 16 bytes, empty for "to all".
    public var destination: [UInt8]
    public var tos: UInt8
    /// FRA_TABLE when present, else the header byte.
    public var table: UInt32
    public var action: UInt8
    /// The header's flags (FIB_RULE_INVERT, …).
    public var flags: UInt32
    /// FRA_PRIORITY; nil when absent (the kernel omits it for priority 0, and a request without it lets the kernel
    /// pick one).
    public var priority: UInt32?
    /// FRA_PROTOCOL: who installed the rule (0 for rules added by user space without one, 2 for the kernel's).
    public var protocolID: UInt8
    /// FRA_SUPPRESS_PREFIXLEN; nil or `FIB.suppressPrefixLengthUnset` when the rule suppresses nothing.
    public var suppressPrefixLength: UInt32?
    /// The types of attributes this model does not decode: each is a further selector or action detail.
    public var otherAttributes: [UInt16]

    public init(family: UInt8, sourceLength: UInt8 = 0, source: [UInt8] = [], destinationLength: UInt8 = 0,
                destination: [UInt8] = [], tos: UInt8 = 0, table: UInt32, action: UInt8 = FIB.FR_ACT_TO_TBL,
                flags: UInt32 = 0, priority: UInt32? = nil, protocolID: UInt8 = 0, suppressPrefixLength: UInt32? = nil,
                otherAttributes: [UInt16] = []) {
        self.family = family
        self.sourceLength = sourceLength
        self.source = source
        self.destinationLength = destinationLength
        self.destination = destination
        self.tos = tos
        self.table = table
        self.action = action
        self.flags = flags
        self.priority = priority
        self.protocolID = protocolID
        self.suppressPrefixLength = suppressPrefixLength
        self.otherAttributes = otherAttributes
    }

    /// `from <source>/<sourceLength> lookup <table>` and nothing else: no destination, tos, inversion, suppression or
    /// other selector. Only such a rule is the one a source-routing plan names.
    public var isPlainSourceLookup: Bool {
        action == FIB.FR_ACT_TO_TBL && destinationLength == 0 && destination.isEmpty && tos == 0
            && flags & FIB.FIB_RULE_INVERT == 0 && otherAttributes.isEmpty
            && (suppressPrefixLength ?? FIB.suppressPrefixLengthUnset) == FIB.suppressPrefixLengthUnset
    }
}

/// FIB rule request builders. `seq` is the caller's sequence number.
public enum RuleMessages {
    /// RTM_GETRULE dump of every rule of `family` (AF_UNSPEC: every family).
    public static func dump(family: UInt8, seq: UInt32) -> NetlinkMessage {
        NetlinkMessage(type: FIB.RTM_GETRULE, flags: NL.NLM_F_REQUEST | NL.NLM_F_DUMP, seq: seq,
                       fixed: [family, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    }

    /// RTM_NEWRULE with CREATE|EXCL: the kernel answers EEXIST instead of adding a second identical rule.
    public static func add(_ rule: Rule, seq: UInt32) -> NetlinkMessage {
        message(FIB.RTM_NEWRULE, NL.NLM_F_REQUEST | NL.NLM_F_ACK | NL.NLM_F_CREATE | NL.NLM_F_EXCL, rule, seq)
    }

    /// RTM_DELRULE of the first rule matching every field given (source, destination, table, priority, action);
    /// ENOENT when there is none.
    public static func delete(_ rule: Rule, seq: UInt32) -> NetlinkMessage {
        message(FIB.RTM_DELRULE, NL.NLM_F_REQUEST | NL.NLM_F_ACK, rule, seq)
    }

    static func message(_ type: UInt16, _ flags: UInt16, _ r: Rule, _ seq: UInt32) -> NetlinkMessage {
        // struct fib_rule_hdr (12 B): family, dst_len, src_len, tos, table, res1, res2, action, flags (u32).
        var fixed: [UInt8] = [r.family, r.destinationLength, r.sourceLength, r.tos, FIB.headerTable(r.table), 0, 0, r.action]
        Bytes.append(r.flags, to: &fixed)
        var attrs: [NetlinkAttribute] = []
        if !r.destination.isEmpty { attrs.append(NetlinkAttribute(type: FIB.FRA_DST, payload: r.destination)) }
        if !r.source.isEmpty { attrs.append(NetlinkAttribute(type: FIB.FRA_SRC, payload: r.source)) }
        if let p = r.priority { attrs.append(.u32(FIB.FRA_PRIORITY, p)) }
        attrs.append(.u32(FIB.FRA_TABLE, r.table))
        return NetlinkMessage(type: type, flags: flags, seq: seq, fixed: fixed, attributes: attrs)
    }
}

/// FIB rule reply parser; a message that is too short or whose attributes overrun is a protocol error.
public enum RuleReplies {
    /// The rule of an RTM_NEWRULE message (a dump entry); nil for other message types.
    public static func rule(_ m: NetlinkMessage) throws(NetlinkError) -> Rule? {
        guard m.type == FIB.RTM_NEWRULE else { return nil }
        let p = m.payload[...]
        guard p.count >= 12, let flags = Bytes.read(UInt32.self, p, at: 8) else {
            throw NetlinkError(operation: "parse RTM_NEWRULE", detail: "\(m.payload.count)-byte payload")
        }
        let s = p.startIndex
        var r = Rule(family: p[s], sourceLength: p[s + 2], destinationLength: p[s + 1], tos: p[s + 3],
                     table: UInt32(p[s + 4]), action: p[s + 7], flags: flags)
        for a in try NetlinkAttribute.parseAll(p.dropFirst(12)) {
            switch a.type {
            case FIB.FRA_SRC: r.source = a.payload
            case FIB.FRA_DST: r.destination = a.payload
            case FIB.FRA_PRIORITY: r.priority = a.u32
            case FIB.FRA_TABLE: if let t = a.u32 { r.table = t }
            case FIB.FRA_PROTOCOL: r.protocolID = a.payload.first ?? 0
            case FIB.FRA_SUPPRESS_PREFIXLEN: r.suppressPrefixLength = a.u32
            case FIB.FRA_PAD: break
            default: r.otherAttributes.append(a.type)
            }
        }
        return r
    }
}

/// Request builders for routes of a given table. `seq` is the caller's sequence number.
public enum TableRouteMessages {
    static func rtmsg(_ r: Route, scope: UInt8) -> [UInt8] {
        // struct rtmsg (12 B): family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
        [r.family, r.destinationLength, 0, r.tos, FIB.headerTable(r.table), r.protocolID, scope, r.type, 0, 0, 0, 0]
    }

    /// RTM_NEWROUTE with CREATE|REPLACE: installs `route` in its table, replacing the route of the same
    /// destination (and tos and metric) there, so a repeated request changes nothing.
    public static func replace(_ route: Route, seq: UInt32) -> NetlinkMessage {
        var attrs: [NetlinkAttribute] = [.u32(NL.RTA_TABLE, route.table)]
        if route.destinationLength > 0 { attrs.append(NetlinkAttribute(type: NL.RTA_DST, payload: route.destination)) }
        if let s = route.preferredSource { attrs.append(NetlinkAttribute(type: FIB.RTA_PREFSRC, payload: s)) }
        if let p = route.priority { attrs.append(.u32(NL.RTA_PRIORITY, p)) }
        if let g = route.gateway { attrs.append(NetlinkAttribute(type: NL.RTA_GATEWAY, payload: g)) }
        if let o = route.outputInterface { attrs.append(.u32(NL.RTA_OIF, UInt32(bitPattern: o))) }
        return NetlinkMessage(type: NL.RTM_NEWROUTE, flags: NL.NLM_F_REQUEST | NL.NLM_F_ACK | NL.NLM_F_CREATE | NL.NLM_F_REPLACE,
                              seq: seq, fixed: rtmsg(route, scope: route.scope), attributes: attrs)
    }

    /// RTM_DELROUTE of `route` as it was dumped: its table, destination, metric, gateway and interface, any scope.
    /// ESRCH when no such route exists.
    public static func delete(_ route: Route, seq: UInt32) -> NetlinkMessage {
        var attrs: [NetlinkAttribute] = [.u32(NL.RTA_TABLE, route.table)]
        if route.destinationLength > 0 { attrs.append(NetlinkAttribute(type: NL.RTA_DST, payload: route.destination)) }
        if let p = route.priority { attrs.append(.u32(NL.RTA_PRIORITY, p)) }
        if let g = route.gateway { attrs.append(NetlinkAttribute(type: NL.RTA_GATEWAY, payload: g)) }
        if let o = route.outputInterface { attrs.append(.u32(NL.RTA_OIF, UInt32(bitPattern: o))) }
        return NetlinkMessage(type: NL.RTM_DELROUTE, flags: NL.NLM_F_REQUEST | NL.NLM_F_ACK, seq: seq,
                              fixed: rtmsg(route, scope: NL.RT_SCOPE_NOWHERE), attributes: attrs)
    }
}
