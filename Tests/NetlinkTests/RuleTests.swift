import SystemKit
import Testing
@testable import Netlink

// Kernel answers captured in a throwaway netns (Linux 6.18 x86_64, NETLINK_EXT_ACK and NETLINK_CAP_ACK set, a raw
// python3 NETLINK_ROUTE socket): veth pxprd0 (index 3) with 10.231.161.5/24 and fd31:16::5/64 (nodad). Every request
// golden below is byte for byte what was sent to that kernel, and the acknowledgements are its answers.
enum CapturedRules {
    /// RTM_GETRULE AF_INET dump, seq 1, after `ip rule add from 10.231.160.5 lookup 100 pref 1000`: the local rule
    /// (priority 0: no FRA_PRIORITY), ours (FRA_PROTOCOL 0: added by user space), main, default, then NLMSG_DONE.
    static let ipv4Dump = hex("""
        34000000 2000 0200 01000000 af2b0000 02000000ff0000010000000008000f00ff00000008000e00ffffffff0500150002000000
        44000000 2000 0200 01000000 af2b0000 02002000640000010000000008000f006400000008000e00ffffffff050015000000000008000600e8030000080002000ae7a005
        3c000000 2000 0200 01000000 af2b0000 02000000fe0000010000000008000f00fe00000008000e00ffffffff050015000200000008000600fe7f0000
        3c000000 2000 0200 01000000 af2b0000 02000000fd0000010000000008000f00fd00000008000e00ffffffff050015000200000008000600ff7f0000
        14000000 0300 0200 01000000 af2b0000 00000000
        """)
    /// RTM_GETRULE AF_UNSPEC dump, seq 6, after `RuleMessages.add` of the two rules below: both families; the IPv6
    /// rule's table 100000 is in FRA_TABLE, its header byte is RT_TABLE_COMPAT (252).
    static let allFamiliesDump = hex("""
        34000000 2000 0200 06000000 552c0000 02000000ff0000010000000008000f00ff00000008000e00ffffffff0500150002000000
        44000000 2000 0200 06000000 552c0000 02002000640000010000000008000f006400000008000e00ffffffff050015000000000008000600e8030000080002000ae7a105
        3c000000 2000 0200 06000000 552c0000 02000000fe0000010000000008000f00fe00000008000e00ffffffff050015000200000008000600fe7f0000
        3c000000 2000 0200 06000000 552c0000 02000000fd0000010000000008000f00fd00000008000e00ffffffff050015000200000008000600ff7f0000
        34000000 2000 0200 06000000 552c0000 0a000000ff0000010000000008000f00ff00000008000e00ffffffff0500150002000000
        50000000 2000 0200 06000000 552c0000 0a008000fc0000010000000008000f00a086010008000e00ffffffff050015000000000008000600e903000014000200fd310016000000000000000000000005
        3c000000 2000 0200 06000000 552c0000 0a000000fe0000010000000008000f00fe00000008000e00ffffffff050015000200000008000600fe7f0000
        14000000 0300 0200 06000000 552c0000 00000000
        """)
    /// The acknowledgement of the first RTM_NEWRULE (seq 3, capped: the echoed header only).
    static let addRuleAck = hex("24000000 0200 0001 03000000 552c0000 00000000 34000000 2000 0506 03000000 00000000")
    /// The same RTM_NEWRULE again (seq 5): EEXIST (-17).
    static let addRuleExists = hex("24000000 0200 0001 05000000 552c0000 efffffff 34000000 2000 0506 05000000 00000000")
    /// RTM_DELRULE of a rule already deleted (seq 15): ENOENT (-2).
    static let deleteRuleMissing = hex("24000000 0200 0001 0f000000 902c0000 feffffff 34000000 2100 0500 0f000000 00000000")
    /// RTM_DELROUTE of a route already deleted (seq 18): ESRCH (-3).
    static let deleteRouteMissing = hex("24000000 0200 0001 12000000 902c0000 fdffffff 34000000 1900 0500 12000000 00000000")
    /// RTM_GETROUTE AF_INET dump (seq 12) after the two `TableRouteMessages.replace` requests below: table 100's
    /// default and subnet routes, then main's subnet route and the local table's.
    static let ipv4RouteDump = hex("""
        34000000 1800 0200 0c000000 552c0000 02000000640400010000000008000f0064000000080005000ae7a1010800040003000000
        3c000000 1800 0200 0c000000 552c0000 021800006404fd010000000008000f0064000000080001000ae7a100080007000ae7a1050800040003000000
        3c000000 1800 0200 0c000000 552c0000 02180000fe02fd010000000008000f00fe000000080001000ae7a100080007000ae7a1050800040003000000
        3c000000 1800 0200 0c000000 552c0000 02200000ff02fe020000000008000f00ff000000080001000ae7a105080007000ae7a1050800040003000000
        3c000000 1800 0200 0c000000 552c0000 02200000ff02fd030000000008000f00ff000000080001000ae7a1ff080007000ae7a1050800040003000000
        3c000000 1800 0200 0c000000 552c0000 02080000ff02fe020000000008000f00ff000000080001007f000000080007007f0000010800040001000000
        3c000000 1800 0200 0c000000 552c0000 02200000ff02fe020000000008000f00ff000000080001007f000001080007007f0000010800040001000000
        3c000000 1800 0200 0c000000 552c0000 02200000ff02fd030000000008000f00ff000000080001007fffffff080007007f0000010800040001000000
        """)
    /// The first two messages of the RTM_GETROUTE AF_INET6 dump (seq 13): table 100000's subnet route (prefsrc,
    /// metric 1024, RTA_CACHEINFO, RTA_PREF) and its default route; the header's table byte is 252.
    static let ipv6RouteDumpHead = hex("""
        88000000 1800 0200 0d000000 552c0000 0a400000fc0400010000000008000f00a086010014000100fd31001600000000000000000000000014000700fd3100160000000000000000000000050800060000040000080004000300000024000c0000000000000000000000000000000000000000000000000000000000000000000500140000000000
        74000000 1800 0200 0d000000 552c0000 0a000000fc0400010000000008000f00a0860100080006000004000014000500fd310016000000000000000000000001080004000300000024000c0000000000000000000000000000000000000000000000000000000000000000000500140000000000
        """)
}

