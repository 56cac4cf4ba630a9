import CNIInvoke
import CNISpec
import NetAttach
import PlexusCore
import SystemKit

/// One problem `plexus validate` found, at a JSON-pointer path into the document.
public struct Finding: Sendable, Equatable, CustomStringConvertible {
    public enum Severity: String, Sendable { case error, warning }
    public var severity: Severity
    public var path: String
    public var message: String

    public init(_ severity: Severity, _ path: String, _ message: String) {
        self.severity = severity
        self.path = path.isEmpty ? "/" : path
        self.message = message
    }

    public var description: String { "\(severity.rawValue): \(path): \(message)" }
}

/// Asks a plugin binary which CNI versions it supports (VERSION), or nil when it cannot tell.
public protocol VersionProbe {
    func supportedVersions(pluginPath: String, cniVersion: String) -> Result<[String], CNIError>
}

/// Runs the plugin with `CNI_COMMAND=VERSION`, as libcni does before it uses a plugin.
public struct ExecVersionProbe: VersionProbe {
    public var timeoutSeconds: Double
    public init(timeoutSeconds: Double = 10) { self.timeoutSeconds = timeoutSeconds }

    public func supportedVersions(pluginPath: String, cniVersion: String) -> Result<[String], CNIError> {
        let exec = ProcessPluginExecutor(baseEnvironment: ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], timeoutSeconds: timeoutSeconds)
        let stdin = JSON.object(JSONObject([("cniVersion", .string(cniVersion))])).serializedBytes()
        do throws(CNIError) {
            let out = try exec.execute(ExecRequest(pluginPath: pluginPath, command: "VERSION", cniPath: "", stdin: stdin))
            guard let json = try? JSON.parse(out), let list = json["supportedVersions"]?.arrayValue else {
                return .failure(CNIError(.decodingFailure, "VERSION output has no supportedVersions list"))
            }
            return .success(list.compactMap(\.stringValue))
        } catch { return .failure(error) }
    }
}

/// Validates NetworkAttachmentDefinitions, delegate network configurations and whole Plexus configurations before
/// a pod uses them. Never runs anything but the plugins' VERSION.
public struct Validator {
    public var searchPaths: [String]
    public var confDir: String?
    public var probe: any VersionProbe

    public init(searchPaths: [String], confDir: String? = nil, probe: any VersionProbe = ExecVersionProbe()) {
        self.searchPaths = searchPaths
        self.confDir = confDir
        self.probe = probe
    }

    /// Capabilities the CNI conventions document; others only draw a warning.
    static let knownCapabilities: Set<String> = [
        "portMappings", "ips", "mac", "bandwidth", "dns", "aliases", "ipRanges", "infinibandGUID", "deviceID",
        "cgroupPath", "io.kubernetes.cri.pod-annotations",
    ]

    /// Picks the kind of document: a NAD (`kind`), a Plexus configuration (a plugin of type `plexus`), or a
    /// delegate network configuration.
    public func validate(document: JSON) -> [Finding] {
        guard let o = document.objectValue else { return [Finding(.error, "", "the document is a \(document.typeName), not an object")] }
        if o["kind"] != nil || o["apiVersion"] != nil { return validateNAD(o) }
        if let (i, inner) = Validator.plexusPlugin(in: o) {
            guard let i else { return validatePlexus(inner, at: "") }
            var findings = validateNetwork(o, at: "", probeTypes: false)
            findings += validatePlexus(inner, at: "/plugins/\(i)")
            if (o["plugins"]?.arrayValue?.count ?? 0) > 1 {
                findings.append(Finding(.warning, "/plugins", "plugins after \"plexus\" are chained to the cluster network's result only"))
            }
            return findings
        }
        return validateNetwork(o, at: "")
    }

    /// The Plexus plugin object of a conf (`index` nil) or conflist (its position in `plugins`), with `name` and
    /// `cniVersion` filled in from the list as the runtime does before Plexus sees it.
    public static func plexusPlugin(in o: JSONObject) -> (index: Int?, object: JSONObject)? {
        if o["type"]?.stringValue == "plexus" { return (nil, o) }
        guard let plugins = o["plugins"]?.arrayValue,
              let i = plugins.firstIndex(where: { $0["type"]?.stringValue == "plexus" }), var p = plugins[i].objectValue
        else { return nil }
        if p["name"] == nil { p["name"] = o["name"] }
        if p["cniVersion"] == nil { p["cniVersion"] = o["cniVersion"] }
        return (i, p)
    }

    // MARK: NetworkAttachmentDefinition

