import CNISpec
import SystemKit

/// Resolves network references from Plexus' configuration to configuration lists on disk, without Kubernetes:
/// - a reference containing `/` is a path: a directory means its alphabetically first `.conf`/`.conflist`/`.json`,
///   a file is loaded as it is;
/// - otherwise it is a network name looked up in `confDir`: `.conflist` files first, then `.conf`/`.json`
///   (NPWG §3.4.1 order), the first whose `name` matches wins. Unparsable files are skipped, not fatal.
///
/// Every list loaded from a file gets libcni 1.3's drop-in plugins: the `*.conf` files of `<dir of the file>/<name>/`
/// in lexical order are appended after the inline `plugins`, unless `loadOnlyInlinedPlugins` is true. A single
/// plugin conf (a `type` at the top, no `plugins`) is up-converted without drop-ins, as libcni does.
public struct NetworkLoader: Sendable {
    public var confDir: String

    public init(confDir: String) { self.confDir = confDir }

    static let extensions = [".conf", ".conflist", ".json"]

    public func load(reference: String) throws(CNIError) -> NetworkConfigList {
        if reference.contains("/") {
            if FileSystem.isDirectory(reference) {
                let names = (try? FileSystem.list(reference)) ?? []
                guard let first = names.first(where: { n in NetworkLoader.extensions.contains { n.hasSuffix($0) } }) else {
                    throw CNIError(.invalidNetworkConfig, "no .conf/.conflist/.json file in network directory", details: reference)
                }
                return try loadFile(reference + "/" + first)
            }
            return try loadFile(reference)
        }
        if let found = try find(name: reference) { return found }
        throw CNIError(.invalidNetworkConfig, "network \"\(reference)\" not found in \(confDir)")
    }

    public func loadFile(_ path: String) throws(CNIError) -> NetworkConfigList {
        try NetworkLoader.aggregate(try NetworkLoader.parseFile(path), path: path)
    }

    /// The network named `name` in `confDir`, or nil when no file declares it. Only the matching file's drop-in
    /// directory is read, and a broken drop-in of that network is an error (it is not a reason to look further).
    public func find(name: String) throws(CNIError) -> NetworkConfigList? {
        guard let names = try? FileSystem.list(confDir) else { return nil }
        let lists = names.filter { $0.hasSuffix(".conflist") }
        let confs = names.filter { $0.hasSuffix(".conf") || $0.hasSuffix(".json") }
        for file in lists + confs {
            let path = confDir + "/" + file
            guard let json = try? NetworkLoader.parseFile(path), json["name"]?.stringValue == name else { continue }
            guard let list = try? NetworkConfigList(json: NetworkLoader.withoutDropIns(json), source: path) else { continue }
            if list.name == name { return try NetworkLoader.aggregate(json, path: path) }
        }
        return nil
    }

    static func parseFile(_ path: String) throws(CNIError) -> JSON {
        let bytes: [UInt8]
        do { bytes = try FileSystem.read(path) } catch {
            throw CNIError(.invalidNetworkConfig, "cannot read network configuration", details: error.description)
        }
        do { return try JSON.parse(bytes) } catch {
            throw CNIError(.decodingFailure, "cannot parse network configuration \(path)", details: error.description)
        }
    }

    /// Whether `json` is a list (it has `plugins`, or no `type`): only lists take drop-ins.
    static func isList(_ json: JSON) -> Bool {
        guard let o = json.objectValue else { return false }
        return o["plugins"] != nil || o["type"] == nil
    }

    /// A drop-in-only list (no inline plugins) with a placeholder plugin, so it can be validated before its
    /// drop-ins are read.
    static func withoutDropIns(_ json: JSON) -> JSON {
        guard isList(json), var o = json.objectValue, o["plugins"] == nil else { return json }
        o["plugins"] = .array([.object(JSONObject([("type", .string("placeholder"))]))])
        return .object(o)
    }

    /// The list of the file at `path` with its drop-in plugins appended (libcni `NetworkConfFromFile`).
    static func aggregate(_ json: JSON, path: String) throws(CNIError) -> NetworkConfigList {
        guard isList(json), var o = json.objectValue else { return try NetworkConfigList(json: json, source: path) }
        // Name and flag are validated by the list itself; checking them first keeps a bad name out of a path.
        let inlineOnly = try NetworkConfigList(json: withoutDropIns(json), source: path)
        if !inlineOnly.loadOnlyInlinedPlugins {
            let dir = FileSystem.directoryName(of: path) + "/" + inlineOnly.name
            let dropIns = try PluginConfFiles.load(directory: dir)
            if !dropIns.isEmpty {
                let inline = o["plugins"]?.arrayValue ?? []
                o["plugins"] = .array(inline + dropIns.map { .object($0.plugin) })
            }
        }
        return try NetworkConfigList(json: .object(o), source: path)
    }
}

/// Plugin configuration files of a drop-in directory (`<net>/*.conf`, `_finalize.d/*.conf`): every regular file
/// (or link to one) named `*.conf`, in lexical order. Subdirectories are skipped; a missing directory holds none.
/// A file that is not a JSON object, has no string `type`, or whose `type` is not a plain plugin name is an error
/// naming the file.
public enum PluginConfFiles {
    public static func load(directory: String) throws(CNIError) -> [(path: String, plugin: JSONObject)] {
        let names: [String]
        do { names = try FileSystem.list(directory) } catch {
            if error.isNotFound || error.errno == 20 /* ENOTDIR */ { return [] }
            throw CNIError(.invalidNetworkConfig, "cannot read plugin drop-in directory", details: error.description)
        }
        var out: [(String, JSONObject)] = []
        for name in names where name.hasSuffix(".conf") {
            let path = directory + "/" + name
            if FileSystem.isDirectory(path) { continue }
            let bytes: [UInt8]
            do { bytes = try FileSystem.read(path, limit: 1 << 20) } catch {
                throw CNIError(.invalidNetworkConfig, "cannot read plugin drop-in \(path)", details: error.description)
            }
            let json: JSON
            do { json = try JSON.parse(bytes) } catch {
                throw CNIError(.decodingFailure, "plugin drop-in \(path) is not valid JSON", details: error.description)
            }
            guard let o = json.objectValue else {
                throw CNIError(.invalidNetworkConfig, "plugin drop-in \(path) is not a JSON object", details: json.typeName)
            }
            guard let type = o["type"]?.stringValue, !type.isEmpty else {
                throw CNIError(.invalidNetworkConfig, "plugin drop-in \(path) has no \"type\"")
            }
            do { try CNIValidation.validatePluginType(type) } catch {
                throw CNIError(error.code, "plugin drop-in \(path): \(error.msg)", details: error.details)
            }
            out.append((path, o))
        }
        return out
    }
}
