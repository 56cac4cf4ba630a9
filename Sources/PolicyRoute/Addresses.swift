// IP addresses and prefixes as policy routing needs them: parsed strictly from CNI result text, masked to their
// network, written back in canonical form. No Foundation, no I/O.

/// An IPv4 or IPv6 address family.
public enum InetFamily: Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case ipv4, ipv6

    /// The address length in bytes.
    public var byteCount: Int { self == .ipv4 ? 4 : 16 }
    /// The longest prefix (a host route).
    public var bitCount: Int { byteCount * 8 }
    public var description: String { self == .ipv4 ? "IPv4" : "IPv6" }
}

/// An IPv4 (4 bytes) or IPv6 (16 bytes) address in network byte order.
public struct InetAddress: Sendable, Hashable, CustomStringConvertible {
    public let bytes: [UInt8]

    /// nil unless `bytes` has 4 or 16 elements.
    public init?(bytes: [UInt8]) {
        guard bytes.count == 4 || bytes.count == 16 else { return nil }
        self.bytes = bytes
    }

    public var family: InetFamily { bytes.count == 4 ? .ipv4 : .ipv6 }

    /// Parses dotted-quad IPv4 (no leading zeros, as Go's `net.ParseIP`) or IPv6 text (RFC 4291 §2.2, including
    /// `::` and a trailing dotted quad; zones are refused). Returns nil for anything else.
    public init?(_ text: some StringProtocol) {
        let u = Array(text.utf8)
        if u.contains(UInt8(ascii: ":")) {
            guard let b = InetAddress.parse6(u) else { return nil }
            bytes = b
        } else {
            guard let b = InetAddress.parse4(u[...]) else { return nil }
            bytes = b
        }
    }

    static func parse4(_ u: ArraySlice<UInt8>) -> [UInt8]? {
        let parts = u.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var out: [UInt8] = []
        for p in parts {
            guard !p.isEmpty, p.count <= 3, p.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
            if p.count > 1 && p.first == UInt8(ascii: "0") { return nil }
            var v = 0
            for d in p { v = v * 10 + Int(d - 48) }
            guard v <= 255 else { return nil }
            out.append(UInt8(v))
        }
        return out
    }

    static func parse6(_ u: [UInt8]) -> [UInt8]? {
        guard u.count >= 2, u.count <= 45 else { return nil }
        // Split around the one allowed "::".
        var head = u[...]
        var tail: ArraySlice<UInt8>?
        var i = 0
        while i + 1 < u.count {
            if u[i] == UInt8(ascii: ":") && u[i + 1] == UInt8(ascii: ":") {
                guard tail == nil else { return nil }
                head = u[0..<i]
                tail = u[(i + 2)...]
                i += 2
                continue
            }
            i += 1
        }
        func groups(_ s: ArraySlice<UInt8>, allowV4: Bool) -> [UInt8]? {
            if s.isEmpty { return [] }
            let parts = s.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
            var out: [UInt8] = []
            for (k, p) in parts.enumerated() {
                if allowV4 && k == parts.count - 1 && p.contains(UInt8(ascii: ".")) {
                    guard let v4 = parse4(p) else { return nil }
                    out += v4
                    continue
                }
                guard !p.isEmpty, p.count <= 4 else { return nil }
                var v = 0
                for c in p {
                    guard let d = hexValue(c) else { return nil }
                    v = v * 16 + d
                }
                out += [UInt8(v >> 8), UInt8(v & 0xFF)]
            }
            return out
        }
        if let tail {
            guard let h = groups(head, allowV4: false), let t = groups(tail, allowV4: true), h.count + t.count <= 14 else { return nil }
            return h + [UInt8](repeating: 0, count: 16 - h.count - t.count) + t
        }
        guard let all = groups(head, allowV4: true), all.count == 16 else { return nil }
        return all
    }

    static func hexValue(_ c: UInt8) -> Int? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return Int(c - 48)
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return Int(c - 87)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return Int(c - 55)
        default: return nil
        }
    }

    /// Dotted quad, or RFC 5952 IPv6 text (lower case, the longest run of two or more zero groups as `::`).
    public var description: String {
        if bytes.count == 4 { return bytes.map { String($0) }.joined(separator: ".") }
        var g: [Int] = []
        for k in 0..<8 { g.append(Int(bytes[2 * k]) << 8 | Int(bytes[2 * k + 1])) }
        var bestStart = -1, bestLen = 0, k = 0
        while k < 8 {
            if g[k] == 0 {
                var e = k
                while e < 8 && g[e] == 0 { e += 1 }
                if e - k > bestLen { bestStart = k; bestLen = e - k }
                k = e
            } else {
                k += 1
            }
        }
        func hex(_ r: Range<Int>) -> String { r.map { String(g[$0], radix: 16) }.joined(separator: ":") }
        if bestLen < 2 { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLen)..<8)
    }
}

/// An address with a prefix length (`10.231.161.5/24`): the address is kept as written, `network` masks it.
public struct InetPrefix: Sendable, Hashable, CustomStringConvertible {
    public let address: InetAddress
    public let length: Int

    /// nil when `length` exceeds the family's bit count or is negative.
    public init?(address: InetAddress, length: Int) {
        guard length >= 0, length <= address.family.bitCount else { return nil }
        self.address = address
        self.length = length
    }

    /// Parses `<address>/<length>` (CIDR notation as CNI results write `ips[].address`).
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let a = InetAddress(parts[0]) else { return nil }
        let digits = Array(parts[1].utf8)
        guard !digits.isEmpty, digits.count <= 3, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        var n = 0
        for d in digits { n = n * 10 + Int(d - 48) }
        self.init(address: a, length: n)
    }

    public var family: InetFamily { address.family }

    /// The prefix with its host bits cleared (`10.231.161.0/24`).
    public var network: InetPrefix {
        var b = address.bytes
        for i in 0..<b.count {
            let bitsHere = max(0, min(8, length - 8 * i))
            b[i] &= bitsHere == 0 ? 0 : UInt8(truncatingIfNeeded: 0xFF << (8 - bitsHere))
        }
        // Same family and a length already validated: both initialisers succeed.
        guard let a = InetAddress(bytes: b), let p = InetPrefix(address: a, length: length) else { return self }
        return p
    }

    /// The address as a host prefix (`/32` or `/128`).
    public var host: InetPrefix {
        InetPrefix(address: address, length: address.family.bitCount) ?? self
    }

    public var description: String { "\(address)/\(length)" }
}
