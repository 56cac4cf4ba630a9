/// A network configuration list, kept lossless: the list object and each plugin object stay as parsed, so keys
/// Plexus does not know reach the delegate unchanged.
public struct NetworkConfigList: Sendable, Equatable {
    /// The list object as loaded (for a single `.conf`, the libcni up-conversion `{cniVersion,name,plugins:[conf]}`).
    public var raw: JSONObject
    public var name: String
    /// The version selected from `cniVersion`/`cniVersions` (libcni rules).
    public var cniVersion: String
    public var disableCheck: Bool
    public var disableGC: Bool
    /// libcni 1.3: when true, plugin confs from the network's drop-in directory are not appended.
    public var loadOnlyInlinedPlugins: Bool
    public var plugins: [JSONObject]

    /// Parses a conf (object with `type`) or a conflist (object with `plugins`). `source` names the origin for
    /// error messages (a file path, `NAD ns/name`, `delegates[1]`).
    public init(json: JSON, source: String) throws(CNIError) {
        guard var o = json.objectValue else {
            throw CNIError(.invalidNetworkConfig, "network configuration is not a JSON object", details: source)
        }
        // libcni: `loadOnlyInlinedPlugins` cannot be true without a `plugins` list (checked before the up-conversion
        // of a single conf, which would otherwise invent one).
        let loadOnlyInlined = try NetworkConfigList.flag(o["loadOnlyInlinedPlugins"], key: "loadOnlyInlinedPlugins", source: source)
        if loadOnlyInlined && o["plugins"] == nil {
            throw CNIError(.invalidNetworkConfig, "\"loadOnlyInlinedPlugins\" is true and there is no \"plugins\" list", details: source)
        }
        loadOnlyInlinedPlugins = loadOnlyInlined
        if o["plugins"] == nil {
            guard o["type"] != nil else {
                throw CNIError(.invalidNetworkConfig, "network configuration has neither \"type\" nor \"plugins\"", details: source)
            }
            var list = JSONObject()
            list["cniVersion"] = o["cniVersion"] ?? .string("")
            list["name"] = o["name"] ?? .string("")
            for key in ["disableCheck", "disableGC"] where o[key] != nil { list[key] = o[key] }
            list["plugins"] = .array([.object(o)])
            o = list
        }
        guard case .string(let name)? = o["name"] else {
            throw CNIError(.invalidNetworkConfig, "missing network name", details: source)
        }
        try CNIValidation.validateNetworkName(name)
        let versionText: String
        switch o["cniVersion"] {
        case .string(let s)?: versionText = s
        case nil, .null?: versionText = ""
        default: throw CNIError(.invalidNetworkConfig, "\"cniVersion\" must be a string", details: source)
        }
        var versions: [String]?
        if let vs = o["cniVersions"] {
            guard let arr = vs.arrayValue, arr.allSatisfy({ $0.stringValue != nil }) else {
                throw CNIError(.invalidNetworkConfig, "\"cniVersions\" must be a list of strings", details: source)
            }
            versions = arr.compactMap(\.stringValue)
        }
        switch CNIVersion.select(cniVersion: versionText, cniVersions: versions) {
        case .success(let v): cniVersion = v
        case .failure(let e): throw e.prefixed(source)
        }
        guard let arr = o["plugins"]?.arrayValue, !arr.isEmpty else {
            throw CNIError(.invalidNetworkConfig, "no plugin configs found", details: source)
        }
        var plugins: [JSONObject] = []
        for (i, p) in arr.enumerated() {
            guard let po = p.objectValue, let type = po["type"]?.stringValue else {
                throw CNIError(.invalidNetworkConfig, "plugin \(i) has no \"type\"", details: source)
            }
            try CNIValidation.validatePluginType(type)
            plugins.append(po)
        }
        self.plugins = plugins
        self.raw = o
        self.name = name
        disableCheck = try NetworkConfigList.flag(o["disableCheck"], key: "disableCheck", source: source)
        disableGC = try NetworkConfigList.flag(o["disableGC"], key: "disableGC", source: source)
    }

    public init(bytes: [UInt8], source: String) throws(CNIError) {
        let json: JSON
        do { json = try JSON.parse(bytes) } catch {
            throw CNIError(.decodingFailure, "cannot parse network configuration \(source)", details: error.description)
        }
        try self.init(json: json, source: source)
    }

