/// A CNI ADD result in a version-independent (1.1.0 superset) form, with readers and writers for every result
/// family (0.1.0/0.2.0 `ip4`/`ip6`, 0.3.x/0.4.0 `ips[].version`, 1.x). Conversions follow libcni's converters.
public struct CNIResult: Sendable, Equatable {
    public struct Interface: Sendable, Equatable {
        public var name: String
        public var mac: String?
        public var mtu: Int?
        public var sandbox: String?
        public var socketPath: String?
        public var pciID: String?
        public init(name: String, mac: String? = nil, mtu: Int? = nil, sandbox: String? = nil) {
            self.name = name
            self.mac = mac
            self.mtu = mtu
            self.sandbox = sandbox
        }
    }

    public struct IPConfig: Sendable, Equatable {
        public var address: String
        public var gateway: String?
        public var interface: Int?
        public init(address: String, gateway: String? = nil, interface: Int? = nil) {
            self.address = address
            self.gateway = gateway
            self.interface = interface
        }
        /// "4" or "6" from the address text.
        public var family: String { address.contains(":") ? "6" : "4" }
    }

    public struct Route: Sendable, Equatable {
        public var dst: String
        public var gw: String?
        public var mtu: Int?
        public var advmss: Int?
        public var priority: Int?
        public var table: Int?
        public var scope: Int?
        public init(dst: String, gw: String? = nil) {
            self.dst = dst
            self.gw = gw
        }
        var family: String { dst.contains(":") ? "6" : "4" }
    }

    public struct DNS: Sendable, Equatable {
        public var nameservers: [String] = []
        public var domain: String?
        public var search: [String] = []
        public var options: [String] = []
        public init() {}
        public var isEmpty: Bool { nameservers.isEmpty && domain == nil && search.isEmpty && options.isEmpty }
    }

    public var cniVersion: String
    public var interfaces: [Interface] = []
    public var ips: [IPConfig] = []
    public var routes: [Route] = []
    public var dns = DNS()

    public init(cniVersion: String) { self.cniVersion = cniVersion }

    // MARK: Reading

    /// Parses a result of any supported version. `defaultVersion` is stamped on results that carry no
    /// `cniVersion` (libcni `fixupResultVersion`).
    public static func parse(_ json: JSON, defaultVersion: String) throws(CNIError) -> CNIResult {
        guard let o = json.objectValue else {
            throw CNIError(.decodingFailure, "result is not a JSON object", details: json.typeName)
        }
        var versionText = o["cniVersion"]?.stringValue ?? ""
        if versionText.isEmpty { versionText = defaultVersion }
        guard let version = CNIVersion(versionText) else {
            throw CNIError(.incompatibleVersion, "unsupported CNI result version", details: versionText)
        }
        var r = CNIResult(cniVersion: versionText)
        r.dns = parseDNS(o["dns"])
        switch version.resultFamily {
        case .v02x:
            for key in ["ip4", "ip6"] {
                guard let ipo = o[key]?.objectValue else { continue }
                if let ip = ipo["ip"]?.stringValue {
                    r.ips.append(IPConfig(address: ip, gateway: ipo["gateway"]?.stringValue))
                }
                for route in ipo["routes"]?.arrayValue ?? [] {
                    if let rt = parseRoute(route) { r.routes.append(rt) }
                }
            }
        case .v04x, .v1x:
            for item in o["interfaces"]?.arrayValue ?? [] {
                guard let io = item.objectValue else { continue }
                var i = Interface(name: io["name"]?.stringValue ?? "")
                i.mac = io["mac"]?.stringValue
                i.mtu = io["mtu"]?.intValue
                i.sandbox = io["sandbox"]?.stringValue
                i.socketPath = io["socketPath"]?.stringValue
                i.pciID = io["pciID"]?.stringValue
                r.interfaces.append(i)
            }
            for item in o["ips"]?.arrayValue ?? [] {
                guard let io = item.objectValue, let addr = io["address"]?.stringValue else { continue }
                r.ips.append(IPConfig(address: addr, gateway: io["gateway"]?.stringValue, interface: io["interface"]?.intValue))
            }
            for item in o["routes"]?.arrayValue ?? [] {
                if let rt = parseRoute(item) { r.routes.append(rt) }
            }
        }
        return r
    }

    static func parseRoute(_ json: JSON) -> Route? {
        guard let o = json.objectValue, let dst = o["dst"]?.stringValue else { return nil }
        var r = Route(dst: dst, gw: o["gw"]?.stringValue)
        r.mtu = o["mtu"]?.intValue
        r.advmss = o["advmss"]?.intValue
        r.priority = o["priority"]?.intValue
        r.table = o["table"]?.intValue
        r.scope = o["scope"]?.intValue
        return r
    }

    static func parseDNS(_ json: JSON?) -> DNS {
        var d = DNS()
        guard let o = json?.objectValue else { return d }
        d.nameservers = o["nameservers"]?.arrayValue?.compactMap(\.stringValue) ?? []
        d.domain = o["domain"]?.stringValue
        d.search = o["search"]?.arrayValue?.compactMap(\.stringValue) ?? []
        d.options = o["options"]?.arrayValue?.compactMap(\.stringValue) ?? []
        return d
    }

    // MARK: Writing

