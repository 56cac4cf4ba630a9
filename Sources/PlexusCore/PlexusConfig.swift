import CNISpec
import SystemKit

/// Plexus' own configuration: the plugin object (`"type": "plexus"`) the runtime hands over on stdin. It accepts
/// Multus' keys unchanged; unknown keys are ignored, known keys with a wrong type are a code-7 error naming the key.
public struct PlexusConfig: Sendable {
    public var name: String
    public var cniVersion: String
    public var type: String

    public var delegates: [JSON] = []
    public var clusterNetwork: String?
    public var defaultNetworks: [String] = []
    public var confDir = "/etc/cni/multus/net.d"
    public var cniDir = "/var/lib/cni/multus"
    public var binDir = "/opt/cni/bin"
    public var logFile: String?
    public var logLevel: String?
    public var logToStderr = true
    public var readinessIndicatorFile: String?
    public var capabilities = JSONObject()
    public var systemNamespaces = ["kube-system"]
    public var namespaceIsolation = false
    public var globalNamespaces = ["default"]
    public var multusNamespace = "kube-system"
    public var kubeconfig: String?

    /// Plexus extensions.
    public var delegateTimeoutSeconds = 60.0
    public var readinessTimeoutSeconds = 45.0
    /// Upper bound for each phase of an ADD's Kubernetes API work, requests and retries included: reading the pod
    /// and its NADs, then writing network-status (delegate time does not count).
    public var apiDeadlineSeconds = 30.0
    /// Tear independent networks down concurrently on DEL and rollback (each chain still in reverse order).
    public var parallelTeardown = true
    /// Attach the networks after the cluster network concurrently on ADD (each chain still in order).
    public var parallelAttach = true

    /// Device plugins: the kubelet's PodResources v1 socket, the device-manager checkpoint read when that socket is
    /// absent, the device-info base directory (`dp/` from device plugins, `cni/` written by Plexus) and the bound on
    /// finding a pod's devices (retries included).
    public var podResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"
    public var kubeletCheckpoint = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint"
    public var deviceInfoDir = "/var/run/k8s.cni.cncf.io/devinfo"
    public var podResourcesDeadlineSeconds = 10.0
    /// KEP-4817: write `networkData` (interface, IPs, MAC) and a `Ready` condition into the `status.devices` of the
    /// ResourceClaims whose devices Plexus attached (server-side apply, one field manager per attachment).
    public var draPublishNetworkData = false

    /// The node daemon's socket (`plexus-daemon`): ADDs are forwarded there and run locally when nobody answers
    /// within `daemonAdmitMilliseconds`. nil: every call runs in this process. DEL never goes to the daemon.
    public var daemonSocket: String?
    public var daemonAdmitMilliseconds = 500

    /// Multus' auxiliary chain: `{"type":"plexus-passthru"}` plus the plugin confs of `<baseDirectory>/<name>/`,
    /// attached after every other network when that directory holds any.
    public var auxiliaryCNIChainName: String?
    /// Finalizer plugin objects from the configuration (each with a `type`); those of `<baseDirectory>/_finalize.d/`
    /// run after them.
    public var finalizers: [JSONObject] = []

    /// The longest duration a timeout key accepts (one day): anything longer is a mistake, and far beyond it the
    /// value would no longer fit a deadline in nanoseconds.
    public static let maximumDurationSeconds = 86_400.0

    /// Tuning keys with a value Plexus cannot use (wrong type, not positive, too large), each left at its default.
    /// ADD, CHECK and STATUS refuse such a configuration (code 7); DEL and GC log it and go on with the
    /// defaults, so teardown always proceeds.
    public var settingProblems: [CNIError] = []

    /// Injected by the runtime.
    public var runtimeConfig = JSONObject()
    public var prevResult: JSON?
    /// `cni.dev/valid-attachments` (or the 1.1.0-tag `cni.dev/attachments`) on GC.
    public var validAttachments: [(containerID: String, ifname: String)]?

    /// The raw object, for error messages and for tools.
    public var raw: JSONObject

    public init(bytes: [UInt8]) throws(CNIError) {
        let json: JSON
        do { json = try JSON.parse(bytes) } catch {
            throw CNIError(.decodingFailure, "cannot parse Plexus configuration from stdin", details: error.description)
        }
        try self.init(json: json)
    }