let fd31_16_5: [UInt8] = [0xfd, 0x31, 0, 0x16] + [UInt8](repeating: 0, count: 11) + [5]
let fd31_16_1: [UInt8] = [0xfd, 0x31, 0, 0x16] + [UInt8](repeating: 0, count: 11) + [1]
let fd31_16_0: [UInt8] = [0xfd, 0x31, 0, 0x16] + [UInt8](repeating: 0, count: 12)

@Suite struct RuleRequestGoldenTests {
    let rule4 = Rule(family: NL.AF_INET, sourceLength: 32, source: [10, 231, 161, 5], table: 100, priority: 1000)
    let rule6 = Rule(family: NL.AF_INET6, sourceLength: 128, source: fd31_16_5, table: 100_000, priority: 1001)

    @Test func dump() {
        #expect(hexString(RuleMessages.dump(family: NL.AF_INET, seq: 1).encoded())
                    == "1c000000" + "2200" + "0103" + "01000000" + "00000000" + "020000000000000000000000")
        #expect(hexString(RuleMessages.dump(family: NL.AF_UNSPEC, seq: 6).encoded())
                    == "1c000000" + "2200" + "0103" + "06000000" + "00000000" + "000000000000000000000000")
    }

    @Test func addIPv4() {
        #expect(hexString(RuleMessages.add(rule4, seq: 3).encoded()) == [
            "34000000", "2000", "0506", "03000000", "00000000",  // len 52, RTM_NEWRULE, REQUEST|ACK|EXCL|CREATE, seq 3
            "02002000", "64000001", "00000000",                  // fib_rule_hdr: AF_INET, src_len 32, table 100, TO_TBL
            "08000200", "0ae7a105",                              // FRA_SRC 10.231.161.5
            "08000600", "e8030000",                              // FRA_PRIORITY 1000
            "08000f00", "64000000",                              // FRA_TABLE 100
        ].joined())
    }

    @Test func addIPv6WithALargeTable() {
        #expect(hexString(RuleMessages.add(rule6, seq: 4).encoded()) == [
            "40000000", "2000", "0506", "04000000", "00000000",
            "0a008000", "00000001", "00000000",                  // src_len 128, header table RT_TABLE_UNSPEC
            "14000200", "fd310016000000000000000000000005",      // FRA_SRC fd31:16::5
            "08000600", "e9030000",                              // FRA_PRIORITY 1001
            "08000f00", "a0860100",                              // FRA_TABLE 100000
        ].joined())
    }

    @Test func delete() {
        #expect(hexString(RuleMessages.delete(rule4, seq: 14).encoded())
                    == "34000000" + "2100" + "0500" + "0e000000" + "00000000" + "02002000640000010000000008000200"
                    + "0ae7a10508000600e803000008000f0064000000")
        #expect(hexString(RuleMessages.delete(rule6, seq: 19).encoded())
                    == "40000000" + "2100" + "0500" + "13000000" + "00000000" + "0a00800000000001000000001400020"
                    + "0fd31001600000000000000000000000508000600e903000008000f00a0860100")
    }
}

