import CNISpec
import Testing
@testable import NetAttach

@Suite struct AddressTests {
    // (text, canonical form, expected byte count)
    static let validIPs: [(String, String, Int)] = [
        ("0.0.0.0", "0.0.0.0", 4),
        ("10.1.2.3", "10.1.2.3", 4),
        ("255.255.255.255", "255.255.255.255", 4),
        ("::", "::", 16),
        ("::1", "::1", 16),
        ("1::", "1::", 16),
        ("2001:DB8::0001", "2001:db8::1", 16),
        ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1", 16),
        ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1", 16),
        ("fe80:0:0:0:0:0:0:0", "fe80::", 16),
        ("1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8", 16),
        ("1:0:0:2:0:0:0:3", "1:0:0:2::3", 16),
        ("::ffff:192.0.2.1", "192.0.2.1", 16),
        ("64:ff9b::192.0.2.33", "64:ff9b::c000:221", 16),
        ("::1.2.3.4", "::102:304", 16),
        ("1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304", 16),
    ]

    @Test(arguments: validIPs)
    func validAddress(text: String, canonical: String, count: Int) throws {
        let ip = try #require(IPAddress(text))
        #expect(ip.bytes.count == count)
        #expect(ip.description == canonical)
        #expect(AddressSyntax.isIPOrPrefix(text))
    }

    static let invalidIPs = [
        "", "1", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4", "1.2.3.04", "1..2.3", "1.2.3.", ".1.2.3", "a.b.c.d",
        " 1.2.3.4", "1.2.3.4 ", "-1.2.3.4",
        ":", ":::", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:8:9", "1::2::3", ":1::", "1::2:", "1:", ":1", "12345::",
        "g::", "1:2:3:4:5:6:7::8", "::1:2:3:4:5:6:7:8", "fe80::1%eth0", "::1.2.3", "::1.2.3.4:5", "1.2.3.4::",
        "1:2:3:4:5:6:7:1.2.3.4", "::256.0.0.1",
    ]

    @Test(arguments: invalidIPs)
    func invalidAddress(text: String) {
        #expect(IPAddress(text) == nil)
        #expect(!AddressSyntax.isIPOrPrefix(text))
    }

    static let validPrefixes: [(String, Int)] = [
        ("10.0.0.0/8", 8), ("10.1.2.3/24", 24), ("0.0.0.0/0", 0), ("1.2.3.4/32", 32),
        ("::/0", 0), ("2001:db8::5/64", 64), ("::1/128", 128), ("::ffff:1.2.3.4/96", 96),
    ]

    @Test(arguments: validPrefixes)
    func validPrefix(text: String, length: Int) throws {
        let p = try #require(IPPrefix(text))
        #expect(p.prefixLength == length)
        #expect(AddressSyntax.isIPOrPrefix(text))
    }

    static let invalidPrefixes = [
        "10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/08", "10.0.0.0/8/8",
        "/8", "10.0.0/8", "10.0.0.0/a", "2001:db8::/1000", "1.2.3.4/ 8",
    ]

    @Test(arguments: invalidPrefixes)
    func invalidPrefix(text: String) {
        #expect(IPPrefix(text) == nil)
        #expect(!AddressSyntax.isIPOrPrefix(text))
    }

    static let macs: [(String, Bool, Bool)] = [
        // (text, is 6-byte MAC, is 8-byte GUID)
        ("02:00:00:00:00:01", true, false),
        ("02-AB-cd-00-00-01", true, false),
        ("0200.0000.0001", true, false),
        ("00:11:22:33:44:55:66:77", false, true),
        ("0011.2233.4455.6677", false, true),
        ("02:00:00:00:00", false, false),
        ("02:00:00:00:00:01:", false, false),
        ("02:00-00:00:00:01", false, false),
        ("2:00:00:00:00:01", false, false),
        ("02:00:00:00:00:0g", false, false),
        ("020000000001", false, false),
        ("", false, false),
        ("00:11:22:33:44:55:66:77:88", false, false),
    ]

    @Test(arguments: macs)
    func hardwareAddresses(text: String, isMAC: Bool, isGUID: Bool) {
        #expect(AddressSyntax.isEthernetMAC(text) == isMAC)
        #expect(AddressSyntax.isInfinibandGUID(text) == isGUID)
    }

    static let labels: [(String, Bool)] = [
        ("a", true), ("macvlan-conf", true), ("0abc9", true), (String(repeating: "a", count: 63), true),
        (String(repeating: "a", count: 64), false), ("", false), ("-a", false), ("a-", false), ("A", false),
        ("a_b", false), ("a.b", false), ("a b", false), ("é", false),
    ]

    @Test(arguments: labels)
    func dns1123(text: String, valid: Bool) {
        #expect(KubernetesNames.isDNS1123Label(text) == valid)
    }

    static let ifnames: [(String, Bool)] = [
        ("eth0", true), ("net1", true), ("a", true), ("123456789012345", true), ("1234567890123456", false),
        ("", false), (".", false), ("..", false), ("...", true), ("a/b", false), ("a:b", false), ("a b", false),
        ("a\tb", false), ("é12345678901234", false), ("é1234567890123", true),
    ]

    @Test(arguments: ifnames)
    func interfaceNames(text: String, valid: Bool) {
        #expect(AddressSyntax.isInterfaceName(text) == valid)
    }
}
