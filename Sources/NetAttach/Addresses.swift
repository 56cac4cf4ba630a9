// Address and name syntax used by the multi-network annotations: IPv4/IPv6 addresses and prefixes, Ethernet MACs and
// InfiniBand GUIDs, DNS-1123 labels and Linux interface names. Pure functions over UTF-8 bytes, no Foundation.

/// An IPv4 or IPv6 address.
///
/// Invariant: `bytes` has 4 elements for an address written in dotted-quad form and 16 for one written in IPv6 form
/// (including IPv4-mapped `::ffff:a.b.c.d`). Parsing follows Go's `net.ParseIP` as Kubernetes tooling uses it:
/// no leading zeros in IPv4 octets, no zone (`%eth0`), `::` stands for at least one zero group, an embedded IPv4 tail
/// is allowed only as the last 32 bits.
public struct IPAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// Parses an address without prefix; `nil` if the text is not a valid IPv4 or IPv6 address.
    public init?(_ text: some StringProtocol) {
        let raw = Array(text.utf8)
        if raw.contains(UInt8(ascii: ":")) {
            guard let b = IPAddress.parseIPv6(raw[...]) else { return nil }
            bytes = b
        } else {
            guard let b = IPAddress.parseIPv4(raw[...]) else { return nil }
            bytes = b
        }
    }

    /// An address from its 4 (IPv4) or 16 (IPv6) network-order bytes, as netlink carries them.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    public var isIPv4: Bool { bytes.count == 4 }
    public var isIPv6: Bool { bytes.count == 16 }
    public var isUnspecified: Bool { bytes.allSatisfy { $0 == 0 } }

    /// Canonical text as Go's `net.IP.String()` prints it: dotted quad for IPv4 and IPv4-mapped IPv6, RFC 5952 for
    /// other IPv6 (lower case, longest run of two or more zero groups compressed, the first one on a tie).
    public var description: String {
        if isIPv4 { return IPAddress.dotted(bytes[0..<4]) }
        if bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xFF, bytes[11] == 0xFF {
            return IPAddress.dotted(bytes[12..<16])
        }
        var groups: [UInt16] = []
        for k in 0..<8 { groups.append(UInt16(bytes[2 * k]) << 8 | UInt16(bytes[2 * k + 1])) }
        var bestStart = -1, bestLen = 0, k = 0
        while k < 8 {
            if groups[k] == 0 {
                var e = k
                while e < 8, groups[e] == 0 { e += 1 }
                if e - k > bestLen { bestStart = k; bestLen = e - k }
                k = e
            } else {
                k += 1
            }
        }
        if bestLen < 2 { bestStart = -1 }
        var out = ""
        var g = 0
        while g < 8 {
            if g == bestStart {
                out += "::"
                g += bestLen
                continue
            }
            if !out.isEmpty, !out.hasSuffix(":") { out += ":" }
            out += String(groups[g], radix: 16)
            g += 1
        }
        return out
    }

    private static func dotted(_ b: ArraySlice<UInt8>) -> String {
        b.map { String($0) }.joined(separator: ".")
    }

    private static func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

    private static func hexValue(_ b: UInt8) -> Int? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return Int(b - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return Int(b - UInt8(ascii: "a")) + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return Int(b - UInt8(ascii: "A")) + 10
        default: return nil
        }
    }

    static func parseIPv4(_ s: ArraySlice<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        var value = 0, digits = 0
        for b in s {
            if b == UInt8(ascii: ".") {
                guard digits > 0, out.count < 3 else { return nil }
                out.append(UInt8(value))
                value = 0
                digits = 0
            } else if isDigit(b) {
                if digits > 0, value == 0 { return nil }  // leading zero
                value = value * 10 + Int(b - UInt8(ascii: "0"))
                digits += 1
                guard value <= 255 else { return nil }
            } else {
                return nil
            }
        }
        guard digits > 0, out.count == 3 else { return nil }
        out.append(UInt8(value))
        return out
    }

    static func parseIPv6(_ s: ArraySlice<UInt8>) -> [UInt8]? {
        let a = Array(s)
        let n = a.count
        var groups: [UInt16] = []
        var ellipsis: Int? = nil
        var i = 0
        guard n >= 2 else { return nil }
        if a[0] == UInt8(ascii: ":") {
            guard a[1] == UInt8(ascii: ":") else { return nil }
            ellipsis = 0
            i = 2
        }
        while i < n {
            var j = i
            var value = 0
            while j < n, let h = hexValue(a[j]) {
                if j - i < 4 { value = value * 16 + h }
                j += 1
            }
            if j < n, a[j] == UInt8(ascii: ".") {
                // Embedded IPv4 tail: must end the address.
                guard let v4 = parseIPv4(a[i..<n]) else { return nil }
                groups.append(UInt16(v4[0]) << 8 | UInt16(v4[1]))
                groups.append(UInt16(v4[2]) << 8 | UInt16(v4[3]))
                i = n
                break
            }
            guard j > i, j - i <= 4 else { return nil }
            groups.append(UInt16(value))
            guard groups.count <= 8 else { return nil }
            i = j
            if i == n { break }
            guard a[i] == UInt8(ascii: ":") else { return nil }
            i += 1
            if i < n, a[i] == UInt8(ascii: ":") {
                guard ellipsis == nil else { return nil }
                ellipsis = groups.count
                i += 1
            } else if i == n {
                return nil  // trailing single colon
            }
        }
        if let e = ellipsis {
            // `::` must stand for at least one zero group.
            guard groups.count <= 7 else { return nil }
            let zeros = [UInt16](repeating: 0, count: 8 - groups.count)
            groups.insert(contentsOf: zeros, at: e)
        } else {
            guard groups.count == 8 else { return nil }
        }
        var out: [UInt8] = []
        out.reserveCapacity(16)
        for g in groups {
            out.append(UInt8(g >> 8))
            out.append(UInt8(g & 0xFF))
        }
        return out
    }
}

