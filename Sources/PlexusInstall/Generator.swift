import CNISpec
import SystemKit

/// Builds the files the installer writes: the Plexus conflist and the kubeconfig. Pure functions of their inputs,
/// so the same inputs always give the same bytes (regeneration is a no-op unless something changed).
public enum ConfigGenerator {
    /// The `cniVersion` for Plexus' configuration: the version the runtime uses for the primary network (libcni's
    /// choice from `cniVersion`/`cniVersions`, which the primary's plugins therefore support), capped at the
    /// highest version Plexus implements. A missing version means 0.1.0, as in libcni.
    public static func cniVersion(for list: NetworkConfigList) throws(InstallError) -> String {
        let text = list.cniVersion.isEmpty ? CNIVersion.v010.description : list.cniVersion
        guard let v = CNIVersion(text) else {
            throw InstallError("primary network \"\(list.name)\" has an invalid cniVersion \"\(list.cniVersion)\"")
        }
        if CNIVersion.supported.contains(text) { return text }
        guard let best = CNIVersion.supported.compactMap(CNIVersion.init).filter({ $0 <= v }).max() else {
            throw InstallError("primary network \"\(list.name)\" has cniVersion \(text), older than any Plexus supports")
        }
        return best.description
    }

    /// The union of the capabilities the primary's plugins declare (those set to `true`), in first-seen order:
    /// the runtime passes Plexus exactly these in `runtimeConfig`, and Plexus hands them to the cluster network.
    public static func capabilities(of list: NetworkConfigList) -> JSONObject {
        var out = JSONObject()
        for plugin in list.plugins {
            guard let caps = plugin["capabilities"]?.objectValue else { continue }
            for m in caps.members where m.value.boolValue == true && out[m.key] == nil {
                out[m.key] = .bool(true)
            }
        }
        return out
    }

    /// The generated conflist: one `plexus` plugin whose `clusterNetwork` is the primary file's node path (Plexus
    /// re-reads it on every ADD, so the primary is never frozen into this file).
    public static func conflist(primary: PrimaryNetwork, networkName: String, settings: JSONObject,
                                kubeconfigHostPath: String?, binDir: String) throws(InstallError) -> JSON {
        var plugin = JSONObject()
        plugin["type"] = .string("plexus")
        plugin["clusterNetwork"] = .string(primary.hostPath)
        let caps = capabilities(of: primary.list)
        if !caps.isEmpty { plugin["capabilities"] = .object(caps) }
        if let kubeconfigHostPath { plugin["kubeconfig"] = .string(kubeconfigHostPath) }
        plugin["binDir"] = .string(binDir)
        for m in settings.members { plugin[m.key] = m.value }
        let list = JSONObject([
            ("cniVersion", .string(try cniVersion(for: primary.list))),
            ("name", .string(networkName)),
            ("plugins", .array([.object(plugin)])),
        ])
        // The runtime must be able to load what we write: check it the way Plexus' own loader will.
        do { _ = try NetworkConfigList(json: .object(list), source: "generated configuration") } catch {
            throw InstallError("the generated configuration does not load: \(error)")
        }
        return .object(list)
    }

    /// A JSON-form kubeconfig (Plexus reads JSON kubeconfigs without a converter) that names the token and the CA
    /// by file: Plexus reads the token file on every ADD, so a rotated token is used as soon as it is on disk.
    public static func kubeconfig(server: String, caHostPath: String?, tokenHostPath: String) -> JSON {
        var cluster = JSONObject([("server", .string(server))])
        if let caHostPath { cluster["certificate-authority"] = .string(caHostPath) }
        return .object(JSONObject([
            ("apiVersion", .string("v1")),
            ("kind", .string("Config")),
            ("clusters", .array([.object(JSONObject([("name", .string("plexus")), ("cluster", .object(cluster))]))])),
            ("users", .array([.object(JSONObject([
                ("name", .string("plexus")),
                ("user", .object(JSONObject([("tokenFile", .string(tokenHostPath))]))),
            ]))])),
            ("contexts", .array([.object(JSONObject([
                ("name", .string("plexus")),
                ("context", .object(JSONObject([("cluster", .string("plexus")), ("user", .string("plexus"))]))),
            ]))])),
            ("current-context", .string("plexus")),
        ]))
    }

    /// The API server URL from the pod environment (`KUBERNETES_SERVICE_HOST`/`PORT`, IPv6 bracketed).
    public static func inClusterServer(_ environment: [String: String]) -> String? {
        guard let host = environment["KUBERNETES_SERVICE_HOST"], !host.isEmpty,
              let port = environment["KUBERNETES_SERVICE_PORT"], !port.isEmpty else { return nil }
        let h = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        return "https://\(h):\(port)"
    }
}

/// Indented JSON for files people read (`cat /etc/cni/net.d/00-plexus.conflist`); scalars as CNISpec writes them.
public enum PrettyJSON {
    public static func bytes(_ value: JSON) -> [UInt8] {
        var out: [UInt8] = []
        write(value, indent: 0, to: &out)
        out.append(UInt8(ascii: "\n"))
        return out
    }

    static func write(_ value: JSON, indent: Int, to out: inout [UInt8]) {
        let pad = [UInt8](repeating: UInt8(ascii: " "), count: indent + 2)
        switch value {
        case .array(let items) where !items.isEmpty:
            out.append(UInt8(ascii: "["))
            for (i, item) in items.enumerated() {
                out.append(contentsOf: Array((i == 0 ? "\n" : ",\n").utf8))
                out.append(contentsOf: pad)
                write(item, indent: indent + 2, to: &out)
            }
            out.append(UInt8(ascii: "\n"))
            out.append(contentsOf: pad.dropLast(2))
            out.append(UInt8(ascii: "]"))
        case .object(let o) where !o.isEmpty:
            out.append(UInt8(ascii: "{"))
            for (i, m) in o.members.enumerated() {
                out.append(contentsOf: Array((i == 0 ? "\n" : ",\n").utf8))
                out.append(contentsOf: pad)
                JSON.string(m.key).write(to: &out)
                out.append(contentsOf: Array(": ".utf8))
                write(m.value, indent: indent + 2, to: &out)
            }
            out.append(UInt8(ascii: "\n"))
            out.append(contentsOf: pad.dropLast(2))
            out.append(UInt8(ascii: "}"))
        default:
            value.write(to: &out)
        }
    }
}
