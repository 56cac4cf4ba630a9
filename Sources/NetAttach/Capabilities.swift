import CNISpec

/// Per-attachment CNI capability arguments (CONVENTIONS.md "Well-known Capabilities") derived from a selection
/// element, and the checks NPWG requires before passing them on.
///
/// The caller injects each key into `runtimeConfig` only for plugins that declare `capabilities.<key>: true` (libcni
/// `injectRuntimeConfig`). Before that, NPWG §4.1.2.1.3-10 requires that at least one plugin of the attachment
/// declares each of `ips`, `mac`, `portMappings`, `bandwidth` and `infinibandGUID` that was requested, else the
/// attachment fails: `undeclaredRequiredCapabilities` returns the keys that violate this.
public enum CapabilityArgs {
    public static let ips = "ips"
    public static let mac = "mac"
    public static let infinibandGUID = "infinibandGUID"
    public static let portMappings = "portMappings"
    public static let bandwidth = "bandwidth"
    public static let deviceID = "deviceID"

    /// Capabilities that NPWG requires a plugin to declare when requested. `deviceID` is not among them: it is
    /// advisory and silently dropped by plugins that do not declare it.
    public static let mustBeDeclared: [String] = [ips, mac, portMappings, bandwidth, infinibandGUID]

    /// The capability arguments the element requests, in the order ips, mac, infinibandGUID, portMappings,
    /// bandwidth, deviceID; absent requests produce no key.
    public static func from(_ element: NetworkSelectionElement) -> JSONObject {
        var out = JSONObject()
        if !element.ips.isEmpty { out[ips] = .array(element.ips.map(JSON.string)) }
        if let m = element.mac { out[mac] = .string(m) }
        if let g = element.infinibandGUID { out[infinibandGUID] = .string(g) }
        if !element.portMappings.isEmpty {
            out[portMappings] = .array(element.portMappings.map { pm in
                var o = JSONObject()
                o["hostPort"] = .int(pm.hostPort)
                o["containerPort"] = .int(pm.containerPort)
                o["protocol"] = .string(pm.protocolName)
                if let h = pm.hostIP { o["hostIP"] = .string(h) }
                return .object(o)
            })
        }
        if let bw = element.bandwidth {
            var o = JSONObject()
            if let v = bw.ingressRate { o["ingressRate"] = .int(v) }
            if let v = bw.ingressBurst { o["ingressBurst"] = .int(v) }
            if let v = bw.egressRate { o["egressRate"] = .int(v) }
            if let v = bw.egressBurst { o["egressBurst"] = .int(v) }
            out[bandwidth] = .object(o)
        }
        if let d = element.deviceID { out[deviceID] = .string(d) }
        return out
    }

    /// The plugin objects of a delegate config: the `plugins` array of a conflist, or the object itself for a single
    /// conf. Non-object entries are skipped.
    public static func plugins(of config: JSONObject) -> [JSONObject] {
        if let list = config["plugins"] {
            return list.arrayValue?.compactMap(\.objectValue) ?? []
        }
        return [config]
    }

    /// Whether any plugin of the delegate config declares `capabilities.<capability> == true` (a JSON boolean).
    public static func declares(_ capability: String, in config: JSONObject) -> Bool {
        plugins(of: config).contains { $0["capabilities"]?[capability]?.boolValue == true }
    }

    /// The keys of `args` from `mustBeDeclared` that no plugin of `config` declares, in `args` order. Non-empty
    /// means the attachment must fail (NPWG "must verify ... else the entire attachment request must fail").
    public static func undeclaredRequiredCapabilities(_ args: JSONObject, in config: JSONObject) -> [String] {
        args.keys.filter { mustBeDeclared.contains($0) && !declares($0, in: config) }
    }
}

/// `cni-args` handling (NPWG §4.1.2.1.6): the annotation's object is merged into `args.cni` of every plugin.
public enum SelectionCNIArgs {
    /// Returns `config` with `cniArgs` merged into `args.cni` of each plugin (each element of `plugins` for a
    /// conflist, the object itself for a conf). The merge is one level deep: an annotation key replaces the NAD's
    /// value for that key (annotation wins), other `args.cni` keys and other `args` keys stay, in order. An empty
    /// `cniArgs` returns `config` unchanged.
    ///
    /// - Throws: when `args` or `args.cni` of a plugin exists but is not an object (it cannot be merged into
    ///   without losing data); `network` names the attachment in the error.
    public static func merge(_ cniArgs: JSONObject, into config: JSONObject, network: String)
        throws(DelegateConfigError) -> JSONObject
    {
        if cniArgs.isEmpty { return config }
        func mergeOne(_ plugin: JSONObject) throws(DelegateConfigError) -> JSONObject {
            var plugin = plugin
            var args = JSONObject()
            if let existing = plugin["args"], !existing.isNull {
                guard case .object(let o) = existing else {
                    throw DelegateConfigError(network: network, reason: "plugin \"args\" is a \(existing.typeName), not an object")
                }
                args = o
            }
            var cni = JSONObject()
            if let existing = args["cni"], !existing.isNull {
                guard case .object(let o) = existing else {
                    throw DelegateConfigError(network: network, reason: "plugin \"args.cni\" is a \(existing.typeName), not an object")
                }
                cni = o
            }
            for m in cniArgs.members { cni[m.key] = m.value }
            args["cni"] = .object(cni)
            plugin["args"] = .object(args)
            return plugin
        }
        guard let list = config["plugins"] else { return try mergeOne(config) }
        guard case .array(let items) = list else {
            throw DelegateConfigError(network: network, reason: "\"plugins\" is a \(list.typeName), not a list")
        }
        var merged: [JSON] = []
        for item in items {
            guard case .object(let p) = item else {
                throw DelegateConfigError(network: network, reason: "a \"plugins\" element is a \(item.typeName), not an object")
            }
            merged.append(.object(try mergeOne(p)))
        }
        var out = config
        out["plugins"] = .array(merged)
        return out
    }
}