@Suite struct TableRouteRequestGoldenTests {
    @Test func replaceSubnetRoute() {
        let r = Route(family: NL.AF_INET, destinationLength: 24, destination: [10, 231, 161, 0], table: 100,
                           scope: NL.RT_SCOPE_LINK, outputInterface: 3, preferredSource: [10, 231, 161, 5])
        #expect(hexString(TableRouteMessages.replace(r, seq: 8).encoded()) == [
            "3c000000", "1800", "0505", "08000000", "00000000",  // len 60, RTM_NEWROUTE, REQUEST|ACK|REPLACE|CREATE
            "02180000", "6404fd01", "00000000",                  // rtmsg: AF_INET /24, table 100, static, link, unicast
            "08000f00", "64000000",                              // RTA_TABLE 100
            "08000100", "0ae7a100",                              // RTA_DST 10.231.161.0
            "08000700", "0ae7a105",                              // RTA_PREFSRC 10.231.161.5
            "08000400", "03000000",                              // RTA_OIF 3
        ].joined())
    }

    @Test func replaceDefaultRoute() {
        let r = Route(family: NL.AF_INET, table: 100, outputInterface: 3, gateway: [10, 231, 161, 1])
        #expect(hexString(TableRouteMessages.replace(r, seq: 9).encoded())
                    == "34000000" + "1800" + "0505" + "09000000" + "00000000" + "02000000" + "64040001" + "00000000"
                    + "08000f0064000000" + "080005000ae7a101" + "0800040003000000")
    }

    @Test func replaceIPv6RoutesInALargeTable() {
        let subnet = Route(family: NL.AF_INET6, destinationLength: 64, destination: fd31_16_0, table: 100_000,
                                scope: NL.RT_SCOPE_LINK, outputInterface: 3, preferredSource: fd31_16_5)
        #expect(hexString(TableRouteMessages.replace(subnet, seq: 10).encoded())
                    == "54000000" + "1800" + "0505" + "0a000000" + "00000000" + "0a400000" + "0004fd01" + "00000000"
                    + "08000f00a0860100" + "14000100fd310016000000000000000000000000" + "14000700fd310016000000000000000000000005"
                    + "0800040003000000")
        let def = Route(family: NL.AF_INET6, table: 100_000, outputInterface: 3, gateway: fd31_16_1)
        #expect(hexString(TableRouteMessages.replace(def, seq: 11).encoded())
                    == "40000000" + "1800" + "0505" + "0b000000" + "00000000" + "0a000000" + "00040001" + "00000000"
                    + "08000f00a0860100" + "14000500fd310016000000000000000000000001" + "0800040003000000")
    }

    /// Deleting routes exactly as they were dumped (`CapturedRules.ipv4RouteDump[1]`, `ipv6RouteDumpHead[1]`).
    @Test func deleteAsDumped() throws {
        let v4 = try #require(try RouteReplies.route(try NetlinkMessage.parse(datagram: CapturedRules.ipv4RouteDump)[1]))
        #expect(hexString(TableRouteMessages.delete(v4, seq: 16).encoded())
                    == "34000000" + "1900" + "0500" + "10000000" + "00000000" + "02180000" + "6404ff01" + "00000000"
                    + "08000f0064000000" + "080001000ae7a100" + "0800040003000000")
        let v6 = try #require(try RouteReplies.route(try NetlinkMessage.parse(datagram: CapturedRules.ipv6RouteDumpHead)[1]))
        // The dump's header byte is 252; the request's is 0 (RT_TABLE_UNSPEC) with RTA_TABLE, as for any large table.
        #expect(hexString(TableRouteMessages.delete(v6, seq: 17).encoded())
                    == "48000000" + "1900" + "0500" + "11000000" + "00000000" + "0a000000" + "0004ff01" + "00000000"
                    + "08000f00a0860100" + "0800060000040000" + "14000500fd310016000000000000000000000001" + "0800040003000000")
    }
}

