import SystemKit
import Testing
@testable import Netlink

func hex(_ s: String) -> [UInt8] {
    let digits = Array(s.utf8.filter { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "\n") })
    var out: [UInt8] = []
    var i = 0
    while i + 1 < digits.count {
        out.append(UInt8(String(decoding: digits[i...(i + 1)], as: UTF8.self), radix: 16) ?? 0)
        i += 2
    }
    return out
}

func hexString(_ b: [UInt8]) -> String {
    b.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

// Kernel answers captured from a netns (`ip netns add`; veth pxa/pxb; 10.9.0.2/24 and fd00::2/64 on pxa, index 3;
// `default via 10.9.0.1 dev pxa`), on Linux 6.x x86_64 with NETLINK_EXT_ACK and NETLINK_CAP_ACK set.
enum Captured {
    /// RTM_GETROUTE AF_INET dump, seq 42: four routes in one datagram (main default, main connected, two local-table).
    static let routeDump = hex("""
        34000000 1800 0200 2a000000 ce260000  02000000fe030001 00000000  08000f00fe000000 080005000a090001 0800040003000000
        3c000000 1800 0200 2a000000 ce260000  02180000fe02fd01 00000000  08000f00fe000000 080001000a090000 080007000a090002 0800040003000000
        3c000000 1800 0200 2a000000 ce260000  02200000ff02fe02 00000000  08000f00ff000000 080001000a090002 080007000a090002 0800040003000000
        3c000000 1800 0200 2a000000 ce260000  02200000ff02fd03 00000000  08000f00ff000000 080001000a0900ff 080007000a090002 0800040003000000
        """)
    /// The datagram that ends that dump.
    static let routeDumpDone = hex("14000000 0300 0200 2a000000 ce260000 00000000")
    /// The answer to replacing the default route via 192.0.2.1 (not on pxa's subnet), seq 43: ENETUNREACH, capped,
    /// with the extended-ack message.
    static let replaceError = hex("""
        44000000 0200 0003 2b000000 ce260000  9bffffff  2c000000180005052b00000000000000
        20000100 4e657874686f702068617320696e76616c6964206761746577617900
        """)
    /// RTM_GETADDR AF_INET6 reply: fd00::2/64 on index 3 and NLMSG_DONE in one datagram.
    static let addressDump6 = hex("""
        48000000 1400 0200 37000000 bb270000  0a408200 03000000
        14000100 fd000000000000000000000000000002  14000600 ffffffffffffffffdd3a0600dd3a0600  08000800 82000000
        14000000 0300 0200 37000000 bb270000 00000000
        """)
    /// RTM_GETADDR AF_INET reply: 10.9.0.2/24 on index 3 (IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_FLAGS, IFA_CACHEINFO).
    static let address4 = hex("""
        4c000000 1400 0200 2f000000 bb270000  02188000 03000000
        08000100 0a090002  08000200 0a090002  08000300 70786100  08000800 80000000  14000600 ffffffffffffffffdc3a0600dc3a0600
        """)
}

@Suite struct RequestGoldenTests {
    @Test func dumpLinks() {
        let bytes = RouteMessages.dumpLinks(seq: 1).encoded()
        #expect(hexString(bytes) == [
            "20000000", "1200", "0103", "01000000", "00000000",  // nlmsghdr: len 32, RTM_GETLINK, REQUEST|DUMP, seq 1, pid 0
            "00000000000000000000000000000000",                  // struct ifinfomsg (16 B), AF_UNSPEC
        ].joined())
    }

    @Test func dumpRoutesAndAddresses() {
        #expect(hexString(RouteMessages.dumpRoutes(family: NL.AF_INET6, seq: 2).encoded())
                    == "1c000000" + "1a00" + "0103" + "02000000" + "00000000" + "0a0000000000000000000000")
        #expect(hexString(RouteMessages.dumpAddresses(family: NL.AF_UNSPEC, seq: 3).encoded())
                    == "18000000" + "1600" + "0103" + "03000000" + "00000000" + "0000000000000000")
    }

    /// Byte for byte what the kernel was sent in the capture (`Captured.replaceError` echoes its header).
    @Test func replaceDefault() {
        let bytes = RouteMessages.replaceDefault(gateway: [192, 0, 2, 1], interface: 3, seq: 43).encoded()
        #expect(hexString(bytes) == [
            "2c000000", "1800", "0505", "2b000000", "00000000",  // len 44, RTM_NEWROUTE, REQUEST|ACK|REPLACE|CREATE, seq 43
            "02000000fe040001", "00000000",                      // rtmsg: AF_INET /0, table main, static, universe, unicast
            "08000500c0000201",                                  // RTA_GATEWAY 192.0.2.1
            "0800040003000000",                                  // RTA_OIF 3
        ].joined())
    }

    @Test func replaceDefaultIPv6() {
        let gw: [UInt8] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        let bytes = RouteMessages.replaceDefault(gateway: gw, interface: 7, seq: 1).encoded()
        #expect(hexString(bytes) == "38000000" + "1800" + "0505" + "01000000" + "00000000"
                    + "0a000000fe040001" + "00000000" + "14000500" + "fd000000000000000000000000000001" + "0800040007000000")
    }

    @Test func deleteRouteAsDumped() {
        let r = Route(family: NL.AF_INET, protocolID: 3, outputInterface: 3, gateway: [10, 9, 0, 1], priority: 100)
        #expect(hexString(RouteMessages.delete(r, seq: 9).encoded()) == [
            "34000000", "1900", "0500", "09000000", "00000000",  // len 52, RTM_DELROUTE, REQUEST|ACK
            "02000000fe03ff01", "00000000",                      // rtmsg: /0, main, proto boot, scope NOWHERE (any), unicast
            "0800060064000000",                                  // RTA_PRIORITY 100
            "0800040003000000",                                  // RTA_OIF 3
            "080005000a090001",                                  // RTA_GATEWAY 10.9.0.1
        ].joined())
    }
}