    /// libcni accepts booleans or the strings "true"/"false" (any case).
    static func flag(_ v: JSON?, key: String, source: String) throws(CNIError) -> Bool {
        switch v {
        case nil, .null?: return false
        case .bool(let b)?: return b
        case .string(let s)? where s.lowercased() == "true": return true
        case .string(let s)? where s.lowercased() == "false": return false
        default: throw CNIError(.invalidNetworkConfig, "\"\(key)\" must be a boolean", details: source)
        }
    }

    /// The list with its version set to the selected one: the bytes Plexus caches and replays.
    public var bytes: [UInt8] { JSON.object(raw).serializedBytes() }

    public var version: CNIVersion { CNIVersion(cniVersion) ?? CNIVersion.v010 }

    public func pluginType(_ index: Int) -> String { plugins[index]["type"]?.stringValue ?? "" }

    /// Builds the stdin for plugin `index`, as libcni's `buildOneConfig` does: `name` and `cniVersion` are set,
    /// `runtimeConfig` receives the capability arguments the plugin declares (replacing a static one, only if
    /// non-empty), and `prevResult` is added when given. Every other key passes through in its original order.
    public func request(plugin index: Int, prevResult: JSON?, capabilityArgs: JSONObject) -> [UInt8] {
        var p = plugins[index]
        p["name"] = .string(name)
        p["cniVersion"] = .string(cniVersion)
        let rc = NetworkConfigList.runtimeConfig(for: p, capabilityArgs: capabilityArgs)
        if !rc.isEmpty { p["runtimeConfig"] = .object(rc) }
        if let prevResult { p["prevResult"] = prevResult }
        return JSON.object(p).serializedBytes()
    }

    /// The GC stdin for plugin `index`: `name`, `cniVersion` and the valid attachments under both the current
    /// (`cni.dev/valid-attachments`) and the 1.1.0-tag (`cni.dev/attachments`) keys.
    public func gcRequest(plugin index: Int, validAttachments: [(containerID: String, ifname: String)]) -> [UInt8] {
        var p = plugins[index]
        p["name"] = .string(name)
        p["cniVersion"] = .string(cniVersion)
        let list = JSON.array(validAttachments.map { a in
            .object(JSONObject([("containerID", .string(a.containerID)), ("ifname", .string(a.ifname))]))
        })
        p["cni.dev/valid-attachments"] = list
        p["cni.dev/attachments"] = list
        return JSON.object(p).serializedBytes()
    }

    /// The STATUS stdin for plugin `index`.
    public func statusRequest(plugin index: Int) -> [UInt8] {
        var p = plugins[index]
        p["name"] = .string(name)
        p["cniVersion"] = .string(cniVersion)
        return JSON.object(p).serializedBytes()
    }

    /// Capability arguments filtered by the plugin's `capabilities` map (only keys set to `true`).
    public static func runtimeConfig(for plugin: JSONObject, capabilityArgs: JSONObject) -> JSONObject {
        var rc = JSONObject()
        guard let caps = plugin["capabilities"]?.objectValue else { return rc }
        for m in capabilityArgs.members where caps[m.key]?.boolValue == true {
            rc[m.key] = m.value
        }
        return rc
    }
}

/// Standard base64 (RFC 4648 with padding), used by libcni's cache format for the config bytes.
public enum Base64 {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i + 3 <= bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            for s in [18, 12, 6, 0] { out.append(alphabet[Int((n >> UInt32(s)) & 63)]) }
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out.append(alphabet[Int((n >> 18) & 63)])
            out.append(alphabet[Int((n >> 12) & 63)])
            out.append(UInt8(ascii: "="))
            out.append(UInt8(ascii: "="))
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out.append(alphabet[Int((n >> 18) & 63)])
            out.append(alphabet[Int((n >> 12) & 63)])
            out.append(alphabet[Int((n >> 6) & 63)])
            out.append(UInt8(ascii: "="))
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes padded or unpadded base64; whitespace is ignored. Returns nil on any invalid character, data after
    /// padding, or a dangling sextet.
    public static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count * 3 / 4)
        var acc: UInt32 = 0
        var bits = 0
        var padding = 0
        for c in text.utf8 {
            let v: UInt32
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): v = UInt32(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): v = UInt32(c - UInt8(ascii: "a") + 26)
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = UInt32(c - UInt8(ascii: "0") + 52)
            case UInt8(ascii: "+"): v = 62
            case UInt8(ascii: "/"): v = 63
            case UInt8(ascii: "="): padding += 1; continue
            case 0x20, 0x09, 0x0A, 0x0D: continue
            default: return nil
            }
            if padding > 0 { return nil }
            acc = acc << 6 | v
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8((acc >> UInt32(bits)) & 0xFF))
            }
        }
        if bits >= 6 || padding > 2 { return nil }
        return out
    }
}