    /// The result in the shape of `version`'s family, with `cniVersion` set to `version`.
    public func json(version: String) throws(CNIError) -> JSON {
        guard let v = CNIVersion(version) else {
            throw CNIError(.incompatibleVersion, "no converter for CNI result version", details: "\(cniVersion) to \(version)")
        }
        var o = JSONObject()
        o["cniVersion"] = .string(version)
        switch v.resultFamily {
        case .v02x:
            let v4 = ips.first { $0.family == "4" }
            let v6 = ips.first { $0.family == "6" }
            if v4 == nil && v6 == nil {
                throw CNIError(.incompatibleVersion, "cannot convert: no valid IP addresses", details: "to \(version)")
            }
            for (key, ip, fam) in [("ip4", v4, "4"), ("ip6", v6, "6")] {
                guard let ip else { continue }
                var io = JSONObject()
                io["ip"] = .string(ip.address)
                if let gw = ip.gateway { io["gateway"] = .string(gw) }
                let rs = routes.filter { $0.family == fam }
                if !rs.isEmpty {
                    io["routes"] = .array(rs.map { r in
                        var ro = JSONObject()
                        ro["dst"] = .string(r.dst)
                        if let gw = r.gw { ro["gw"] = .string(gw) }
                        return .object(ro)
                    })
                }
                o[key] = .object(io)
            }
        case .v04x, .v1x:
            let is1x = v.resultFamily == .v1x
            if !interfaces.isEmpty {
                o["interfaces"] = .array(interfaces.map { i in
                    var io = JSONObject()
                    io["name"] = .string(i.name)
                    if let mac = i.mac, !mac.isEmpty { io["mac"] = .string(mac) }
                    if is1x, let mtu = i.mtu, mtu != 0 { io["mtu"] = .int(mtu) }
                    if let sb = i.sandbox, !sb.isEmpty { io["sandbox"] = .string(sb) }
                    if is1x, let sp = i.socketPath, !sp.isEmpty { io["socketPath"] = .string(sp) }
                    if is1x, let pci = i.pciID, !pci.isEmpty { io["pciID"] = .string(pci) }
                    return .object(io)
                })
            }
            if !ips.isEmpty {
                o["ips"] = .array(ips.map { ip in
                    var io = JSONObject()
                    if !is1x { io["version"] = .string(ip.family) }
                    if let idx = ip.interface { io["interface"] = .int(idx) }
                    io["address"] = .string(ip.address)
                    if let gw = ip.gateway { io["gateway"] = .string(gw) }
                    return .object(io)
                })
            }
            if !routes.isEmpty {
                o["routes"] = .array(routes.map { r in
                    var ro = JSONObject()
                    ro["dst"] = .string(r.dst)
                    if let gw = r.gw { ro["gw"] = .string(gw) }
                    if let x = r.mtu { ro["mtu"] = .int(x) }
                    if let x = r.advmss { ro["advmss"] = .int(x) }
                    if let x = r.priority { ro["priority"] = .int(x) }
                    if let x = r.table { ro["table"] = .int(x) }
                    if let x = r.scope { ro["scope"] = .int(x) }
                    return .object(ro)
                })
            }
        }
        o["dns"] = dnsJSON()
        return .object(o)
    }

    func dnsJSON() -> JSON {
        var d = JSONObject()
        if !dns.nameservers.isEmpty { d["nameservers"] = .array(dns.nameservers.map { .string($0) }) }
        if let dom = dns.domain, !dom.isEmpty { d["domain"] = .string(dom) }
        if !dns.search.isEmpty { d["search"] = .array(dns.search.map { .string($0) }) }
        if !dns.options.isEmpty { d["options"] = .array(dns.options.map { .string($0) }) }
        return .object(d)
    }

    /// Converts a raw result to `version`. A result already in that version is returned unchanged (byte-for-byte
    /// values), as libcni's `Convert` does; otherwise it is parsed and re-emitted in the target family.
    public static func convert(_ json: JSON, to version: String, defaultVersion: String) throws(CNIError) -> JSON {
        var own = json["cniVersion"]?.stringValue ?? ""
        if own.isEmpty { own = defaultVersion }
        if own == version || (CNIVersion(own) != nil && CNIVersion(own) == CNIVersion(version)) {
            guard var o = json.objectValue else { throw CNIError(.decodingFailure, "result is not a JSON object") }
            o["cniVersion"] = .string(version)
            return .object(o)
        }
        return try parse(json, defaultVersion: defaultVersion).json(version: version)
    }
}

extension CNIResult {
    /// One result for several attachments of a container (what a finalizer gets as `prevResult`): each result
    /// converted to `version`'s model, their `interfaces` concatenated in order, every `ips[].interface` index moved
    /// by the number of interfaces before it, `routes` concatenated, and the first non-empty `dns` kept. Keys the
    /// model does not know are dropped. A result that cannot be converted is an error naming its position.
    public static func merge(_ results: [(result: JSON, defaultVersion: String)], to version: String) throws(CNIError) -> JSON {
        var merged = CNIResult(cniVersion: version)
        for (i, r) in results.enumerated() {
            let parsed: CNIResult
            do { parsed = try parse(r.result, defaultVersion: r.defaultVersion) } catch {
                throw error.prefixed("result \(i) of the merged result")
            }
            let offset = merged.interfaces.count
            merged.interfaces += parsed.interfaces
            merged.ips += parsed.ips.map { ip in
                var ip = ip
                // An index that points at no interface of its own result cannot be moved meaningfully: drop it.
                if let k = ip.interface { ip.interface = k >= 0 && k < parsed.interfaces.count ? k + offset : nil }
                return ip
            }
            merged.routes += parsed.routes
            if merged.dns.isEmpty { merged.dns = parsed.dns }
        }
        return try merged.json(version: version)
    }
}