    public func validateNAD(_ o: JSONObject) -> [Finding] {
        var f: [Finding] = []
        if o["apiVersion"]?.stringValue != "k8s.cni.cncf.io/v1" {
            f.append(Finding(.error, "/apiVersion", "must be \"k8s.cni.cncf.io/v1\", got \(describe(o["apiVersion"]))"))
        }
        if o["kind"]?.stringValue != "NetworkAttachmentDefinition" {
            f.append(Finding(.error, "/kind", "must be \"NetworkAttachmentDefinition\", got \(describe(o["kind"]))"))
        }
        let meta = o["metadata"]?.objectValue ?? JSONObject()
        let name = meta["name"]?.stringValue ?? ""
        if !KubernetesNames.isDNS1123Subdomain(name) {
            f.append(Finding(.error, "/metadata/name", "must be a DNS-1123 subdomain (lowercase alphanumerics, '-', '.'), got \(describe(meta["name"]))"))
        }
        if let ns = meta["namespace"], !(ns.stringValue.map { KubernetesNames.isDNS1123Label($0) } ?? false) {
            f.append(Finding(.error, "/metadata/namespace", "must be a DNS-1123 label, got \(describe(ns))"))
        }
        if let ann = meta["annotations"], ann.objectValue == nil {
            f.append(Finding(.error, "/metadata/annotations", "must be an object of strings"))
        }
        let rnKey = NetworkAttachmentDefinition.resourceNameAnnotation
        if let rn = meta["annotations"]?[rnKey] {
            let path = "/metadata/annotations/" + rnKey.replacingSlashes
            if let s = rn.stringValue {
                if let problem = Validator.resourceNameProblem(s) { f.append(Finding(.error, path, problem)) }
            } else {
                f.append(Finding(.error, path, "must be a string"))
            }
        }
        let spec = o["spec"]
        if spec != nil && spec?.objectValue == nil { f.append(Finding(.error, "/spec", "must be an object")) }
        switch spec?["config"] {
        case nil, .null?:
            f += confDirLookup(name: name, at: "/spec/config")
        case .string(let text) where text.trimmingSpaces.isEmpty:
            f += confDirLookup(name: name, at: "/spec/config")
        case .string(let text):
            guard let inner = try? JSON.parse(text), var io = inner.objectValue else {
                f.append(Finding(.error, "/spec/config", "is not a JSON object (a string holding the network configuration)"))
                break
            }
            // The NAD's name stands in for a missing network name, as the NAD client does.
            if io["name"] == nil { io["name"] = .string(name) }
            f += validateNetwork(io, at: "/spec/config")
        case let v?:
            f.append(Finding(.error, "/spec/config", "must be a string holding JSON, got \(v.typeName)"))
        }
        return f
    }

    func confDirLookup(name: String, at path: String) -> [Finding] {
        guard let confDir else {
            return [Finding(.warning, path, "empty: the network \"\(name)\" is loaded from confDir on the node (pass --conf-dir to check it)")]
        }
        switch Result(catching: { () throws(CNIError) in try NetworkLoader(confDir: confDir).find(name: name) }) {
        case .success(let list?):
            return validateNetwork(list.raw, at: path).map { Finding($0.severity, $0.path, "\($0.message) (from confDir)") }
        case .success(nil):
            return [Finding(.error, path, "empty, and no file in \(confDir) declares network \"\(name)\"")]
        case .failure(let e):
            return [Finding(.error, path, e.description)]
        }
    }

    /// `k8s.v1.cni.cncf.io/resourceName`: an extended resource name, `<domain>/<name>` (e.g.
    /// `intel.com/intel_sriov_netdevice`).
    static func resourceNameProblem(_ s: String) -> String? {
        let parts = s.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2 else { return "must be <domain>/<resource>, got \"\(CNIValidation.visible(s))\"" }
        if !KubernetesNames.isDNS1123Subdomain(parts[0]) {
            return "the domain \"\(CNIValidation.visible(String(parts[0])))\" is not a DNS-1123 subdomain"
        }
        let rest = parts[1].utf8
        let ok = !rest.isEmpty && rest.count <= 63 && rest.allSatisfy { b in
            (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122) || b == 0x2D || b == 0x5F || b == 0x2E
        } && CNIValidation.isValidIdentifier(String(parts[1]))
        return ok ? nil : "the resource \"\(CNIValidation.visible(String(parts[1])))\" must be 1-63 alphanumerics, '-', '_' or '.'"
    }

    // MARK: Network configurations