@Suite struct RuleReplyParsingTests {
    @Test func ipv4Dump() throws {
        let messages = try NetlinkMessage.parse(datagram: CapturedRules.ipv4Dump)
        #expect(messages.map(\.type) == [FIB.RTM_NEWRULE, FIB.RTM_NEWRULE, FIB.RTM_NEWRULE, FIB.RTM_NEWRULE, NL.NLMSG_DONE])
        let rules = try messages.compactMap { m throws(NetlinkError) in try RuleReplies.rule(m) }
        #expect(rules.map(\.priority) == [nil, 1000, 32766, 32767])
        #expect(rules.map(\.table) == [255, 100, 254, 253])
        #expect(rules.map(\.protocolID) == [2, 0, 2, 2])
        #expect(rules[1] == Rule(family: NL.AF_INET, sourceLength: 32, source: [10, 231, 160, 5], table: 100,
                                 priority: 1000, protocolID: 0, suppressPrefixLength: FIB.suppressPrefixLengthUnset))
        #expect(rules.allSatisfy { $0.isPlainSourceLookup })
        #expect(rules[0].source.isEmpty && rules[0].sourceLength == 0)
    }

    @Test func allFamiliesDump() throws {
        let rules = try NetlinkMessage.parse(datagram: CapturedRules.allFamiliesDump).compactMap { m throws(NetlinkError) in
            try RuleReplies.rule(m)
        }
        #expect(rules.map(\.family) == [NL.AF_INET, NL.AF_INET, NL.AF_INET, NL.AF_INET, NL.AF_INET6, NL.AF_INET6, NL.AF_INET6])
        let ours6 = rules[5]
        #expect(ours6.source == fd31_16_5 && ours6.sourceLength == 128 && ours6.priority == 1001)
        #expect(ours6.table == 100_000, "FRA_TABLE overrides the header's RT_TABLE_COMPAT")
        #expect(ours6 == Rule(family: NL.AF_INET6, sourceLength: 128, source: fd31_16_5, table: 100_000, priority: 1001,
                              suppressPrefixLength: FIB.suppressPrefixLengthUnset))
        #expect(rules[1].source == [10, 231, 161, 5] && rules[1].table == 100)
    }

    @Test func acknowledgements() throws {
        let ok = try NetlinkMessage.parse(datagram: CapturedRules.addRuleAck)
        #expect(try ok[0].errorCode().errno == 0)
        #expect(try NetlinkMessage.parse(datagram: CapturedRules.addRuleExists)[0].errorCode().errno == 17)
        #expect(try NetlinkMessage.parse(datagram: CapturedRules.deleteRuleMissing)[0].errorCode().errno == 2)
        #expect(try NetlinkMessage.parse(datagram: CapturedRules.deleteRouteMissing)[0].errorCode().errno == 3)
    }

    @Test func narrowerRulesAreNotPlain() {
        var r = Rule(family: NL.AF_INET, sourceLength: 32, source: [10, 0, 0, 1], table: 100, priority: 1000)
        #expect(r.isPlainSourceLookup)
        r.otherAttributes = [3]  // FRA_IIFNAME
        #expect(!r.isPlainSourceLookup)
        r.otherAttributes = []
        r.flags = FIB.FIB_RULE_INVERT
        #expect(!r.isPlainSourceLookup)
        r.flags = 0
        r.destinationLength = 24
        r.destination = [10, 1, 0, 0]
        #expect(!r.isPlainSourceLookup)
        r.destinationLength = 0
        r.destination = []
        r.suppressPrefixLength = 0
        #expect(!r.isPlainSourceLookup)
        r.suppressPrefixLength = nil
        r.action = 2  // FR_ACT_GOTO
        #expect(!r.isPlainSourceLookup)
        r.action = FIB.FR_ACT_TO_TBL
        r.tos = 0x10
        #expect(!r.isPlainSourceLookup)
    }

    @Test func unknownAttributesAreRecorded() throws {
        // A captured rule with an FRA_IIFNAME ("pxa") and FRA_FWMARK appended.
        var payload = hex("02002000640000010000000008000f006400000008000e00ffffffff050015000000000008000600e8030000080002000ae7a005")
        payload += hex("08000300 70786100  08000a00 01000000")
        let r = try #require(try RuleReplies.rule(NetlinkMessage(type: FIB.RTM_NEWRULE, flags: 0, seq: 1, payload: payload)))
        #expect(r.otherAttributes == [3, 10] && !r.isPlainSourceLookup && r.priority == 1000)
    }

    @Test func malformed() throws {
        #expect(throws: NetlinkError.self) {
            try RuleReplies.rule(NetlinkMessage(type: FIB.RTM_NEWRULE, flags: 0, seq: 1, payload: [2, 0, 32, 0, 100]))
        }
        #expect(throws: NetlinkError.self) {
            try RuleReplies.rule(NetlinkMessage(type: FIB.RTM_NEWRULE, flags: 0, seq: 1, payload: hex("020020006400000100000000 4000 0200 0ae7a005")))
        }
        #expect(throws: NetlinkError.self) {
            try RouteReplies.route(NetlinkMessage(type: NL.RTM_NEWROUTE, flags: 0, seq: 1, payload: [2, 24]))
        }
        #expect(throws: NetlinkError.self) {
            try RouteReplies.route(NetlinkMessage(type: NL.RTM_NEWROUTE, flags: 0, seq: 1, payload: hex("021800006404fd0100000000 0000 0700")))
        }
        #expect(try RuleReplies.rule(NetlinkMessage(type: NL.RTM_NEWROUTE, flags: 0, seq: 1, payload: [])) == nil)
        #expect(try RouteReplies.route(NetlinkMessage(type: FIB.RTM_NEWRULE, flags: 0, seq: 1, payload: [])) == nil)
    }
}

