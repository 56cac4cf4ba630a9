import CNISpec
import SystemKit

/// One cached attachment in libcni's `cniCacheV1` format, so `cnitool`-style tooling can read Plexus' cache.
/// Plexus adds one key libcni ignores, `plexusOwner`, naming the Plexus attachment (its network name and the
/// runtime's ifname) this delegate attachment belongs to: GC and a cache-driven DEL rely on it.
public struct CachedAttachment: Sendable, Equatable {
    public static let kind = "cniCacheV1"

    public var containerID: String
    public var networkName: String
    public var ifname: String
    /// The exact network-config-list bytes used on ADD (and replayed on DEL).
    public var config: [UInt8]
    public var netns: String
    public var cniArgs: CNIArgs
    public var capabilityArgs: JSONObject
    public var result: JSON?
    public var owner: Owner?

    public struct Owner: Sendable, Equatable {
        public var network: String
        public var ifname: String
        public init(network: String, ifname: String) {
            self.network = network
            self.ifname = ifname
        }
    }

    public init(containerID: String, networkName: String, ifname: String, config: [UInt8], netns: String,
                cniArgs: CNIArgs, capabilityArgs: JSONObject, result: JSON?, owner: Owner?) {
        self.containerID = containerID
        self.networkName = networkName
        self.ifname = ifname
        self.config = config
        self.netns = netns
        self.cniArgs = cniArgs
        self.capabilityArgs = capabilityArgs
        self.result = result
        self.owner = owner
    }

    public var json: JSON {
        var o = JSONObject()
        o["kind"] = .string(CachedAttachment.kind)
        o["containerId"] = .string(containerID)
        o["config"] = .string(Base64.encode(config))
        o["ifName"] = .string(ifname)
        o["networkName"] = .string(networkName)
        if !netns.isEmpty { o["netns"] = .string(netns) }
        if !cniArgs.pairs.isEmpty { o["cniArgs"] = cniArgs.json }
        if !capabilityArgs.isEmpty { o["capabilityArgs"] = .object(capabilityArgs) }
        if let result { o["result"] = result }
        if let owner {
            o["plexusOwner"] = .object(JSONObject([("network", .string(owner.network)), ("ifName", .string(owner.ifname))]))
        }
        return .object(o)
    }

    /// Decodes a cache file; nil for anything that is not a complete cniCacheV1 entry. The names in it pass the
    /// same validation as the runtime's input (they form cache paths and reach delegates), so a file cannot
    /// smuggle `../` or a NUL into either.
    public init?(json: JSON) {
        guard let o = json.objectValue, o["kind"]?.stringValue == CachedAttachment.kind,
              let cid = o["containerId"]?.stringValue, let net = o["networkName"]?.stringValue,
              let ifn = o["ifName"]?.stringValue, ResultCache.isValidKey(network: net, containerID: cid, ifname: ifn),
              let cfgText = o["config"]?.stringValue, let cfg = Base64.decode(cfgText)
        else { return nil }
        containerID = cid
        networkName = net
        ifname = ifn
        config = cfg
        netns = o["netns"]?.stringValue ?? ""
        cniArgs = CNIArgs(json: o["cniArgs"])
        capabilityArgs = o["capabilityArgs"]?.objectValue ?? JSONObject()
        result = o["result"]
        if let ow = o["plexusOwner"] {
            guard let n = ow["network"]?.stringValue, let i = ow["ifName"]?.stringValue,
                  CNIValidation.isValidIdentifier(n), (try? CNIValidation.validateInterfaceName(i)) != nil
            else { return nil }
            owner = Owner(network: n, ifname: i)
        }
    }
}

/// A cache file a listing could not use: where it is, and why (for logs and `plexus inspect`).
public struct CacheFileProblem: Sendable, Equatable, CustomStringConvertible {
    public var path: String
    public var reason: String
    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason.hasPrefix(path + ": ") ? String(reason.dropFirst(path.count + 2)) : reason
    }
    public var description: String { "\(path): \(reason)" }
}

/// The per-delegate-network result cache under `<cniDir>/results/<network>-<containerID>-<ifname>`.
/// Writes are atomic (0600 files, 0700 directory). Reads are tolerant: a corrupt or foreign file is reported to the
/// caller as `.corrupt` (to be logged) and otherwise treated as absent.
public struct ResultCache: Sendable {
    public let directory: String

    public init(cniDir: String) { directory = cniDir + "/results" }

    public func path(network: String, containerID: String, ifname: String) -> String {
        "\(directory)/\(network)-\(containerID)-\(ifname)"
    }

