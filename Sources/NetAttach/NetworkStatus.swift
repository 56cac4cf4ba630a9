import CNISpec

/// One element of the `k8s.v1.cni.cncf.io/network-status` annotation, in the NAD client's (Multus-compatible) shape.
///
/// Serialised key order and omission rules follow the NAD client's Go struct: `name`, `interface` (omitted if
/// empty), `ips` (bare addresses, omitted if empty), `mac` (omitted if empty), `mtu` (omitted if absent or 0),
/// `default` (omitted when false), `dns` (always present, `{}` when empty), `device-info` (omitted if absent),
/// `gateway` (omitted if empty). Keys this model does not know are kept in `extra` and written after the others.
public struct NetworkStatusEntry: Sendable, Equatable {
    public var name: String
    public var interface: String?
    public var ips: [String]
    public var mac: String?
    public var mtu: Int?
    public var isDefault: Bool
    /// `nameservers`, `domain`, `search`, `options`, as in a CNI result.
    public var dns: JSONObject
    public var deviceInfo: JSON?
    public var gateway: [String]
    public var extra: JSONObject

    public init(
        name: String, interface: String? = nil, ips: [String] = [], mac: String? = nil, mtu: Int? = nil,
        isDefault: Bool = false, dns: JSONObject = JSONObject(), deviceInfo: JSON? = nil, gateway: [String] = [],
        extra: JSONObject = JSONObject()
    ) {
        self.name = name
        self.interface = interface
        self.ips = ips
        self.mac = mac
        self.mtu = mtu
        self.isDefault = isDefault
        self.dns = dns
        self.deviceInfo = deviceInfo
        self.gateway = gateway
        self.extra = extra
    }

    public func json() -> JSONObject {
        var o = JSONObject()
        o["name"] = .string(name)
        if let interface, !interface.isEmpty { o["interface"] = .string(interface) }
        if !ips.isEmpty { o["ips"] = .array(ips.map(JSON.string)) }
        if let mac, !mac.isEmpty { o["mac"] = .string(mac) }
        if let mtu, mtu != 0 { o["mtu"] = .int(mtu) }
        if isDefault { o["default"] = .bool(true) }
        o["dns"] = .object(dns)
        if let deviceInfo, !deviceInfo.isNull { o["device-info"] = deviceInfo }
        if !gateway.isEmpty { o["gateway"] = .array(gateway.map(JSON.string)) }
        for m in extra.members where o[m.key] == nil { o[m.key] = m.value }
        return o
    }

    /// Reads an entry written by Plexus, Multus or another NPWG implementation. `name` is required; the spec's
    /// `default-route` key is accepted as `gateway` when `gateway` is absent (and kept in `extra` as well).
    public init(json o: JSONObject, index: Int) throws(NetworkStatusError) {
        func fail(_ r: String) -> NetworkStatusError { NetworkStatusError(index: index, reason: r) }
        func strings(_ key: String) throws(NetworkStatusError) -> [String] {
            guard let v = o[key], !v.isNull else { return [] }
            guard case .array(let items) = v else { throw fail("\"\(key)\" is a \(v.typeName), not a list") }
            var out: [String] = []
            for item in items {
                guard case .string(let s) = item else { throw fail("\"\(key)\" holds a \(item.typeName)") }
                out.append(s)
            }
            return out
        }
        func string(_ key: String) throws(NetworkStatusError) -> String? {
            guard let v = o[key], !v.isNull else { return nil }
            guard case .string(let s) = v else { throw fail("\"\(key)\" is a \(v.typeName), not a string") }
            return s
        }
        guard let name = try string("name"), !name.isEmpty else { throw fail("\"name\" is required") }
        self.name = name
        interface = try string("interface")
        ips = try strings("ips")
        mac = try string("mac")
        if let m = o["mtu"], !m.isNull {
            guard let n = m.intValue else { throw fail("\"mtu\" is not an integer") }
            mtu = n
        } else {
            mtu = nil
        }
        if let d = o["default"], !d.isNull {
            guard case .bool(let b) = d else { throw fail("\"default\" is a \(d.typeName), not a boolean") }
            isDefault = b
        } else {
            isDefault = false
        }
        if let d = o["dns"], !d.isNull {
            guard case .object(let obj) = d else { throw fail("\"dns\" is a \(d.typeName), not an object") }
            dns = obj
        } else {
            dns = JSONObject()
        }
        if let d = o["device-info"], !d.isNull { deviceInfo = d } else { deviceInfo = nil }
        gateway = o["gateway"] != nil ? try strings("gateway") : try strings("default-route")
        let known: Set<String> = ["name", "interface", "ips", "mac", "mtu", "default", "dns", "device-info", "gateway"]
        var extra = JSONObject()
        for m in o.members where !known.contains(m.key) { extra[m.key] = m.value }
        self.extra = extra
    }
}

