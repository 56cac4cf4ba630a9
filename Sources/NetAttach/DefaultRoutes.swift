import CNISpec

/// An IP address family, as the default-route handling distinguishes them.
public enum AddressFamily: Int, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case ipv4 = 4
    case ipv6 = 6

    public init(_ address: IPAddress) { self = address.isIPv4 ? .ipv4 : .ipv6 }

    public var description: String { self == .ipv4 ? "IPv4" : "IPv6" }

    /// The default destination of the family as CNI results write it.
    public var defaultDestination: String { self == .ipv4 ? "0.0.0.0/0" : "::/0" }
}

/// The NPWG `default-route` request of one attachment (selection §4.1.2.1.9): the gateway per address family that
/// the pod's default route of that family must use, on this attachment's interface. Families the request does not
/// name are left exactly as the delegates set them.
public enum DefaultRouteRequest {
    /// The families a `default-route` list names, in IPv4, IPv6 order. Unparseable entries name no family (the
    /// selection parser has rejected them already).
    public static func families(_ gateways: [String]) -> [AddressFamily] {
        AddressFamily.allCases.filter { f in gateways.contains { IPAddress($0).map(AddressFamily.init) == f } }
    }

    /// The gateway per family of a `default-route` list (at most one per family, enforced by the parser).
    public static func gateways(_ gateways: [String]) -> [(family: AddressFamily, gateway: IPAddress)] {
        var out: [(family: AddressFamily, gateway: IPAddress)] = []
        for text in gateways {
            guard let gw = IPAddress(text) else { continue }
            let f = AddressFamily(gw)
            if !out.contains(where: { $0.family == f }) { out.append((f, gw)) }
        }
        return out
    }
}

/// Rewrites of a CNI result's routes after the default route of a family moved to another attachment, so the cached
/// result (the prevResult of CHECK and DEL) and the result returned to the runtime say what the pod really has:
/// the delegates' own CHECKs validate the routes of their prevResult (the bridge plugin does), and Multus rewrites
/// its cached results the same way. Works on results of every version: `routes` (≥ 0.3.0) and `ip4.routes` /
/// `ip6.routes` (0.1.0, 0.2.0).
public enum ResultRoutes {
    /// `result` with every default route of `family` removed and, when `gateway` is given, one default route of
    /// that family via `gateway` added (once).
    public static func movingDefault(_ result: JSONObject, family: AddressFamily, to gateway: IPAddress?) -> JSONObject {
        var out = result
        let added: JSON? = gateway.map { .object(JSONObject([("dst", .string(family.defaultDestination)), ("gw", .string($0.description))])) }
        if out["routes"] != nil || out["ip4"] == nil && out["ip6"] == nil {
            var routes = (out["routes"]?.arrayValue ?? []).filter { !isDefault($0, family: family) }
            if let added { routes.append(added) }
            if !routes.isEmpty || out["routes"] != nil { out["routes"] = .array(routes) }
            return out
        }
        let key = family == .ipv4 ? "ip4" : "ip6"
        guard var ip = out[key]?.objectValue else { return out }
        var routes = (ip["routes"]?.arrayValue ?? []).filter { !isDefault($0, family: family) }
        if let added { routes.append(added) }
        ip["routes"] = .array(routes)
        out[key] = .object(ip)
        return out
    }

    /// Whether a result route is a default route (`dst` with prefix length 0) of `family`.
    public static func isDefault(_ route: JSON, family: AddressFamily) -> Bool {
        guard let dst = route["dst"]?.stringValue, let p = IPPrefix(dst) else { return false }
        return p.prefixLength == 0 && AddressFamily(p.address) == family
    }
}

/// What the kernel says about one attachment's interface in the pod's netns; network-status prefers it over what a
/// delegate's result claims.
public struct InterfaceFacts: Sendable, Equatable {
    public var name: String
    /// `aa:bb:cc:dd:ee:ff`, or nil for links without a hardware address.
    public var mac: String?
    public var mtu: Int?
    /// Global-scope addresses (link-local ones are not reported), bare, canonical.
    public var ips: [String]
    /// Gateways of the main-table default routes that leave through this interface, IPv4 first.
    public var defaultGateways: [String]

    public init(name: String, mac: String? = nil, mtu: Int? = nil, ips: [String] = [], defaultGateways: [String] = []) {
        self.name = name
        self.mac = mac
        self.mtu = mtu
        self.ips = ips
        self.defaultGateways = defaultGateways
    }
}