@Suite struct ReplyParsingTests {
    @Test func routeDump() throws {
        let messages = try NetlinkMessage.parse(datagram: Captured.routeDump)
        #expect(messages.count == 4)
        #expect(messages.allSatisfy { $0.seq == 42 && $0.pid == 0x26ce && $0.flags == NL.NLM_F_MULTI })
        let routes = try messages.compactMap { m throws(NetlinkError) in try RouteReplies.route(m) }
        #expect(routes[0] == Route(family: NL.AF_INET, protocolID: 3, outputInterface: 3, gateway: [10, 9, 0, 1]))
        #expect(routes[0].isMainDefault)
        #expect(routes[1].destinationLength == 24 && routes[1].destination == [10, 9, 0, 0] && routes[1].scope == NL.RT_SCOPE_LINK)
        #expect(routes.filter(\.isMainDefault).count == 1)
        #expect(routes[2].table == 255 && !routes[2].isMainDefault)
        #expect(try NetlinkMessage.parse(datagram: Captured.routeDumpDone).map(\.type) == [NL.NLMSG_DONE])
    }

    @Test func errorWithExtendedAck() throws {
        let messages = try NetlinkMessage.parse(datagram: Captured.replaceError)
        #expect(messages.count == 1 && messages[0].type == NL.NLMSG_ERROR)
        let (errno, message) = try messages[0].errorCode()
        #expect(errno == 101)  // ENETUNREACH
        #expect(message == "Nexthop has invalid gateway")
    }

    @Test func plainAck() throws {
        let ack = NetlinkMessage(type: NL.NLMSG_ERROR, flags: NL.NLM_F_CAPPED, seq: 5,
                                 payload: [0, 0, 0, 0] + RouteMessages.dumpLinks(seq: 5).encoded().prefix(16))
        let (errno, message) = try ack.errorCode()
        #expect(errno == 0 && message == nil)
    }

    @Test func addresses() throws {
        let v6 = try NetlinkMessage.parse(datagram: Captured.addressDump6)
        #expect(v6.map(\.type) == [NL.RTM_NEWADDR, NL.NLMSG_DONE])
        let a6 = try #require(try RouteReplies.address(v6[0]))
        #expect(a6 == Address(index: 3, family: NL.AF_INET6, address: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], prefixLength: 64))
        let a4 = try #require(try RouteReplies.address(try NetlinkMessage.parse(datagram: Captured.address4)[0]))
        #expect(a4 == Address(index: 3, family: NL.AF_INET, address: [10, 9, 0, 2], prefixLength: 24))
    }