/// An address with a prefix length, `addr/len` (CIDR notation).
///
/// Invariant: `0 <= prefixLength <= 32` for IPv4 and `<= 128` for IPv6; the length is decimal without sign or leading
/// zeros. Host bits may be set (`10.1.2.3/24` is an interface address, as in CNI results and `ips` requests).
public struct IPPrefix: Sendable, Hashable, CustomStringConvertible {
    public let address: IPAddress
    public let prefixLength: Int

    public init?(_ text: some StringProtocol) {
        let raw = Array(text.utf8)
        guard let slash = raw.firstIndex(of: UInt8(ascii: "/")) else { return nil }
        let addrPart = String(decoding: raw[..<slash], as: UTF8.self)
        let lenPart = raw[(slash + 1)...]
        guard let addr = IPAddress(addrPart), !lenPart.isEmpty, lenPart.count <= 3 else { return nil }
        if lenPart.count > 1, lenPart.first == UInt8(ascii: "0") { return nil }
        var len = 0
        for b in lenPart {
            guard b >= UInt8(ascii: "0"), b <= UInt8(ascii: "9") else { return nil }
            len = len * 10 + Int(b - UInt8(ascii: "0"))
        }
        guard len <= addr.bytes.count * 8 else { return nil }
        address = addr
        prefixLength = len
    }

    public var description: String { "\(address)/\(prefixLength)" }
}

/// Validators for the textual forms the NPWG annotations accept.
public enum AddressSyntax {
    /// An IPv4/IPv6 address with an optional `/prefix` (the `ips` selection key).
    public static func isIPOrPrefix(_ s: String) -> Bool {
        s.utf8.contains(UInt8(ascii: "/")) ? IPPrefix(s) != nil : IPAddress(s) != nil
    }

    /// Parses a hardware address in one of Go `net.ParseMAC`'s notations: two-digit hex groups separated by `:` or
    /// `-` (one separator throughout), or four-digit hex groups separated by `.`. Returns the bytes; the caller
    /// checks the length it needs.
    public static func hardwareAddressBytes(_ s: String) -> [UInt8]? {
        let a = Array(s.utf8)
        guard a.count >= 5 else { return nil }
        func hex(_ b: UInt8) -> UInt8? {
            switch b {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return b - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return b - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): return b - UInt8(ascii: "A") + 10
            default: return nil
            }
        }
        var out: [UInt8] = []
        if a[2] == UInt8(ascii: ":") || a[2] == UInt8(ascii: "-") {
            let sep = a[2]
            guard (a.count + 1) % 3 == 0 else { return nil }
            var i = 0
            while i < a.count {
                guard let h = hex(a[i]), let l = hex(a[i + 1]) else { return nil }
                out.append(h << 4 | l)
                if i + 2 < a.count { guard a[i + 2] == sep else { return nil } }
                i += 3
            }
        } else if a.count > 4, a[4] == UInt8(ascii: ".") {
            guard (a.count + 1) % 5 == 0 else { return nil }
            var i = 0
            while i < a.count {
                guard let h1 = hex(a[i]), let l1 = hex(a[i + 1]), let h2 = hex(a[i + 2]), let l2 = hex(a[i + 3]) else {
                    return nil
                }
                out.append(h1 << 4 | l1)
                out.append(h2 << 4 | l2)
                if i + 4 < a.count { guard a[i + 4] == UInt8(ascii: ".") else { return nil } }
                i += 5
            }
        } else {
            return nil
        }
        return out
    }

    /// A 6-byte Ethernet MAC address (the `mac` selection key).
    public static func isEthernetMAC(_ s: String) -> Bool { hardwareAddressBytes(s)?.count == 6 }

    /// An 8-byte InfiniBand GUID such as `00:11:22:33:44:55:66:77` (the `infiniband-guid` selection key).
    public static func isInfinibandGUID(_ s: String) -> Bool { hardwareAddressBytes(s)?.count == 8 }

    /// A Linux interface name: non-empty, at most 15 bytes (IFNAMSIZ - 1), not `.` or `..`, and without `/`, `:`,
    /// NUL or whitespace (the kernel's `dev_valid_name` plus `:`, which would be read as an alias).
    public static func isInterfaceName(_ s: String) -> Bool {
        let a = Array(s.utf8)
        guard !a.isEmpty, a.count <= 15, s != ".", s != ".." else { return false }
        for scalar in s.unicodeScalars {
            if scalar == "/" || scalar == ":" || scalar == "\0" || scalar.properties.isWhitespace { return false }
        }
        return true
    }
}
