import CNISpec
import SystemKit

/// Resolves network references from Plexus' configuration to configuration lists on disk, without Kubernetes:
/// - a reference containing `/` is a path: a directory means its alphabetically first `.conf`/`.conflist`/`.json`,
///   a file is loaded as it is;
/// - otherwise it is a network name looked up in `confDir`: `.conflist` files first, then `.conf`/`.json`
///   (NPWG §3.4.1 order), the first whose `name` matches wins. Unparsable files are skipped, not fatal.
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
        let bytes: [UInt8]
        do { bytes = try FileSystem.read(path) } catch {
            throw CNIError(.invalidNetworkConfig, "cannot read network configuration", details: error.description)
        }
        return try NetworkConfigList(bytes: bytes, source: path)
    }

    /// The network named `name` in `confDir`, or nil when no file declares it.
    public func find(name: String) throws(CNIError) -> NetworkConfigList? {
        guard let names = try? FileSystem.list(confDir) else { return nil }
        let lists = names.filter { $0.hasSuffix(".conflist") }
        let confs = names.filter { $0.hasSuffix(".conf") || $0.hasSuffix(".json") }
        for file in lists + confs {
            guard let list = try? loadFile(confDir + "/" + file) else { continue }
            if list.name == name { return list }
        }
        return nil
    }
}