    @Test func link() throws {
        // The head of a captured RTM_NEWLINK for pxa: ifinfomsg, IFLA_IFNAME, IFLA_TXQLEN, IFLA_OPERSTATE…, IFLA_MTU,
        // IFLA_ADDRESS; the kernel's message carries ~40 more attributes, which the parser skips.
        var payload = hex("""
            00000100 03000000 43100100 00000000
            08000300 70786100  08000d00 e8030000  05001000 06000000  08000400 78050000
            0a000100 02000000000a 0000  0a000200 ffffffffffff 0000
            """)
        payload += hex("0c002b00 05000200 00000000")  // nested IFLA_PROP_LIST-like attribute, skipped
        let m = NetlinkMessage(type: NL.RTM_NEWLINK, flags: NL.NLM_F_MULTI, seq: 44, payload: payload)
        let l = try #require(try RouteReplies.link(m))
        #expect(l == Link(index: 3, name: "pxa", hardwareAddress: [2, 0, 0, 0, 0, 0x0a], mtu: 1400, flags: 0x11043))
    }

    @Test func multipathNextHops() throws {
        // rtmsg /0 main + RTA_MULTIPATH { nexthop if 2 via 10.0.0.1, nexthop if 3 via 10.1.0.1 }
        let hop1 = hex("1000 00 00 02000000 08000500 0a000001")
        let hop2 = hex("1000 00 00 03000000 08000500 0a010001")
        var payload = hex("02000000fe030001 00000000")
        payload += hex("2400 0900") + hop1 + hop2
        let r = try #require(try RouteReplies.route(NetlinkMessage(type: NL.RTM_NEWROUTE, flags: 0, seq: 1, payload: payload)))
        #expect(r.outputInterface == nil && r.nextHops.map(\.interface) == [2, 3])
        #expect(r.nextHops.map(\.gateway) == [[10, 0, 0, 1], [10, 1, 0, 1]])
        #expect(r.uses(interface: 3) && !r.uses(interface: 4))
    }

    @Test(arguments: [
        hex("08000000 1800 0000 01000000 00000000"),                     // header length 8 < 16
        hex("40000000 1800 0000 01000000 00000000 00000000"),            // length 64 overruns a 20-byte datagram
        hex("ffffffff 1800 0000 01000000 00000000"),                     // length near UInt32.max
    ])
    func malformedHeaders(_ datagram: [UInt8]) {
        #expect(throws: NetlinkError.self) { try NetlinkMessage.parse(datagram: datagram) }
    }

    @Test func malformedBodies() throws {
        let overrun = NetlinkMessage(type: NL.RTM_NEWROUTE, flags: 0, seq: 1, payload: hex("02000000fe030001 00000000 4000 0500 0a000001"))
        #expect(throws: NetlinkError.self) { try RouteReplies.route(overrun) }
        let zeroLength = NetlinkMessage(type: NL.RTM_NEWROUTE, flags: 0, seq: 1, payload: hex("02000000fe030001 00000000 0000 0500"))
        #expect(throws: NetlinkError.self) { try RouteReplies.route(zeroLength) }
        let shortRoute = NetlinkMessage(type: NL.RTM_NEWROUTE, flags: 0, seq: 1, payload: [2, 0, 0])
        #expect(throws: NetlinkError.self) { try RouteReplies.route(shortRoute) }
        let shortLink = NetlinkMessage(type: NL.RTM_NEWLINK, flags: 0, seq: 1, payload: [0, 0, 0, 0, 3])
        #expect(throws: NetlinkError.self) { try RouteReplies.link(shortLink) }
        let shortError = NetlinkMessage(type: NL.NLMSG_ERROR, flags: 0, seq: 1, payload: [0xff, 0xff])
        #expect(throws: NetlinkError.self) { try shortError.errorCode() }
        let badHop = NetlinkMessage(type: NL.RTM_NEWROUTE, flags: 0, seq: 1, payload: hex("02000000fe030001 00000000 0c00 0900 0400 0000 02000000"))
        #expect(throws: NetlinkError.self) { try RouteReplies.route(badHop) }
    }
}

/// Replays scripted kernel answers: each request (matched in order) gets datagrams built from its sequence number.
final class ScriptedSocket: NetlinkSocket {
    let portID: UInt32 = 0x26ce
    var script: [(expectType: UInt16, answer: (UInt32) -> [[UInt8]])]
    var sent: [NetlinkMessage] = []
    var pending: [[UInt8]] = []

    init(_ script: [(UInt16, (UInt32) -> [[UInt8]])]) { self.script = script.map { (expectType: $0.0, answer: $0.1) } }

    func send(_ datagram: [UInt8]) throws(NetlinkError) {
        let m = try NetlinkMessage.parse(datagram: datagram)[0]
        sent.append(m)
        guard !script.isEmpty else { throw NetlinkError(operation: "scripted send", detail: "unexpected request \(m.type)") }
        let step = script.removeFirst()
        guard step.expectType == m.type else {
            throw NetlinkError(operation: "scripted send", detail: "expected \(step.expectType), got \(m.type)")
        }
        pending += step.answer(m.seq)
    }

