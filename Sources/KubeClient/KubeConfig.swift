#if canImport(Glibc)
import Glibc
#endif
import CNISpec
import SystemKit

/// PEM material given either as a file path (read by libcurl at connect time) or inline.
public enum PEMSource: Sendable, Equatable {
    case file(String)
    case data([UInt8])
}

/// Everything needed to reach and authenticate to one API server.
///
/// The server is verified against `certificateAuthority` only (never the system bundle); with no CA configured the
/// system trust store is used, as client-go does. `insecureSkipTLSVerify` is honoured only when explicitly set.
/// `description` never shows the token or key material.
public struct KubeConfig: Sendable, Equatable, CustomStringConvertible {
    /// `https://host:port[/prefix]` without a trailing slash.
    public var server: String
    public var certificateAuthority: PEMSource?
    /// A static bearer token.
    public var token: String?
    /// A file holding the bearer token. Read on the first request of each invocation (so rotated tokens are
    /// picked up) and again once after a 401; it wins over `token`, which serves as the fallback when the file
    /// cannot be read (client-go's precedence).
    public var tokenFile: String?
    public var clientCertificate: PEMSource?
    public var clientKey: PEMSource?
    public var insecureSkipTLSVerify: Bool
    /// Where this came from, for messages: `in-cluster` or the kubeconfig path.
    public var origin: String
    /// The kubeconfig context used, if any.
    public var contextName: String?

    public init(
        server: String, certificateAuthority: PEMSource? = nil, token: String? = nil, tokenFile: String? = nil,
        clientCertificate: PEMSource? = nil, clientKey: PEMSource? = nil, insecureSkipTLSVerify: Bool = false,
        origin: String = "explicit", contextName: String? = nil
    ) {
        var s = server
        while s.hasSuffix("/") { s.removeLast() }
        self.server = s
        self.certificateAuthority = certificateAuthority
        self.token = token
        self.tokenFile = tokenFile
        self.clientCertificate = clientCertificate
        self.clientKey = clientKey
        self.insecureSkipTLSVerify = insecureSkipTLSVerify
        self.origin = origin
        self.contextName = contextName
    }

    public var description: String {
        func pem(_ p: PEMSource?) -> String {
            switch p {
            case .none: return "none"
            case .file(let f): return f
            case .data(let d): return "<\(d.count) bytes>"
            }
        }
        var s = "KubeConfig(server: \(server), origin: \(origin)"
        if let contextName { s += ", context: \(contextName)" }
        s += ", ca: \(pem(certificateAuthority))"
        if token != nil { s += ", token: <redacted>" }
        if let tokenFile { s += ", tokenFile: \(tokenFile)" }
        if clientCertificate != nil { s += ", clientCertificate: \(pem(clientCertificate))" }
        if clientKey != nil { s += ", clientKey: <redacted>" }
        if insecureSkipTLSVerify { s += ", insecureSkipTLSVerify" }
        return s + ")"
    }

    // MARK: - In-cluster

    public static let serviceAccountDirectory = "/var/run/secrets/kubernetes.io/serviceaccount"

    /// The in-cluster configuration: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`, the service
    /// account token file (re-read per invocation) and CA. Paths are overridable for tests.
    public static func inCluster(
        environment: [String: String],
        tokenPath: String = serviceAccountDirectory + "/token",
        caPath: String = serviceAccountDirectory + "/ca.crt"
    ) throws(KubeError) -> KubeConfig {
        let op = "load in-cluster configuration"
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty,
              let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty else {
            throw KubeError(.config, operation: op,
                            detail: "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set")
        }
        guard FileSystem.exists(tokenPath) else {
            throw KubeError(.config, operation: op, detail: "service account token \(tokenPath) does not exist")
        }
        guard FileSystem.exists(caPath) else {
            throw KubeError(.config, operation: op, detail: "service account CA \(caPath) does not exist")
        }
        let h = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return KubeConfig(server: "https://\(h):\(port)", certificateAuthority: .file(caPath), tokenFile: tokenPath,
                          origin: "in-cluster")
    }

    // MARK: - Kubeconfig files

    /// Name of the YAML → JSON converter executable (links Yams; the plugin itself does not).
    public static let converterName = "plexus-kubeconfig"

