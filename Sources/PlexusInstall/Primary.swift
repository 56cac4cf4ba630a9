import CNISpec
import SystemKit

/// The node's primary network configuration: the file a runtime would use if Plexus were not installed.
public struct PrimaryNetwork: Sendable, Equatable {
    public var fileName: String
    /// Its path on the node (what the generated configuration names as `clusterNetwork`).
    public var hostPath: String
    public var list: NetworkConfigList
    public var sha256: String
}

/// The outcome of one scan of the configuration directory.
public struct Detection: Sendable, Equatable {
    public struct Skipped: Sendable, Equatable {
        public var file: String
        public var reason: String
    }

    public var primary: PrimaryNetwork?
    /// Candidates passed over, and why (unparsable, another meta plugin, Plexus' own).
    public var skipped: [Skipped] = []
    /// Configuration files that sort before Plexus' file: a runtime would use them instead of Plexus (or, for
    /// containerd, fail on them when they do not load).
    public var shadowing: [String] = []
}

/// Finds the primary configuration the way runtimes choose theirs: the lexicographically (bytewise) first
/// `.conf`, `.conflist` or `.json` file of the directory. Unlike containerd, which fails on a broken first file,
/// a file that does not load is skipped (as CRI-O and Multus do) and reported. Plexus' own file, any other file
/// whose plugins are Plexus, and Multus' meta plugin files are skipped: wrapping a meta plugin would nest it.
public enum PrimaryDetector {
    public static let extensions = [".conf", ".conflist", ".json"]
    public static let metaPluginTypes = ["plexus", "multus", "multus-shim"]

    /// Bytewise order, as Go's sort.Strings (and FileSystem.list) order names.
    public static func sortsBefore(_ a: String, _ b: String) -> Bool {
        Array(a.utf8).lexicographicallyPrecedes(Array(b.utf8))
    }

    public static func isCandidate(_ name: String) -> Bool {
        extensions.contains { name.hasSuffix($0) }
    }

    /// Scans `localDir` (the node's `hostDir` as reached from here). A missing directory has no primary; an
    /// unreadable one is an error. `forced` restricts the scan to that one file name.
    public static func detect(localDir: String, hostDir: String, ownName: String,
                              forced: String? = nil) throws(InstallError) -> Detection {
        var d = Detection()
        let names: [String]
        do { names = try FileSystem.list(localDir) } catch {
            if error.isNotFound { return d }
            throw InstallError("cannot list the CNI configuration directory: \(error)")
        }
        for name in names where isCandidate(name) {
            if sortsBefore(name, ownName) { d.shadowing.append(name) }
            if name == ownName {
                d.skipped.append(.init(file: name, reason: "Plexus' own configuration"))
                continue
            }
            if d.primary != nil { continue }
            if let forced, name != forced { continue }
            let local = localDir + "/" + name
            guard FileSystem.isRegularFile(local) else {
                d.skipped.append(.init(file: name, reason: "not a regular file"))
                continue
            }
            let bytes: [UInt8]
            do { bytes = try FileSystem.read(local, limit: 1 << 20) } catch {
                d.skipped.append(.init(file: name, reason: "unreadable: \(error)"))
                continue
            }
            let list: NetworkConfigList
            do { list = try NetworkConfigList(bytes: bytes, source: name) } catch {
                d.skipped.append(.init(file: name, reason: "does not load: \(error)"))
                continue
            }
            if let meta = list.plugins.compactMap({ $0["type"]?.stringValue }).first(where: metaPluginTypes.contains) {
                d.skipped.append(.init(file: name, reason: "a \(meta) meta plugin configuration"))
                continue
            }
            d.primary = PrimaryNetwork(fileName: name, hostPath: hostDir + "/" + name, list: list,
                                       sha256: SHA256.hex(bytes))
        }
        if let forced, d.primary == nil, !d.skipped.contains(where: { $0.file == forced }) {
            d.skipped.append(.init(file: forced, reason: "the configured primary file does not exist"))
        }
        return d
    }
}