/// A network-status value that could not be read; `index` is the element at fault, if any.
public struct NetworkStatusError: Error, Sendable, Equatable, CustomStringConvertible {
    public var index: Int?
    public var reason: String

    public init(index: Int?, reason: String) {
        self.index = index
        self.reason = reason
    }

    public var description: String {
        "invalid \(NetworkStatus.annotation) annotation" + (index.map { ": element \($0)" } ?? "") + ": \(reason)"
    }
}

/// What the caller knows about one attachment after its ADD, for its network-status entry.
public struct AttachmentStatusInput: Sendable, Equatable {
    /// `ns/nad` for NAD networks, the CNI `name` for the cluster network.
    public var networkName: String
    /// The `CNI_IFNAME` the attachment was run with; used when the result names no sandbox interface.
    public var requestedIfname: String
    public var isDefault: Bool
    /// The ADD result in cniVersion 1.1.0 shape, or `nil` if the delegate returned none (a minimal entry is built).
    public var result: JSONObject?
    /// Set when route handling decided this attachment's default gateways: the `default-route` request of the
    /// attachment that carried it, or `[]` for an attachment whose default routes were removed. `nil` derives the
    /// gateways from the result.
    public var defaultRouteGateways: [String]?
    /// The device-info file content (device-info spec §6), passed through unchanged.
    public var deviceInfo: JSON?
    /// The interface as the kernel reports it after the ADD (nil when the netns could not be read or holds no
    /// interface of that name); preferred over the result.
    public var kernel: InterfaceFacts?

    public init(networkName: String, requestedIfname: String, isDefault: Bool, result: JSONObject?,
                defaultRouteGateways: [String]? = nil, deviceInfo: JSON? = nil, kernel: InterfaceFacts? = nil) {
        self.networkName = networkName
        self.requestedIfname = requestedIfname
        self.isDefault = isDefault
        self.result = result
        self.defaultRouteGateways = defaultRouteGateways
        self.deviceInfo = deviceInfo
        self.kernel = kernel
    }
}

/// Builds and reads the `k8s.v1.cni.cncf.io/network-status` annotation (NPWG §5, NAD client shape).
///
/// One entry per attachment (decision: not one per sandbox interface as the NAD client's `CreateNetworkStatuses`
/// does for multi-interface results; NPWG §5.1.1 says to use the first sandbox interface):
/// - `interface`, `mac`, `mtu`: the first `interfaces[]` element with a non-empty `sandbox`; `interface` falls back
///   to the requested ifname when there is none.
/// - `ips`: addresses without prefix, in canonical form (as Go prints them), of the `ips[]` whose `interface` index
///   is that sandbox interface; when no interface has a sandbox, of the `ips[]` with no (or a negative) index.
/// - `gateway`: (1) `defaultRouteGateways` when given; else (2) the `gw` of every `routes[]` entry whose `dst` is
///   `0.0.0.0/0` or `::/0`; else (3) for the default network only, and only when the result has no `routes` at all,
///   the `gateway` of the selected `ips[]`. Canonical form, duplicates dropped, result order.
/// - `dns`: the result's `nameservers`, `domain`, `search`, `options` (empty ones dropped); `{}` when none.
///
/// Kernel facts (`kernel`), when given, win: `interface`, `mac` and `mtu` are the kernel's; `ips` are the
/// interface's global addresses (the result's are kept only when the kernel shows none, as for a device handed to
/// user space); `gateway` lists the default routes that really leave through the interface.
public enum NetworkStatus {
    public static let annotation = "k8s.v1.cni.cncf.io/network-status"