    public init(json: JSON) throws(CNIError) {
        guard let o = json.objectValue else {
            throw CNIError(.decodingFailure, "Plexus configuration is not a JSON object", details: json.typeName)
        }
        raw = o
        let r = KeyReader(object: o)
        name = try r.string("name") ?? ""
        try CNIValidation.validateNetworkName(name)
        cniVersion = try r.string("cniVersion") ?? ""
        type = try r.string("type") ?? ""
        delegates = try r.array("delegates") ?? []
        for (i, d) in delegates.enumerated() where d.objectValue == nil {
            throw CNIError(.invalidNetworkConfig, "configuration key \"delegates\" must hold objects", details: "element \(i) is \(d.typeName)")
        }
        clusterNetwork = try r.string("clusterNetwork").flatMap { $0.isEmpty ? nil : $0 }
        defaultNetworks = try r.stringList("defaultNetworks") ?? []
        if let v = try r.string("confDir"), !v.isEmpty { confDir = v }
        if let v = try r.string("cniDir"), !v.isEmpty { cniDir = v }
        if let v = try r.string("binDir"), !v.isEmpty { binDir = v }
        logFile = try r.string("logFile").flatMap { $0.isEmpty ? nil : $0 }
        logLevel = try r.string("logLevel").flatMap { $0.isEmpty ? nil : $0 }
        if let v = try r.bool("logToStderr") { logToStderr = v }
        readinessIndicatorFile = try r.string("readinessindicatorfile").flatMap { $0.isEmpty ? nil : $0 }
        if let v = try r.object("capabilities") { capabilities = v }
        if let v = try r.stringList("systemNamespaces") { systemNamespaces = v }
        if let v = try r.bool("namespaceIsolation") { namespaceIsolation = v }
        // Multus takes a comma-separated string here; a list is accepted too.
        if let v = o["globalNamespaces"] {
            switch v {
            case .string(let s):
                globalNamespaces = s.split(separator: ",").map { $0.trimmingSpaces }.filter { !$0.isEmpty }
            case .array:
                globalNamespaces = try r.stringList("globalNamespaces") ?? []
            case .null: break
            default: throw KeyReader.typeError("globalNamespaces", expected: "a comma-separated string", got: v)
            }
        }
        if let v = try r.string("multusNamespace"), !v.isEmpty { multusNamespace = v }
        kubeconfig = try r.string("kubeconfig").flatMap { $0.isEmpty ? nil : $0 }
        func duration(_ key: String, _ value: inout Double) {
            do throws(CNIError) {
                if let v = try r.duration(key, maximum: PlexusConfig.maximumDurationSeconds) { value = v }
            } catch { settingProblems.append(error) }
        }
        duration("delegateTimeoutSeconds", &delegateTimeoutSeconds)
        duration("readinessTimeoutSeconds", &readinessTimeoutSeconds)
        duration("apiDeadlineSeconds", &apiDeadlineSeconds)
        if let v = try r.bool("parallelTeardown") { parallelTeardown = v }
        if let v = try r.bool("parallelAttach") { parallelAttach = v }
        if let v = try r.bool("draPublishNetworkData") { draPublishNetworkData = v }
        daemonSocket = try r.string("daemonSocket").flatMap { $0.isEmpty ? nil : $0 }
        do throws(CNIError) {
            if let v = try r.duration("daemonAdmitSeconds", maximum: 60) { daemonAdmitMilliseconds = max(1, Int(v * 1000)) }
        } catch { settingProblems.append(error) }
        if let v = try r.string("podResourcesSocket"), !v.isEmpty { podResourcesSocket = v }
        if let v = try r.string("kubeletCheckpoint"), !v.isEmpty { kubeletCheckpoint = v }
        if let v = try r.string("deviceInfoDir"), !v.isEmpty { deviceInfoDir = v }
        duration("podResourcesDeadlineSeconds", &podResourcesDeadlineSeconds)
        auxiliaryCNIChainName = try r.string("auxiliaryCNIChainName").flatMap { $0.isEmpty ? nil : $0 }
        if let aux = auxiliaryCNIChainName {
            // It names a directory: the network-name rules keep it a single path component.
            do { try CNIValidation.validateNetworkName(aux) } catch {
                throw CNIError(.invalidNetworkConfig, "configuration key \"auxiliaryCNIChainName\" is not a valid network name", details: aux)
            }
        }
        for (i, f) in (try r.array("finalizers") ?? []).enumerated() {
            guard let o = f.objectValue, let type = o["type"]?.stringValue, !type.isEmpty else {
                throw CNIError(.invalidNetworkConfig, "configuration key \"finalizers\" must hold plugin objects with a \"type\"",
                               details: "element \(i)")
            }
            do { try CNIValidation.validatePluginType(type) } catch { throw error.prefixed("finalizers[\(i)]") }
            finalizers.append(o)
        }
        if let v = try r.object("runtimeConfig") { runtimeConfig = v }
        prevResult = o["prevResult"].flatMap { $0.isNull ? nil : $0 }
        if let list = o["cni.dev/valid-attachments"] ?? o["cni.dev/attachments"], !list.isNull {
            guard let arr = list.arrayValue else {
                throw KeyReader.typeError("cni.dev/valid-attachments", expected: "a list", got: list)
            }
            var valid: [(String, String)] = []
            for item in arr {
                guard let cid = item["containerID"]?.stringValue, let ifn = item["ifname"]?.stringValue else {
                    throw CNIError(.invalidNetworkConfig, "cni.dev/valid-attachments entries need \"containerID\" and \"ifname\"",
                                   details: item.serialized())
                }
                valid.append((cid, ifn))
            }
            validAttachments = valid
        }
        // Paths and network references reach the C boundary: no NUL or control characters. The directories and
        // files must be absolute: a relative one would resolve against whatever directory the runtime happens to
        // run Plexus in (podman's cleanup runs from conmon's), so a DEL would not find what the ADD cached.
        for (key, value) in [("confDir", confDir), ("cniDir", cniDir), ("binDir", binDir), ("logFile", logFile ?? ""),
                             ("readinessindicatorfile", readinessIndicatorFile ?? ""), ("kubeconfig", kubeconfig ?? ""),
                             ("podResourcesSocket", podResourcesSocket), ("kubeletCheckpoint", kubeletCheckpoint),
                             ("deviceInfoDir", deviceInfoDir), ("daemonSocket", daemonSocket ?? "")] {
            try CNIValidation.validatePath(value, key: key)
            if !value.isEmpty && !value.hasPrefix("/") {
                throw CNIError(.invalidNetworkConfig, "configuration key \"\(key)\" must be an absolute path", details: value)
            }
        }
        try CNIValidation.validatePath(clusterNetwork ?? "", key: "clusterNetwork")
        for v in defaultNetworks { try CNIValidation.validatePath(v, key: "defaultNetworks") }
        if delegates.isEmpty && clusterNetwork == nil {
            throw CNIError(.invalidNetworkConfig, "at least one of \"delegates\" or \"clusterNetwork\" must be set", details: name)
        }
    }

