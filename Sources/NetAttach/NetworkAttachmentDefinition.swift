import CNISpec

/// A delegate configuration problem, naming the network (`ns/name` of the NAD, or whatever the caller passed).
public struct DelegateConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    public var network: String
    public var reason: String

    public init(network: String, reason: String) {
        self.network = network
        self.reason = reason
    }

    public var description: String { "network \(network): \(reason)" }
}

/// Whether a delegate config is a single plugin conf or a conflist.
public enum DelegateConfigKind: Sendable, Equatable {
    /// An object with a non-empty string `type`.
    case conf
    /// An object without `type` and with a non-empty `plugins` list whose elements each have a `type`.
    case confList
}

/// Where a NAD's delegate configuration comes from.
public enum DelegateConfigSource: Sendable, Equatable {
    /// `spec.config` parsed and validated, `name` injected; every other key kept as written, in order.
    case inline(config: JSONObject, kind: DelegateConfigKind)
    /// No `spec.config`: the caller loads the conflist (preferred, NPWG §3.4.1) or conf from the CNI config
    /// directory whose `name` equals `networkName`, and should validate it with
    /// `NetworkAttachmentDefinition.validateDelegateConfig`.
    case loadFromConfDir(networkName: String)
}

/// A NAD resolved to its delegate configuration. `network` is `namespace/name`.
public struct DelegateConfig: Sendable, Equatable {
    public var network: String
    public var source: DelegateConfigSource
    /// The NAD's `k8s.v1.cni.cncf.io/resourceName` annotation (device plugin resource), if set and non-empty.
    public var resourceName: String?

    public init(network: String, source: DelegateConfigSource, resourceName: String?) {
        self.network = network
        self.source = source
        self.resourceName = resourceName
    }
}

/// A `NetworkAttachmentDefinition` object as the API server returns it (only the fields Plexus uses).
///
/// Invariant: `name` is non-empty; `config` is `nil` when `spec.config` is absent, `null`, or blank.
public struct NetworkAttachmentDefinition: Sendable, Equatable {
    public static let resourceNameAnnotation = "k8s.v1.cni.cncf.io/resourceName"

    public var namespace: String
    public var name: String
    public var config: String?
    public var resourceName: String?

    public init(namespace: String, name: String, config: String?, resourceName: String? = nil) {
        self.namespace = namespace
        self.name = name
        self.config = config
        self.resourceName = resourceName
    }

    /// Reads `metadata.name`, `metadata.namespace` (optional, `""` if absent), the `resourceName` annotation and
    /// `spec.config` from the NAD object JSON.
    public init(json: JSON) throws(DelegateConfigError) {
        let label = "(unnamed NetworkAttachmentDefinition)"
        guard case .object(let obj) = json else {
            throw DelegateConfigError(network: label, reason: "object expected, found \(json.typeName)")
        }
        guard let meta = obj["metadata"]?.objectValue, let name = meta["name"]?.stringValue, !name.isEmpty else {
            throw DelegateConfigError(network: label, reason: "metadata.name is missing")
        }
        let namespace = meta["namespace"]?.stringValue ?? ""
        let network = "\(namespace)/\(name)"
        var resourceName: String? = nil
        if let r = meta["annotations"]?[NetworkAttachmentDefinition.resourceNameAnnotation]?.stringValue, !r.isEmpty {
            resourceName = r
        }
        var config: String? = nil
        if let spec = obj["spec"], !spec.isNull {
            guard case .object(let specObj) = spec else {
                throw DelegateConfigError(network: network, reason: "spec is a \(spec.typeName), not an object")
            }
            if let c = specObj["config"], !c.isNull {
                guard case .string(let text) = c else {
                    throw DelegateConfigError(network: network, reason: "spec.config is a \(c.typeName), not a string")
                }
                if !NetworkSelection.isBlank(text) { config = text }
            }
        }
        self.init(namespace: namespace, name: name, config: config, resourceName: resourceName)
    }

    public var qualifiedName: String { "\(namespace)/\(name)" }

    /// Resolves the delegate configuration (NPWG §3.4): `spec.config` if present, with `name` injected when it is
    /// missing, `null` or `""` (§3.4.2, as the NAD client does); otherwise a request to load `name` from the CNI
    /// config directory.
    public func delegateConfig() throws(DelegateConfigError) -> DelegateConfig {
        let network = qualifiedName
        guard let text = config else {
            return DelegateConfig(network: network, source: .loadFromConfDir(networkName: name), resourceName: resourceName)
        }
        let parsed: JSON
        do {
            parsed = try JSON.parse(text)
        } catch {
            throw DelegateConfigError(network: network, reason: "spec.config is not valid JSON: \(error.description)")
        }
        guard case .object(var obj) = parsed else {
            throw DelegateConfigError(network: network, reason: "spec.config must be a JSON object, found \(parsed.typeName)")
        }
        switch obj["name"] {
        case nil, .null?: obj["name"] = .string(name)
        case .string(let s)? where s.isEmpty: obj["name"] = .string(name)
        case .string?: break
        case let other?:
            throw DelegateConfigError(network: network, reason: "\"name\" is a \(other.typeName), not a string")
        }
        let kind = try NetworkAttachmentDefinition.validateDelegateConfig(obj, network: network)
        return DelegateConfig(network: network, source: .inline(config: obj, kind: kind), resourceName: resourceName)
    }

    /// Checks the shape of a delegate config (inline or loaded from disk) and classifies it, as Multus does: a
    /// non-empty string `type` makes a conf; otherwise it must be a conflist with a non-empty `plugins` list of
    /// objects that each have a non-empty string `type`. Every `type` is rejected if it could escape the plugin
    /// directories (contains `/`, `\`, `..` or NUL).
    public static func validateDelegateConfig(_ config: JSONObject, network: String)
        throws(DelegateConfigError) -> DelegateConfigKind
    {
        func checkType(_ value: JSON?, where place: String) throws(DelegateConfigError) -> Bool {
            guard let value, !value.isNull else { return false }
            guard case .string(let t) = value else {
                throw DelegateConfigError(network: network, reason: "\(place)type is a \(value.typeName), not a string")
            }
            if t.isEmpty { return false }
            if t.contains("/") || t.contains("\\") || t.contains("..") || t.contains("\0") {
                throw DelegateConfigError(
                    network: network,
                    reason: "\(place)type \(SelectionError.quote(t)) is not a plain plugin name (path traversal)")
            }
            return true
        }
        if try checkType(config["type"], where: "") { return .conf }
        guard let plugins = config["plugins"], !plugins.isNull else {
            throw DelegateConfigError(network: network, reason: "config has neither \"type\" nor \"plugins\"")
        }
        guard case .array(let items) = plugins else {
            throw DelegateConfigError(network: network, reason: "\"plugins\" is a \(plugins.typeName), not a list")
        }
        guard !items.isEmpty else {
            throw DelegateConfigError(network: network, reason: "\"plugins\" is empty")
        }
        for (i, item) in items.enumerated() {
            guard case .object(let p) = item else {
                throw DelegateConfigError(network: network, reason: "plugins[\(i)] is a \(item.typeName), not an object")
            }
            guard try checkType(p["type"], where: "plugins[\(i)].") else {
                throw DelegateConfigError(network: network, reason: "plugins[\(i)] has no \"type\"")
            }
        }
        return .confList
    }
}