    public static func entry(for input: AttachmentStatusInput) -> NetworkStatusEntry {
        var entry = NetworkStatusEntry(
            name: input.networkName, interface: input.requestedIfname, isDefault: input.isDefault,
            deviceInfo: input.deviceInfo)
        var fromResult: [String] = []
        if let result = input.result {
            let interfaces = result["interfaces"]?.arrayValue ?? []
            let sandboxIndex = interfaces.firstIndex { ($0["sandbox"]?.stringValue ?? "").isEmpty == false }
            if let s = sandboxIndex, case .object(let iface) = interfaces[s] {
                if let n = iface["name"]?.stringValue, !n.isEmpty { entry.interface = n }
                if let m = iface["mac"]?.stringValue, !m.isEmpty { entry.mac = m }
                if let mtu = iface["mtu"]?.intValue, mtu != 0 { entry.mtu = mtu }
            }
            var ipGateways: [String] = []
            for ip in result["ips"]?.arrayValue ?? [] {
                let index = ip["interface"]?.intValue
                let selected: Bool
                if let s = sandboxIndex { selected = index == s } else { selected = index == nil || (index ?? 0) < 0 }
                guard selected, let address = ip["address"]?.stringValue else { continue }
                entry.ips.append(bareAddress(address))
                if let gw = ip["gateway"]?.stringValue, !gw.isEmpty { ipGateways.append(canonical(gw)) }
            }
            let routes = result["routes"]?.arrayValue ?? []
            for route in routes {
                guard let dst = route["dst"]?.stringValue, let prefix = IPPrefix(dst),
                    prefix.prefixLength == 0, prefix.address.isUnspecified,
                    let gw = route["gw"]?.stringValue, !gw.isEmpty
                else { continue }
                fromResult.append(canonical(gw))
            }
            if fromResult.isEmpty, routes.isEmpty, input.isDefault { fromResult = ipGateways }
            if let dns = result["dns"]?.objectValue {
                for key in ["nameservers", "domain", "search", "options"] {
                    guard let v = dns[key] else { continue }
                    switch v {
                    case .string(let s) where !s.isEmpty: entry.dns[key] = v
                    case .array(let a) where !a.isEmpty: entry.dns[key] = v
                    default: break
                    }
                }
            }
        }
        var gateways = input.defaultRouteGateways.map { $0.map(canonical) } ?? fromResult
        if let k = input.kernel {
            entry.interface = k.name
            if let mac = k.mac, !mac.isEmpty { entry.mac = mac }
            if let mtu = k.mtu, mtu != 0 { entry.mtu = mtu }
            if !k.ips.isEmpty { entry.ips = k.ips.map(canonical) }
            gateways = k.defaultGateways.map(canonical)
        }
        for gw in gateways where !entry.gateway.contains(gw) { entry.gateway.append(gw) }
        return entry
    }

    /// The annotation value for the given entries: a compact JSON array.
    public static func encode(_ entries: [NetworkStatusEntry]) -> String {
        JSON.array(entries.map { .object($0.json()) }).serialized()
    }

    /// Shorthand for `encode(inputs.map(entry(for:)))`.
    public static func annotationValue(for inputs: [AttachmentStatusInput]) -> String {
        encode(inputs.map(entry(for:)))
    }

    /// Parses an existing annotation value (a JSON list of objects).
    public static func parse(_ value: String) throws(NetworkStatusError) -> [NetworkStatusEntry] {
        let root: JSON
        do {
            root = try JSON.parse(value)
        } catch {
            throw NetworkStatusError(index: nil, reason: error.description)
        }
        guard case .array(let items) = root else {
            throw NetworkStatusError(index: nil, reason: "expected a list, found \(root.typeName)")
        }
        var out: [NetworkStatusEntry] = []
        for (i, item) in items.enumerated() {
            guard case .object(let o) = item else {
                throw NetworkStatusError(index: i, reason: "expected an object, found \(item.typeName)")
            }
            out.append(try NetworkStatusEntry(json: o, index: i))
        }
        return out
    }

    /// `10.1.2.3/24` → `10.1.2.3`, canonicalised; unparseable text is passed through without its prefix.
    static func bareAddress(_ address: String) -> String {
        let head = address.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? address
        return canonical(head)
    }

    static func canonical(_ ip: String) -> String { IPAddress(ip)?.description ?? ip }
}