    /// Whether the three names may form a cache path: a valid network name and container ID (`[a-zA-Z0-9][…_.-]*`)
    /// and a valid interface name (no `/`, not `.`/`..`, no NUL or control characters).
    public static func isValidKey(network: String, containerID: String, ifname: String) -> Bool {
        CNIValidation.isValidIdentifier(network) && CNIValidation.isValidIdentifier(containerID)
            && (try? CNIValidation.validateInterfaceName(ifname)) != nil
    }

    func checkedPath(network: String, containerID: String, ifname: String, _ operation: String) throws(SystemError) -> String {
        guard ResultCache.isValidKey(network: network, containerID: containerID, ifname: ifname) else {
            throw SystemError("\(operation) (invalid cache key \(CNIValidation.visible(network))/\(containerID)/\(CNIValidation.visible(ifname)))",
                              errno: 22 /* EINVAL */)
        }
        return path(network: network, containerID: containerID, ifname: ifname)
    }

    public enum ReadOutcome: Sendable, Equatable {
        case absent
        case corrupt(String)
        case entry(CachedAttachment)
    }

    /// Writes an entry atomically. `durable: false` leaves out the fsync (see `FileSystem.writeAtomically`).
    public func write(_ entry: CachedAttachment, durable: Bool = true) throws(SystemError) {
        let p = try checkedPath(network: entry.networkName, containerID: entry.containerID, ifname: entry.ifname, "write")
        try FileSystem.makeOwnDirectory(directory, mode: 0o700)
        try FileSystem.writeAtomically(p, entry.json.serializedBytes(), mode: 0o600, durable: durable)
    }

    /// The entry for exactly this delegate attachment. A file at that path that names another one (a copy, a
    /// link) is corrupt: acting on it would tear down somebody else's attachment.
    public func read(network: String, containerID: String, ifname: String) -> ReadOutcome {
        guard ResultCache.isValidKey(network: network, containerID: containerID, ifname: ifname) else {
            return .corrupt("invalid cache key \(CNIValidation.visible(network))/\(containerID)/\(CNIValidation.visible(ifname))")
        }
        let p = path(network: network, containerID: containerID, ifname: ifname)
        switch readFile(p) {
        case .entry(let e) where e.networkName != network || e.containerID != containerID || e.ifname != ifname:
            return .corrupt("\(p): holds the entry of \(e.networkName)/\(e.containerID)/\(e.ifname)")
        case let other: return other
        }
    }

    /// Reads one cache file: never through a symlink, never a FIFO or device, at most 16 MiB.
    public func readFile(_ p: String) -> ReadOutcome {
        guard FileSystem.isOwnDirectory(directory) else {
            return FileSystem.exists(directory) ? .corrupt("\(directory) is not a directory") : .absent
        }
        let bytes: [UInt8]
        do { bytes = try FileSystem.readOwnFile(p) } catch {
            return error.isNotFound ? .absent : .corrupt(error.description)
        }
        guard let json = try? JSON.parse(bytes) else { return .corrupt("\(p): not valid JSON") }
        guard let entry = CachedAttachment(json: json) else { return .corrupt("\(p): not a complete cniCacheV1 entry") }
        return .entry(entry)
    }

    public func remove(network: String, containerID: String, ifname: String) throws(SystemError) {
        try FileSystem.removeOwnEntry(try checkedPath(network: network, containerID: containerID, ifname: ifname, "unlink"))
    }

    /// Every readable entry, optionally only those of `containerID` (libcni `GetCachedAttachments`: the file name
    /// must contain `-<cid>-` and the JSON must name the container exactly). Unreadable files are returned in
    /// `corrupt` so the caller can log them. Paths in `excluding` are not read (the caller has them already).
    public func list(containerID: String? = nil, excluding: Set<String> = []) -> (entries: [(path: String, entry: CachedAttachment)], corrupt: [CacheFileProblem]) {
        guard FileSystem.isOwnDirectory(directory), let names = try? FileSystem.list(directory) else {
            return ([], FileSystem.exists(directory) ? [CacheFileProblem(path: directory, reason: "not a directory")] : [])
        }
        var entries: [(String, CachedAttachment)] = []
        var corrupt: [CacheFileProblem] = []
        for name in names where !name.hasPrefix(".") {
            if let cid = containerID, !name.contains("-\(cid)-") { continue }
            let p = "\(directory)/\(name)"
            if excluding.contains(p) { continue }
            switch readFile(p) {
            case .entry(let e):
                if let cid = containerID, e.containerID != cid { continue }
                // A copy under another entry's name is not that entry.
                if p != path(network: e.networkName, containerID: e.containerID, ifname: e.ifname) {
                    corrupt.append(CacheFileProblem(path: p, reason: "holds the entry of \(e.networkName)/\(e.containerID)/\(e.ifname)"))
                    continue
                }
                entries.append((p, e))
            case .corrupt(let why): corrupt.append(CacheFileProblem(path: p, reason: why))
            case .absent: continue
            }
        }
        return (entries, corrupt)
    }
}