@Suite struct TableRouteReplyParsingTests {
    @Test func ipv4() throws {
        let routes = try NetlinkMessage.parse(datagram: CapturedRules.ipv4RouteDump).compactMap { m throws(NetlinkError) in
            try RouteReplies.route(m)
        }
        #expect(routes.count == 8)
        #expect(routes[0] == Route(family: NL.AF_INET, table: 100, outputInterface: 3, gateway: [10, 231, 161, 1]))
        #expect(routes[1] == Route(family: NL.AF_INET, destinationLength: 24, destination: [10, 231, 161, 0], table: 100,
                                        scope: NL.RT_SCOPE_LINK, outputInterface: 3, preferredSource: [10, 231, 161, 5]))
        #expect(routes[2].table == NL.RT_TABLE_MAIN && routes[2].protocolID == 2)
        #expect(routes.filter { $0.table == 100 }.count == 2)
    }

    @Test func ipv6InALargeTable() throws {
        let routes = try NetlinkMessage.parse(datagram: CapturedRules.ipv6RouteDumpHead).compactMap { m throws(NetlinkError) in
            try RouteReplies.route(m)
        }
        #expect(routes == [
            Route(family: NL.AF_INET6, destinationLength: 64, destination: fd31_16_0, table: 100_000, outputInterface: 3,
                       preferredSource: fd31_16_5, priority: 1024),
            Route(family: NL.AF_INET6, table: 100_000, outputInterface: 3, gateway: fd31_16_1, priority: 1024),
        ])
    }
}