    /// A conf or conflist as the delegates would get it.
    public func validateNetwork(_ o: JSONObject, at base: String, probeTypes: Bool = true) -> [Finding] {
        var f: [Finding] = []
        switch o["name"] {
        case .string(let n)? where CNIValidation.isValidIdentifier(n): break
        case let v:
            f.append(Finding(.error, base + "/name", "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*, got \(describe(v))"))
        }
        var version = ""
        switch o["cniVersion"] {
        case .string(let v)?:
            version = v
            if !CNIVersion.supported.contains(v) {
                f.append(Finding(.error, base + "/cniVersion", "\"\(CNIValidation.visible(v))\" is not a supported version (\(CNIVersion.supported.joined(separator: ", ")))"))
            }
        case nil, .null?:
            f.append(Finding(.warning, base + "/cniVersion", "missing: the plugins get 0.1.0"))
            version = "0.1.0"
        case let v?:
            f.append(Finding(.error, base + "/cniVersion", "must be a string, got \(v.typeName)"))
        }
        let plugins: [(JSON, String)]
        if let list = o["plugins"] {
            guard let arr = list.arrayValue, !arr.isEmpty else {
                return f + [Finding(.error, base + "/plugins", "must be a non-empty list of plugin objects")]
            }
            plugins = arr.enumerated().map { ($1, base + "/plugins/\($0)") }
        } else {
            plugins = [(.object(o), base)]
        }
        for (p, at) in plugins {
            guard let po = p.objectValue else {
                f.append(Finding(.error, at, "must be an object, got \(p.typeName)"))
                continue
            }
            f += validatePlugin(po, at: at, cniVersion: version, probe: probeTypes)
        }
        // Anything the checks above did not name but Plexus would still refuse.
        if !f.contains(where: { $0.severity == .error }) {
            do throws(CNIError) { _ = try NetworkConfigList(json: .object(o), source: "document") } catch {
                f.append(Finding(.error, base, error.description))
            }
        }
        return f
    }

    func validatePlugin(_ p: JSONObject, at: String, cniVersion: String, probe: Bool) -> [Finding] {
        var f: [Finding] = []
        guard case .string(let type)? = p["type"] else {
            return [Finding(.error, at + "/type", "missing or not a string")]
        }
        do throws(CNIError) { try CNIValidation.validatePluginType(type) } catch {
            return [Finding(.error, at + "/type", error.description)]
        }
        if let caps = p["capabilities"] {
            if let co = caps.objectValue {
                for m in co.members {
                    if m.value.boolValue == nil {
                        f.append(Finding(.error, at + "/capabilities/" + m.key.replacingSlashes, "must be true or false"))
                    } else if !Validator.knownCapabilities.contains(m.key) {
                        f.append(Finding(.warning, at + "/capabilities/" + m.key.replacingSlashes, "not a capability any runtime is known to send"))
                    }
                }
            } else {
                f.append(Finding(.error, at + "/capabilities", "must be an object of booleans"))
            }
        }
        guard probe, type != "plexus" else { return f }
        // The same lookup the plugin does on ADD.
        let path: String
        do throws(CNIError) { path = try ProcessPluginExecutor(baseEnvironment: [], timeoutSeconds: 1).find(type, in: searchPaths) } catch {
            return f + [Finding(.error, at + "/type", "plugin \"\(type)\" not found in \(searchPaths.joined(separator: ":"))")]
        }
        guard CNIVersion.supported.contains(cniVersion) else { return f }
        switch self.probe.supportedVersions(pluginPath: path, cniVersion: cniVersion) {
        case .success(let versions) where !versions.contains(cniVersion):
            f.append(Finding(.error, at + "/type", "\(path) does not support cniVersion \(cniVersion) (it supports \(versions.joined(separator: ", ")))"))
        case .failure(let e):
            f.append(Finding(.error, at + "/type", "\(path) did not answer VERSION: \(e.description)"))
        default: break
        }
        return f
    }

    // MARK: Plexus configuration