    func receive() throws(NetlinkError) -> [UInt8] {
        guard !pending.isEmpty else { throw NetlinkError(operation: "netlink receive", errno: 11) }
        return pending.removeFirst()
    }
}

func routeReply(_ r: Route, seq: UInt32, flags: UInt16 = NL.NLM_F_MULTI) -> [UInt8] {
    var attrs: [NetlinkAttribute] = [.u32(NL.RTA_TABLE, r.table)]
    if let o = r.outputInterface { attrs.append(.u32(NL.RTA_OIF, UInt32(bitPattern: o))) }
    if let g = r.gateway { attrs.append(NetlinkAttribute(type: NL.RTA_GATEWAY, payload: g)) }
    if let p = r.priority { attrs.append(.u32(NL.RTA_PRIORITY, p)) }
    let fixed: [UInt8] = [r.family, r.destinationLength, 0, r.tos, UInt8(truncatingIfNeeded: r.table), r.protocolID, r.scope, r.type, 0, 0, 0, 0]
    var m = NetlinkMessage(type: NL.RTM_NEWROUTE, flags: flags, seq: seq, fixed: fixed, attributes: attrs)
    m.pid = 0x26ce
    return m.encoded()
}

func done(_ seq: UInt32, flags: UInt16 = NL.NLM_F_MULTI) -> [UInt8] {
    NetlinkMessage(type: NL.NLMSG_DONE, flags: flags, seq: seq, pid: 0x26ce, payload: [0, 0, 0, 0]).encoded()
}

func ack(_ seq: UInt32, errno: Int32 = 0) -> [UInt8] {
    var p: [UInt8] = []
    Bytes.append(-errno, to: &p)
    p += [UInt8](repeating: 0, count: 16)
    return NetlinkMessage(type: NL.NLMSG_ERROR, flags: NL.NLM_F_CAPPED, seq: seq, pid: 0x26ce, payload: p).encoded()
}

@Suite struct SessionTests {
    func session(_ s: ScriptedSocket) -> NetlinkSession {
        NetlinkSession(socket: s, deadline: Clock.monotonicNanoseconds() + 10_000_000_000)
    }

    let eth0Default = Route(family: NL.AF_INET, protocolID: 3, outputInterface: 2, gateway: [10, 1, 0, 1])
    let eth0Default6 = Route(family: NL.AF_INET6, protocolID: 3, outputInterface: 2, gateway: [0xfd, 1] + [UInt8](repeating: 0, count: 13) + [1], priority: 1024)

    @Test func multiPartDumpAcrossDatagramsSkipsStaleReplies() throws {
        let s = ScriptedSocket([(NL.RTM_GETROUTE, { seq in [
            routeReply(eth0Default, seq: seq &- 1),             // a stale answer to an earlier request: skipped
            Captured.routeDump.count > 0 ? routeReply(eth0Default, seq: seq) : [],
            routeReply(Route(family: NL.AF_INET, destinationLength: 24, destination: [10, 1, 0, 0], protocolID: 2,
                             scope: NL.RT_SCOPE_LINK, outputInterface: 2), seq: seq),
            done(seq),
        ] })])
        let routes = try session(s).routes(family: NL.AF_INET)
        #expect(routes.count == 2 && routes[0] == eth0Default)
    }

    @Test func interruptedDumpIsRetried() throws {
        let s = ScriptedSocket([
            (NL.RTM_GETROUTE, { seq in [routeReply(eth0Default, seq: seq, flags: NL.NLM_F_MULTI | NL.NLM_F_DUMP_INTR), done(seq)] }),
            (NL.RTM_GETROUTE, { seq in [routeReply(eth0Default, seq: seq), done(seq)] }),
        ])
        #expect(try session(s).routes(family: NL.AF_INET) == [eth0Default])
        #expect(s.sent.count == 2)
    }

    @Test func dumpInterruptedForeverFails() {
        let s = ScriptedSocket((0..<NetlinkSession.dumpAttempts).map { _ in
            (NL.RTM_GETROUTE, { seq in [routeReply(self.eth0Default, seq: seq, flags: NL.NLM_F_MULTI | NL.NLM_F_DUMP_INTR), done(seq)] })
        })
        #expect(throws: NetlinkError.self) { try session(s).routes(family: NL.AF_INET) }
    }