    /// Loads a kubeconfig file. A JSON document (what Plexus' installer writes) is parsed directly; anything else
    /// is handed to the `plexus-kubeconfig` converter (found next to the running executable, then in
    /// `converterSearchPaths`), which parses YAML and prints JSON. `context` overrides `current-context`.
    ///
    /// With `conversionCacheDir`, the converter's output is kept in `<dir>/kubeconfig-<hash of path>.json` (0600,
    /// atomic) together with a hash and the size of the YAML it came from, and reused while the file is unchanged:
    /// the converter costs ~12 ms per ADD, the cached read ~0.1 ms. One cache file per kubeconfig path, rewritten
    /// when the kubeconfig changes (token rotation), so the cache stays bounded.
    public static func load(
        kubeconfigPath path: String, context: String? = nil, converterSearchPaths: [String] = [],
        converterTimeoutNanoseconds: Int64 = 5_000_000_000, conversionCacheDir: String? = nil
    ) throws(KubeError) -> KubeConfig {
        let op = "load kubeconfig \(path)"
        let bytes: [UInt8]
        do {
            bytes = try FileSystem.read(path, limit: 4 << 20)
        } catch {
            throw KubeError(.config, operation: op, detail: "\(error)")
        }
        let document: JSON
        if let json = try? JSON.parse(bytes) {
            document = json
        } else if let dir = conversionCacheDir, let cached = ConversionCache(directory: dir, source: path, bytes: bytes).read() {
            document = cached
        } else {
            document = try convertYAML(path: path, searchPaths: converterSearchPaths,
                                       timeoutNanoseconds: converterTimeoutNanoseconds)
            if let dir = conversionCacheDir { ConversionCache(directory: dir, source: path, bytes: bytes).write(document) }
        }
        return try resolve(document: document, path: path, context: context)
    }

    /// The converted form of one YAML kubeconfig, valid while the YAML's size and FNV-1a hash match.
    struct ConversionCache {
        static let kind = "plexusKubeconfigV1"
        let file: String
        let source: String
        let size: Int
        let hash: String

        init(directory: String, source: String, bytes: [UInt8]) {
            self.source = source
            size = bytes.count
            hash = ConversionCache.fnv1a(bytes)
            file = "\(directory)/kubeconfig-\(ConversionCache.fnv1a(Array(source.utf8))).json"
        }

        static func fnv1a(_ bytes: [UInt8]) -> String {
            var h: UInt64 = 0xcbf2_9ce4_8422_2325
            for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
            return String(h, radix: 16)
        }

        /// The cached document, or nil when absent, unreadable, or for another version of the file.
        func read() -> JSON? {
            guard let bytes = try? FileSystem.readOwnFile(file, limit: 4 << 20), let json = try? JSON.parse(bytes),
                  json["kind"]?.stringValue == ConversionCache.kind, json["source"]?.stringValue == source,
                  json["sourceSize"]?.intValue == size, json["sourceHash"]?.stringValue == hash,
                  let doc = json["document"], doc.objectValue != nil
            else { return nil }
            return doc
        }

        /// Best effort: a failed write only means the next ADD converts again.
        func write(_ document: JSON) {
            let o = JSONObject([("kind", .string(ConversionCache.kind)), ("source", .string(source)),
                                ("sourceSize", .int(size)), ("sourceHash", .string(hash)), ("document", document)])
            try? FileSystem.makeDirectories(FileSystem.directoryName(of: file), mode: 0o700)
            try? FileSystem.writeAtomically(file, JSON.object(o).serializedBytes(), mode: 0o600)
        }
    }

    /// Where `plexus-kubeconfig` is: next to `/proc/self/exe`, else the first executable one in `searchPaths`.
    public static func findConverter(searchPaths: [String] = []) -> String? {
        var dirs: [String] = []
        if let exe = ProcessEnvironment.executablePath() { dirs.append(FileSystem.directoryName(of: exe)) }
        dirs += searchPaths
        for d in dirs {
            let candidate = d + "/" + converterName
            if access(candidate, X_OK) == 0 && FileSystem.isRegularFile(candidate) { return candidate }
        }
        return nil
    }

    /// Any YAML file as JSON, through the `plexus-kubeconfig` converter (its first document; mapping order kept).
    public static func convertYAML(path: String, searchPaths: [String], timeoutNanoseconds: Int64,
                                   operation: String? = nil) throws(KubeError) -> JSON {
        let op = operation ?? "load kubeconfig \(path)"
        guard let converter = findConverter(searchPaths: searchPaths) else {
            throw KubeError(.config, operation: op, detail:
                "the file is not JSON and the YAML converter \(converterName) was not found next to the plugin")
        }
        let out: ProcessOutput
        do {
            out = try Subprocess.run(path: converter, arguments: [converter, path],
                                     environment: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                                     stdin: [], timeoutNanoseconds: timeoutNanoseconds)
        } catch {
            throw KubeError(.config, operation: op, detail: "cannot run \(converter): \(error)")
        }
        if out.timedOut {
            throw KubeError(.config, operation: op, detail: "\(converter) timed out")
        }
        if out.exitStatus != 0 {
            // The converter reports positions and problems, never the document's content (it may hold tokens).
            let msg = String(decoding: out.stderr.prefix(512), as: UTF8.self).trimmingSpaces
            throw KubeError(.config, operation: op,
                            detail: "\(converterName) failed (exit \(out.exitStatus))" + (msg.isEmpty ? "" : ": \(msg)"))
        }
        do {
            return try JSON.parse(out.stdout)
        } catch {
            throw KubeError(.config, operation: op, detail: "\(converterName) printed invalid JSON: \(error)")
        }
    }