@Suite struct PolicySessionTests {
    func session(_ s: ScriptedSocket) -> NetlinkSession {
        NetlinkSession(socket: s, deadline: Clock.monotonicNanoseconds() + 10_000_000_000)
    }

    /// Replays a captured datagram under the request's sequence number.
    static func replay(_ datagram: [UInt8], seq: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        guard let messages = try? NetlinkMessage.parse(datagram: datagram) else { return out }
        for var m in messages {
            m.seq = seq
            m.pid = 0x26ce
            out += m.encoded()
        }
        return out
    }

    @Test func rulesOfAFamily() throws {
        let s = ScriptedSocket([(FIB.RTM_GETRULE, { seq in [PolicySessionTests.replay(CapturedRules.allFamiliesDump, seq: seq)] })])
        let rules = try session(s).rules(family: NL.AF_UNSPEC)
        #expect(rules.count == 7 && s.sent[0].payload[0] == NL.AF_UNSPEC)
    }

    @Test func addRuleIsIdempotent() throws {
        let s = ScriptedSocket([
            (FIB.RTM_NEWRULE, { seq in [ack(seq)] }),
            (FIB.RTM_NEWRULE, { seq in [ack(seq, errno: 17)] }),
            (FIB.RTM_NEWRULE, { seq in [ack(seq, errno: 1)] }),
        ])
        let n = session(s)
        let rule = Rule(family: NL.AF_INET, sourceLength: 32, source: [10, 231, 161, 5], table: 100, priority: 1000)
        #expect(try n.addRule(rule) == true)
        #expect(try n.addRule(rule) == false)
        #expect(throws: NetlinkError.self) { try n.addRule(rule) }  // EPERM is an error
        #expect(s.sent.allSatisfy { $0.flags == NL.NLM_F_REQUEST | NL.NLM_F_ACK | NL.NLM_F_CREATE | NL.NLM_F_EXCL })
    }

    @Test func deletesTolerateAbsence() throws {
        let s = ScriptedSocket([
            (FIB.RTM_DELRULE, { seq in [ack(seq, errno: 2)] }),
            (NL.RTM_DELROUTE, { seq in [ack(seq, errno: 3)] }),
            (NL.RTM_DELROUTE, { seq in [ack(seq)] }),
            (FIB.RTM_DELRULE, { seq in [ack(seq, errno: 97)] }),
        ])
        let n = session(s)
        let rule = Rule(family: NL.AF_INET6, sourceLength: 128, source: fd31_16_5, table: 100_000, priority: 1001)
        let route = Route(family: NL.AF_INET, table: 100, outputInterface: 3, gateway: [10, 231, 161, 1])
        #expect(try n.deleteRule(rule) == false)
        #expect(try n.deleteRoute(route) == false)
        #expect(try n.deleteRoute(route) == true)
        #expect(throws: NetlinkError.self) { try n.deleteRule(rule) }  // EAFNOSUPPORT is an error
    }

    @Test func routesOfATable() throws {
        let s = ScriptedSocket([(NL.RTM_GETROUTE, { seq in
            [PolicySessionTests.replay(CapturedRules.ipv4RouteDump, seq: seq), done(seq)]
        })])
        let routes = try session(s).routes(family: NL.AF_INET, table: 100)
        #expect(routes.count == 2 && routes.allSatisfy { $0.table == 100 })
        #expect(routes.compactMap(\.preferredSource) == [[10, 231, 161, 5]])
    }

    @Test func replaceRouteFailureCarriesTheKernelError() {
        let s = ScriptedSocket([(NL.RTM_NEWROUTE, { seq in [ack(seq, errno: 22)] })])
        let r = Route(family: NL.AF_INET, destinationLength: 24, destination: [10, 231, 161, 0], table: 100,
                           scope: NL.RT_SCOPE_LINK, outputInterface: 3, preferredSource: [10, 231, 162, 5])
        do {
            try session(s).replaceRoute(r)
            Issue.record("expected EINVAL")
        } catch {
            #expect(error.errno == 22 && error.operation == "replace route in table 100")
        }
    }
}