    /// The directory drop-ins next to the cluster network live in (`_finalize.d/`, the auxiliary chain's directory):
    /// the directory of `clusterNetwork` when it is a file path, `clusterNetwork` itself when it is a directory path,
    /// `confDir` otherwise (a network name, inline `delegates`). A function of the configuration alone, so a pod's
    /// default-network annotation never changes which finalizers run.
    public var baseDirectory: String {
        guard let cluster = clusterNetwork, cluster.contains("/") else { return confDir }
        if cluster.hasSuffix("/") { return String(cluster.dropLast()) }
        return FileSystem.isDirectory(cluster) ? cluster : FileSystem.directoryName(of: cluster)
    }

    /// Search path for delegates: `binDir` first, then the runtime's `CNI_PATH`, without duplicates.
    public func searchPaths(cniPath: String?) -> [String] {
        var paths = [binDir]
        for p in (cniPath ?? "").split(separator: ":").map(String.init) where !p.isEmpty && !paths.contains(p) {
            paths.append(p)
        }
        return paths
    }
}

/// Typed access to configuration keys with code-7 errors that name the key.
struct KeyReader {
    let object: JSONObject

    static func typeError(_ key: String, expected: String, got: JSON) -> CNIError {
        CNIError(.invalidNetworkConfig, "configuration key \"\(key)\" must be \(expected)", details: "got \(got.typeName)")
    }

    func string(_ key: String) throws(CNIError) -> String? {
        switch object[key] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        case let v?: throw KeyReader.typeError(key, expected: "a string", got: v)
        }
    }

    func bool(_ key: String) throws(CNIError) -> Bool? {
        switch object[key] {
        case nil, .null?: return nil
        case .bool(let b)?: return b
        case let v?: throw KeyReader.typeError(key, expected: "a boolean", got: v)
        }
    }

    /// A duration in seconds: a JSON number above 0 and at most `maximum`. The literal is checked as text first,
    /// so `1e400` (infinite as a `Double`), NaN-like input or `-0` never reach an arithmetic conversion.
    func duration(_ key: String, maximum: Double) throws(CNIError) -> Double? {
        switch object[key] {
        case nil, .null?: return nil
        case .number(let n)?:
            guard let d = Double(n), d.isFinite, d > 0, d <= maximum else {
                throw CNIError(.invalidNetworkConfig, "configuration key \"\(key)\" must be a number of seconds above 0 and at most \(Int(maximum))",
                               details: "got \(n)")
            }
            return d
        case let v?: throw KeyReader.typeError(key, expected: "a number of seconds", got: v)
        }
    }

    func object(_ key: String) throws(CNIError) -> JSONObject? {
        switch object[key] {
        case nil, .null?: return nil
        case .object(let o)?: return o
        case let v?: throw KeyReader.typeError(key, expected: "an object", got: v)
        }
    }

    func array(_ key: String) throws(CNIError) -> [JSON]? {
        switch object[key] {
        case nil, .null?: return nil
        case .array(let a)?: return a
        case let v?: throw KeyReader.typeError(key, expected: "a list", got: v)
        }
    }

    func stringList(_ key: String) throws(CNIError) -> [String]? {
        guard let arr = try array(key) else { return nil }
        var out: [String] = []
        for item in arr {
            guard let s = item.stringValue else { throw KeyReader.typeError(key, expected: "a list of strings", got: item) }
            out.append(s)
        }
        return out
    }
}