    /// Resolves `current-context` (or `context`) → context → cluster + user in a kubeconfig document.
    /// Relative file paths resolve against the directory of `path`. Errors name `path` and the missing key.
    public static func resolve(document: JSON, path: String, context: String? = nil) throws(KubeError) -> KubeConfig {
        let op = "load kubeconfig \(path)"
        func fail(_ detail: String) -> KubeError { KubeError(.config, operation: op, detail: detail) }
        guard let root = document.objectValue else { throw fail("the document is not a mapping") }

        let contextName: String
        if let context, !context.isEmpty {
            contextName = context
        } else if let cur = root["current-context"]?.stringValue, !cur.isEmpty {
            contextName = cur
        } else {
            throw fail("no \"current-context\" is set")
        }

        func entry(_ list: String, _ name: String, _ field: String) throws(KubeError) -> JSONObject {
            guard let items = root[list]?.arrayValue else {
                throw fail("\"\(list)\" is missing (needed for \(field) \"\(name)\")")
            }
            for item in items {
                guard let obj = item.objectValue, obj["name"]?.stringValue == name else { continue }
                guard let body = obj[field]?.objectValue else {
                    throw fail("\(list) entry \"\(name)\" has no \"\(field)\" mapping")
                }
                return body
            }
            throw fail("\(field) \"\(name)\" not found in \"\(list)\"")
        }

        let ctx = try entry("contexts", contextName, "context")
        guard let clusterName = ctx["cluster"]?.stringValue, !clusterName.isEmpty else {
            throw fail("context \"\(contextName)\" has no \"cluster\"")
        }
        let cluster = try entry("clusters", clusterName, "cluster")
        // A context without a user is valid (anonymous access).
        var user = JSONObject()
        if let userName = ctx["user"]?.stringValue, !userName.isEmpty {
            user = try entry("users", userName, "user")
        }

        let dir = FileSystem.directoryName(of: path)
        func resolvePath(_ p: String) -> String { p.hasPrefix("/") ? p : (dir == "." ? p : dir + "/" + p) }
        func string(_ obj: JSONObject, _ key: String, _ what: String) throws(KubeError) -> String? {
            guard let v = obj[key], !v.isNull else { return nil }
            guard let s = v.stringValue else { throw fail("\(what) \"\(key)\" must be a string, not \(v.typeName)") }
            return s.isEmpty ? nil : s
        }
        func pem(_ obj: JSONObject, file: String, data: String, _ what: String) throws(KubeError) -> PEMSource? {
            if let d = try string(obj, data, what) {
                guard let decoded = Base64.decode(d) else { throw fail("\(what) \"\(data)\" is not valid base64") }
                return .data(decoded)
            }
            if let f = try string(obj, file, what) { return .file(resolvePath(f)) }
            return nil
        }

        let clusterWhat = "cluster \"\(clusterName)\""
        guard let server = try string(cluster, "server", clusterWhat) else {
            throw fail("\(clusterWhat) has no \"server\"")
        }
        guard server.hasPrefix("https://") || server.hasPrefix("http://") else {
            throw fail("\(clusterWhat) \"server\" must be an http(s) URL")
        }
        let ca = try pem(cluster, file: "certificate-authority", data: "certificate-authority-data", clusterWhat)
        var insecure = false
        if let v = cluster["insecure-skip-tls-verify"] {
            switch v {
            case .bool(let b): insecure = b
            case .string(let s): insecure = s == "true"
            case .null: insecure = false
            default: throw fail("\(clusterWhat) \"insecure-skip-tls-verify\" must be a boolean")
            }
        }
        if insecure && ca != nil {
            // client-go refuses this combination too.
            throw fail("\(clusterWhat) sets both a certificate authority and insecure-skip-tls-verify")
        }

        let userWhat = "user \"\(ctx["user"]?.stringValue ?? "")\""
        let token = try string(user, "token", userWhat)
        let tokenFile = try string(user, "tokenFile", userWhat).map(resolvePath)
        let cert = try pem(user, file: "client-certificate", data: "client-certificate-data", userWhat)
        let key = try pem(user, file: "client-key", data: "client-key-data", userWhat)
        if (cert == nil) != (key == nil) {
            throw fail("\(userWhat) needs both a client certificate and a client key")
        }
        if token == nil && tokenFile == nil && cert == nil {
            for unsupported in ["exec", "auth-provider"] where user[unsupported] != nil && !(user[unsupported]!.isNull) {
                throw fail("\(userWhat) uses \"\(unsupported)\" credentials, which Plexus does not support; "
                    + "use a token, tokenFile or client certificate")
            }
        }
        return KubeConfig(server: server, certificateAuthority: ca, token: token, tokenFile: tokenFile,
                          clientCertificate: cert, clientKey: key, insecureSkipTLSVerify: insecure,
                          origin: path, contextName: contextName)
    }
}

