import CNISpec
import SystemKit

/// The Plexus configuration keys an administrator may set through the installer (settings file, flags or
/// environment), with the type Plexus accepts for each. Checking them here means a typo or a wrong type fails the
/// installer with a clear message instead of failing every pod's ADD on the node.
public enum PlexusSettings {
    public enum Kind: Sendable, Equatable {
        case bool, string, path, stringList, namespaces, seconds, logLevel
        /// A JSON list of plugin objects, each with a string `type` (`finalizers`).
        case plugins

        var placeholder: String {
            switch self {
            case .bool: return "BOOL"
            case .string: return "NAME"
            case .path: return "PATH"
            case .stringList, .namespaces: return "NAME,..."
            case .seconds: return "SECONDS"
            case .logLevel: return "LEVEL"
            case .plugins: return "JSON"
            }
        }

        var expectation: String {
            switch self {
            case .bool: return "true or false"
            case .string: return "a string"
            case .path: return "an absolute path"
            case .stringList: return "a list of strings"
            case .namespaces: return "a comma-separated string or a list of strings"
            case .seconds: return "a positive number"
            case .logLevel: return "one of panic, error, warning, info, verbose, debug"
            case .plugins: return "a list of plugin objects with a \"type\""
            }
        }
    }

    public struct Setting: Sendable {
        public let key: String
        public let kind: Kind
        public let flag: String?
    }

    /// In the order they are written into the generated configuration.
    public static let known: [Setting] = [
        Setting(key: "logLevel", kind: .logLevel, flag: "--log-level"),
        Setting(key: "logFile", kind: .path, flag: "--log-file"),
        Setting(key: "logToStderr", kind: .bool, flag: "--log-to-stderr"),
        Setting(key: "namespaceIsolation", kind: .bool, flag: "--namespace-isolation"),
        Setting(key: "globalNamespaces", kind: .namespaces, flag: "--global-namespaces"),
        Setting(key: "systemNamespaces", kind: .stringList, flag: "--system-namespaces"),
        Setting(key: "multusNamespace", kind: .string, flag: "--multus-namespace"),
        Setting(key: "defaultNetworks", kind: .stringList, flag: "--default-networks"),
        Setting(key: "readinessindicatorfile", kind: .path, flag: "--readiness-indicator-file"),
        Setting(key: "cniDir", kind: .path, flag: "--cni-dir"),
        Setting(key: "confDir", kind: .path, flag: "--conf-dir"),
        Setting(key: "binDir", kind: .path, flag: "--bin-dir"),
        Setting(key: "delegateTimeoutSeconds", kind: .seconds, flag: "--delegate-timeout-seconds"),
        Setting(key: "readinessTimeoutSeconds", kind: .seconds, flag: "--readiness-timeout-seconds"),
        Setting(key: "apiDeadlineSeconds", kind: .seconds, flag: "--api-deadline-seconds"),
        Setting(key: "parallelTeardown", kind: .bool, flag: "--parallel-teardown"),
        Setting(key: "parallelAttach", kind: .bool, flag: "--parallel-attach"),
        Setting(key: "auxiliaryCNIChainName", kind: .string, flag: "--auxiliary-cni-chain-name"),
        Setting(key: "draPublishNetworkData", kind: .bool, flag: "--dra-publish-network-data"),
        Setting(key: "finalizers", kind: .plugins, flag: "--finalizers"),
        Setting(key: "daemonSocket", kind: .path, flag: "--daemon-socket"),
        Setting(key: "daemonAdmitSeconds", kind: .seconds, flag: "--daemon-admit-seconds"),
    ]

    /// Keys the installer generates itself; a settings file may not set them.
    public static let generatedKeys = ["type", "name", "cniVersion", "cniVersions", "plugins", "clusterNetwork",
                                       "delegates", "capabilities", "kubeconfig", "runtimeConfig", "prevResult"]

    /// Checks one value against its setting's type; `origin` names where it came from for the message.
    public static func check(_ value: JSON, for s: Setting, origin: String) throws(InstallError) {
        let ok: Bool
        switch (s.kind, value) {
        case (.bool, .bool): ok = true
        case (.string, .string(let v)): ok = !v.isEmpty
        case (.path, .string(let v)): ok = v.hasPrefix("/")
        case (.logLevel, .string(let v)): ok = LogLevel(name: v) != nil
        case (.stringList, .array(let items)): ok = items.allSatisfy { $0.stringValue != nil }
        case (.namespaces, .string): ok = true
        case (.namespaces, .array(let items)): ok = items.allSatisfy { $0.stringValue != nil }
        case (.seconds, .number(let n)): ok = (Double(n) ?? 0) > 0
        case (.plugins, .array(let items)): ok = items.allSatisfy { !($0["type"]?.stringValue ?? "").isEmpty }
        default: ok = false
        }
        if !ok {
            throw InstallError("\(origin): setting \"\(s.key)\" must be \(s.kind.expectation), got \(value.serialized())")
        }
    }

    /// A flag's or environment variable's text as the setting's JSON value.
    public static func value(fromText text: String, for s: Setting, origin: String) throws(InstallError) -> JSON {
        let v: JSON
        switch s.kind {
        case .bool: v = .bool(try InstallOptions.boolean(origin, text))
        case .stringList: v = .array(InstallOptions.commaList(text).map { .string($0) })
        case .seconds: v = ((try? JSON.parse(text)).flatMap { if case .number = $0 { return $0 } else { return nil } }) ?? .string(text)
        case .plugins: v = (try? JSON.parse(text)) ?? .string(text)
        default: v = .string(text)
        }
        do { try check(v, for: s, origin: origin) } catch { throw .usage(error.message) }
        return v
    }

    /// The settings file: a JSON object of known keys only. Returns it with its keys checked.
    public static func parseFile(_ bytes: [UInt8], path: String) throws(InstallError) -> JSONObject {
        let json: JSON
        do { json = try JSON.parse(bytes) } catch {
            throw InstallError("settings file \(path) is not valid JSON: \(error)")
        }
        guard let o = json.objectValue else {
            throw InstallError("settings file \(path) must hold a JSON object, not \(json.typeName)")
        }
        for m in o.members {
            if generatedKeys.contains(m.key) {
                throw InstallError("settings file \(path): \"\(m.key)\" is generated by the installer and cannot be set")
            }
            guard let s = known.first(where: { $0.key == m.key }) else {
                throw InstallError("settings file \(path): unknown setting \"\(m.key)\" (known: "
                    + known.map(\.key).joined(separator: ", ") + ")")
            }
            if !m.value.isNull { try check(m.value, for: s, origin: "settings file \(path)") }
        }
        return o
    }

    /// The file's settings overridden by the flag/environment ones, in `known` order (so the generated bytes do
    /// not depend on the order keys were given in).
    public static func merge(file: JSONObject, overrides: JSONObject) -> JSONObject {
        var out = JSONObject()
        for s in known {
            if let v = overrides[s.key] ?? file[s.key], !v.isNull { out[s.key] = v }
        }
        return out
    }
}