    public func validatePlexus(_ o: JSONObject, at base: String) -> [Finding] {
        let config: PlexusConfig
        do throws(CNIError) { config = try PlexusConfig(json: .object(o)) } catch {
            return [Finding(.error, base + Validator.keyPath(in: error.msg), error.description)]
        }
        var f = config.settingProblems.map { Finding(.error, base + Validator.keyPath(in: $0.msg), $0.description) }
        if !CNIVersion.supported.contains(config.cniVersion.isEmpty ? "0.1.0" : config.cniVersion) {
            f.append(Finding(.error, base + "/cniVersion", "\"\(config.cniVersion)\" is not a supported version"))
        }
        let checker = Validator(searchPaths: config.searchPaths(cniPath: searchPaths.joined(separator: ":")),
                                confDir: config.confDir, probe: probe)
        var clusterPlugins: [JSONObject] = []
        if let cluster = config.clusterNetwork {
            f += checker.reference(cluster, at: base + "/clusterNetwork", multusNamespace: config.multusNamespace, plugins: &clusterPlugins)
        } else {
            for (i, d) in config.delegates.enumerated() {
                guard let dobj = d.objectValue else { continue }
                f += checker.validateNetwork(dobj, at: base + "/delegates/\(i)")
                if i == 0 {
                    clusterPlugins = (dobj["plugins"]?.arrayValue?.compactMap(\.objectValue)) ?? [dobj]
                }
            }
        }
        for (i, name) in config.defaultNetworks.enumerated() {
            var ignored: [JSONObject] = []
            f += checker.reference(name, at: base + "/defaultNetworks/\(i)", multusNamespace: config.multusNamespace, plugins: &ignored)
        }
        // Finalizers: the configuration's list, then the drop-in directory (each found and VERSION-probed like a
        // delegate), and the auxiliary chain's directory.
        for (i, fin) in config.finalizers.enumerated() {
            let version = fin["cniVersion"]?.stringValue ?? config.cniVersion
            f += checker.validatePlugin(fin, at: base + "/finalizers/\(i)", cniVersion: version, probe: true)
        }
        let finalizeDir = Finalizers.directory(config: config)
        do throws(CNIError) {
            for file in try PluginConfFiles.load(directory: finalizeDir) {
                let version = file.plugin["cniVersion"]?.stringValue ?? config.cniVersion
                f += checker.validatePlugin(file.plugin, at: file.path, cniVersion: version, probe: true)
            }
        } catch { f.append(Finding(.error, finalizeDir, error.description)) }
        do throws(CNIError) {
            if let aux = try LocalPlanner.auxiliaryChain(config: config) {
                for (i, p) in aux.plugins.enumerated().dropFirst() {
                    f += checker.validatePlugin(p, at: base + "/auxiliaryCNIChainName/\(i)", cniVersion: aux.cniVersion, probe: true)
                }
            }
        } catch { f.append(Finding(.error, base + "/auxiliaryCNIChainName", error.description)) }
        // The runtime sends only what Plexus declares; Plexus passes it to the cluster network's plugins.
        let declared = Set(config.capabilities.members.filter { $0.value.boolValue == true }.map(\.key))
        var wanted = Set<String>()
        for p in clusterPlugins {
            for m in p["capabilities"]?.objectValue?.members ?? [] where m.value.boolValue == true { wanted.insert(m.key) }
        }
        for c in wanted.subtracting(declared).sorted() {
            f.append(Finding(.warning, base + "/capabilities", "the cluster network wants \"\(c)\" but Plexus does not declare it, so the runtime will not send it"))
        }
        for c in declared.subtracting(wanted).sorted() {
            f.append(Finding(.warning, base + "/capabilities/\(c.replacingSlashes)", "declared, but no plugin of the cluster network uses it"))
        }
        return f
    }

    func reference(_ ref: String, at path: String, multusNamespace: String, plugins: inout [JSONObject]) -> [Finding] {
        let loader = NetworkLoader(confDir: confDir ?? "")
        if !ref.contains("/") {
            switch Result(catching: { () throws(CNIError) in try loader.find(name: ref) }) {
            case .success(nil):
                return [Finding(.warning, path, "no file in \(loader.confDir) declares \"\(ref)\": it must be a NAD in namespace \(multusNamespace)")]
            case .failure(let e): return [Finding(.error, path, e.description)]
            case .success(let list?):
                plugins = list.plugins
                return validateNetwork(list.raw, at: path).map { Finding($0.severity, path, "\($0.path.dropFirst(path.count)): \($0.message)") }
            }
        }
        do throws(CNIError) {
            let list = try loader.load(reference: ref)
            plugins = list.plugins
            return validateNetwork(list.raw, at: path).map { Finding($0.severity, path, "\($0.path.dropFirst(path.count)): \($0.message)") }
        } catch { return [Finding(.error, path, error.description)] }
    }

    /// Plexus' configuration errors quote the key: `configuration key "delegates" must …`.
    static func keyPath(in message: String) -> String {
        let marker = Array("key \"".utf8)
        let bytes = Array(message.utf8)
        guard bytes.count > marker.count else { return "" }
        for i in 0...(bytes.count - marker.count) where Array(bytes[i..<(i + marker.count)]) == marker {
            let rest = bytes[(i + marker.count)...]
            guard let end = rest.firstIndex(of: UInt8(ascii: "\"")) else { return "" }
            return "/" + String(decoding: rest[..<end], as: UTF8.self).replacingSlashes
        }
        return ""
    }

    func describe(_ v: JSON?) -> String {
        switch v {
        case nil: return "nothing"
        case .string(let s)?: return "\"\(CNIValidation.visible(s))\""
        case let v?: return v.typeName
        }
    }
}

extension String {
    /// A JSON-pointer segment: `~` and `/` escaped (RFC 6901).
    var replacingSlashes: String {
        var out = ""
        for c in self {
            switch c {
            case "~": out += "~0"
            case "/": out += "~1"
            default: out.append(c)
            }
        }
        return out
    }
}

extension Result where Failure == CNIError {
    init(catching body: () throws(CNIError) -> Success) {
        do { self = .success(try body()) } catch { self = .failure(error) }
    }
}