    @Test func kernelErrorCarriesErrnoAndMessage() {
        let s = ScriptedSocket([(NL.RTM_NEWROUTE, { seq in
            var answer = Captured.replaceError
            Bytes.append(seq, to: &answer)  // patch the sequence number (offset 8)
            answer.replaceSubrange(8..<12, with: answer.suffix(4))
            return [Array(answer.dropLast(4))]
        })])
        do {
            try session(s).setOnlyDefaultRoute(gateway: [192, 0, 2, 1], interface: 3)
            Issue.record("expected ENETUNREACH")
        } catch {
            #expect(error.errno == 101 && error.kernelMessage == "Nexthop has invalid gateway")
            #expect(error.description.contains("Nexthop has invalid gateway"))
        }
    }

    @Test func receiveTimeoutIsAnError() {
        let s = ScriptedSocket([(NL.RTM_GETLINK, { _ in [] })])
        #expect(throws: NetlinkError.self) { try session(s).links() }
    }

    @Test func pastDeadlineNothingIsSent() {
        let s = ScriptedSocket([])
        let expired = NetlinkSession(socket: s, deadline: Clock.monotonicNanoseconds() - 1)
        #expect(throws: NetlinkError.self) { try expired.links() }
        #expect(s.sent.isEmpty)
    }

    /// The v4 default moves from eth0 (index 2) to net1 (index 3): REPLACE, then eth0's default (another priority,
    /// so REPLACE did not swap it) is deleted, then the result is verified. Only AF_INET is dumped or changed.
    @Test func setOnlyDefaultRouteRemovesTheOthersOfItsFamily() throws {
        let ours = Route(family: NL.AF_INET, protocolID: NL.RTPROT_STATIC, outputInterface: 3, gateway: [10, 2, 0, 1])
        var eth0 = eth0Default
        eth0.priority = 100
        let s = ScriptedSocket([
            (NL.RTM_NEWROUTE, { seq in [ack(seq)] }),
            (NL.RTM_GETROUTE, { seq in [routeReply(eth0, seq: seq), routeReply(ours, seq: seq), done(seq)] }),
            (NL.RTM_DELROUTE, { seq in [ack(seq)] }),
            (NL.RTM_GETROUTE, { seq in [routeReply(ours, seq: seq), done(seq)] }),
            (NL.RTM_GETROUTE, { seq in [routeReply(ours, seq: seq), done(seq)] }),
        ])
        let removed = try session(s).setOnlyDefaultRoute(gateway: [10, 2, 0, 1], interface: 3)
        #expect(removed == [eth0])
        #expect(s.sent.map(\.type) == [NL.RTM_NEWROUTE, NL.RTM_GETROUTE, NL.RTM_DELROUTE, NL.RTM_GETROUTE, NL.RTM_GETROUTE])
        #expect(s.sent.filter { $0.type == NL.RTM_GETROUTE }.allSatisfy { $0.payload[0] == NL.AF_INET })
        #expect(hexString(s.sent[2].encoded()) == hexString(RouteMessages.delete(eth0, seq: s.sent[2].seq).encoded()))
    }

    @Test func routeAlreadyGoneIsFine() throws {
        let ours = Route(family: NL.AF_INET6, outputInterface: 3, gateway: [0xfd, 2] + [UInt8](repeating: 0, count: 13) + [1])
        let s = ScriptedSocket([
            (NL.RTM_NEWROUTE, { seq in [ack(seq)] }),
            (NL.RTM_GETROUTE, { seq in [routeReply(self.eth0Default6, seq: seq), routeReply(ours, seq: seq), done(seq)] }),
            (NL.RTM_DELROUTE, { seq in [ack(seq, errno: 3)] }),  // ESRCH: removed meanwhile
            (NL.RTM_GETROUTE, { seq in [routeReply(ours, seq: seq), done(seq)] }),
            (NL.RTM_GETROUTE, { seq in [routeReply(ours, seq: seq), done(seq)] }),
        ])
        #expect(try session(s).setOnlyDefaultRoute(gateway: ours.gateway ?? [], interface: 3) == [])
        #expect(s.sent.filter { $0.type == NL.RTM_GETROUTE }.allSatisfy { $0.payload[0] == NL.AF_INET6 })
    }

    @Test func badGatewayLength() {
        #expect(throws: NetlinkError.self) { try session(ScriptedSocket([])).setOnlyDefaultRoute(gateway: [1, 2, 3], interface: 3) }
    }
}
