import CNIInvoke
import CNISpec
import SystemKit

/// Identifies one Plexus attachment: the runtime's view, `(network, containerID, ifname)`.
public struct AttachmentKey: Sendable, Hashable, CustomStringConvertible {
    public var network: String
    public var containerID: String
    public var ifname: String

    public init(network: String, containerID: String, ifname: String) {
        self.network = network
        self.containerID = containerID
        self.ifname = ifname
    }

    public var description: String { "\(network)/\(containerID)/\(ifname)" }
    var fileName: String { "\(network)-\(containerID)-\(ifname)" }
}

/// One delegate network of an attachment, exactly as it is (or was) sent to the delegates.
public struct PlannedNetwork: Sendable, Equatable {
    /// The effective configuration list; its `bytes` are what is cached and replayed on DEL.
    public var list: NetworkConfigList
    public var ifname: String
    public var capabilityArgs: JSONObject
    /// The name reported in network-status: `ns/nad` for NAD networks, the CNI name otherwise.
    public var displayName: String
    public var isDefault: Bool
    /// The NAD's `k8s.v1.cni.cncf.io/resourceName`, for device-plugin lookups.
    public var resourceName: String?
    /// Gateways requested through the selection's `default-route`, if any.
    public var defaultRoute: [String]?
    /// Whether Plexus chose `ifname` (`net<i>`) rather than the runtime or the pod's selection: only such a name
    /// may be changed to avoid an interface another attachment of the container already uses.
    public var ifnameGenerated: Bool
    /// The `auxiliaryCNIChainName` chain: it creates no interface of its own, so network-status leaves it out.
    public var isAuxiliary: Bool
    /// The DRA device this network got (claim, allocated device), when it came from a ResourceClaim.
    public var claimDevice: ClaimDeviceRecord?

    public init(list: NetworkConfigList, ifname: String, capabilityArgs: JSONObject = JSONObject(),
                displayName: String? = nil, isDefault: Bool = false, resourceName: String? = nil, defaultRoute: [String]? = nil,
                ifnameGenerated: Bool = false, isAuxiliary: Bool = false, claimDevice: ClaimDeviceRecord? = nil) {
        self.isAuxiliary = isAuxiliary
        self.claimDevice = claimDevice
        self.list = list
        self.ifname = ifname
        self.capabilityArgs = capabilityArgs
        self.displayName = displayName ?? list.name
        self.isDefault = isDefault
        self.resourceName = resourceName
        self.defaultRoute = defaultRoute
        self.ifnameGenerated = ifnameGenerated
    }
}

/// The persisted plan of an attachment, written atomically before the first delegate runs, so a DEL after a crash,
/// a reboot or a failed rollback knows every network that may hold resources.
public struct AttachmentRecord: Sendable, Equatable {
    public static let kind = "plexusAttachmentV1"

    public enum State: String, Sendable {
        /// Written before the first delegate ADD; stays so while the attachment exists.
        case planned
        /// An ADD failed and its rollback left networks behind: a later DEL must retry them.
        case rollbackFailed = "rollback-failed"
        /// A DEL failed for some networks; `networks` holds those still to delete.
        case deleteFailed = "delete-failed"
    }

    public var key: AttachmentKey
    public var netns: String
    public var cniArgs: CNIArgs
    /// `ns/name` when known.
    public var pod: String?
    public var state: State
    public var networks: [PlannedNetwork]
    /// The finalizers the ADD planned, in run order, exactly as sent: DEL replays them (in reverse) from here.
    public var finalizers: [NetworkConfigList]

    public init(key: AttachmentKey, netns: String, cniArgs: CNIArgs, pod: String?, state: State, networks: [PlannedNetwork],
                finalizers: [NetworkConfigList] = []) {
        self.finalizers = finalizers
        self.key = key
        self.netns = netns
        self.cniArgs = cniArgs
        self.pod = pod
        self.state = state
        self.networks = networks
    }

    var json: JSON {
        var o = JSONObject()
        o["kind"] = .string(AttachmentRecord.kind)
        o["network"] = .string(key.network)
        o["containerId"] = .string(key.containerID)
        o["ifName"] = .string(key.ifname)
        o["netns"] = .string(netns)
        o["cniArgs"] = cniArgs.json
        if let pod { o["pod"] = .string(pod) }
        o["state"] = .string(state.rawValue)
        o["networks"] = .array(networks.map { n in
            var no = JSONObject()
            no["name"] = .string(n.list.name)
            no["ifName"] = .string(n.ifname)
            no["display"] = .string(n.displayName)
            if n.isDefault { no["default"] = .bool(true) }
            if n.isAuxiliary { no["auxiliary"] = .bool(true) }
            if let c = n.claimDevice { no["claimDevice"] = c.json }
            if let r = n.resourceName { no["resourceName"] = .string(r) }
            if let d = n.defaultRoute { no["defaultRoute"] = .array(d.map { .string($0) }) }
            if !n.capabilityArgs.isEmpty { no["capabilityArgs"] = .object(n.capabilityArgs) }
            no["config"] = .string(Base64.encode(n.list.bytes))
            return .object(no)
        })
        if !finalizers.isEmpty {
            o["finalizers"] = .array(finalizers.map { .object(JSONObject([("config", .string(Base64.encode($0.bytes)))])) })
        }
        return .object(o)
    }

    init?(json: JSON) {
        guard let o = json.objectValue, o["kind"]?.stringValue == AttachmentRecord.kind,
              let net = o["network"]?.stringValue, let cid = o["containerId"]?.stringValue,
              let ifn = o["ifName"]?.stringValue, let nets = o["networks"]?.arrayValue,
              let state = o["state"]?.stringValue.flatMap(State.init(rawValue:)),
              // The key forms the record's path and names the attachment to act on: it passes the runtime's rules.
              ResultCache.isValidKey(network: net, containerID: cid, ifname: ifn)
        else { return nil }
        key = AttachmentKey(network: net, containerID: cid, ifname: ifn)
        netns = o["netns"]?.stringValue ?? ""
        cniArgs = CNIArgs(json: o["cniArgs"])
        pod = o["pod"]?.stringValue
        self.state = state
        var planned: [PlannedNetwork] = []
        for n in nets {
            guard let ifname = n["ifName"]?.stringValue, let cfg = n["config"]?.stringValue.flatMap(Base64.decode),
                  let list = try? NetworkConfigList(bytes: cfg, source: "cached plan"),
                  ResultCache.isValidKey(network: list.name, containerID: cid, ifname: ifname)
            else { return nil }
            planned.append(PlannedNetwork(
                list: list, ifname: ifname, capabilityArgs: n["capabilityArgs"]?.objectValue ?? JSONObject(),
                displayName: n["display"]?.stringValue, isDefault: n["default"]?.boolValue ?? false,
                resourceName: n["resourceName"]?.stringValue,
                defaultRoute: n["defaultRoute"]?.arrayValue?.compactMap(\.stringValue),
                isAuxiliary: n["auxiliary"]?.boolValue ?? false,
                claimDevice: n["claimDevice"].flatMap(ClaimDeviceRecord.init(json:))))
        }
        networks = planned
        var finals: [NetworkConfigList] = []
        for f in o["finalizers"]?.arrayValue ?? [] {
            guard let cfg = f["config"]?.stringValue.flatMap(Base64.decode),
                  let list = try? NetworkConfigList(bytes: cfg, source: "cached finalizer") else { return nil }
            finals.append(list)
        }
        finalizers = finals
    }
}

/// Persistence of attachment records under `<cniDir>/attachments/`, atomic and tolerant like the result cache.
public struct AttachmentStore: Sendable {
    public let directory: String

    public init(cniDir: String) { directory = cniDir + "/attachments" }

    public func path(_ key: AttachmentKey) -> String { "\(directory)/\(key.fileName)" }

    public enum ReadOutcome: Sendable {
        case absent
        case corrupt(String)
        case record(AttachmentRecord)
    }

    public func write(_ record: AttachmentRecord) throws(SystemError) {
        try stage(record).commit()
    }

    /// `record` written beside its path and not yet in place: its `commit()` is the rest of `write`. ADD commits it
    /// while the first delegate starts (see `Plexus.add`).
    public func stage(_ record: AttachmentRecord) throws(SystemError) -> StagedFile {
        guard ResultCache.isValidKey(network: record.key.network, containerID: record.key.containerID, ifname: record.key.ifname) else {
            throw SystemError("write (invalid attachment key)", errno: 22 /* EINVAL */)
        }
        try FileSystem.makeOwnDirectory(directory, mode: 0o700)
        // The plan must outlive a crash or power loss of the node, since it is what lets DEL find every network.
        return try FileSystem.stageAtomically(path(record.key), record.json.serializedBytes(), mode: 0o600, durableRename: true)
    }

    /// The record of exactly this attachment. A file at its path that holds another attachment's record (a
    /// copy, or a link to it) is corrupt: a DEL must never act on another container's networks.
    public func read(_ key: AttachmentKey) -> ReadOutcome {
        let p = path(key)
        switch readFile(p) {
        case .record(let r) where r.key != key:
            return .corrupt("\(p): holds the record of \(r.key)")
        case let other: return other
        }
    }

    /// Reads one record file: never through a symlink, never a FIFO or device, at most 16 MiB.
    func readFile(_ p: String) -> ReadOutcome {
        guard FileSystem.isOwnDirectory(directory) else {
            return FileSystem.exists(directory) ? .corrupt("\(directory) is not a directory") : .absent
        }
        let bytes: [UInt8]
        do { bytes = try FileSystem.readOwnFile(p) } catch {
            return error.isNotFound ? .absent : .corrupt(error.description)
        }
        guard let json = try? JSON.parse(bytes) else { return .corrupt("\(p): not valid JSON") }
        guard let r = AttachmentRecord(json: json) else { return .corrupt("\(p): not a complete \(AttachmentRecord.kind) record") }
        return .record(r)
    }

    public func remove(_ key: AttachmentKey) throws(SystemError) { try FileSystem.removeOwnEntry(path(key)) }

    /// All readable records of Plexus network `network`, and the paths of unreadable ones.
    public func list(network: String) -> (records: [AttachmentRecord], corrupt: [CacheFileProblem]) {
        listMatching(prefix: network + "-") { $0.key.network == network }
    }

    /// Every readable record in the store, and the paths of unreadable files (for tools such as `plexus inspect`).
    public func all() -> (records: [AttachmentRecord], corrupt: [CacheFileProblem]) { listMatching { _ in true } }

    /// Readable records of other attachments of container `containerID` than `key` (other Plexus networks a
    /// runtime attached to the same container), and the paths of unreadable files that may belong to it.
    public func others(of key: AttachmentKey) -> (records: [AttachmentRecord], corrupt: [CacheFileProblem]) {
        listMatching(containing: "-\(key.containerID)-") { $0.key.containerID == key.containerID && $0.key != key }
    }

    func listMatching(prefix: String = "", containing: String? = nil,
                      _ include: (AttachmentRecord) -> Bool) -> (records: [AttachmentRecord], corrupt: [CacheFileProblem]) {
        guard FileSystem.isOwnDirectory(directory), let names = try? FileSystem.list(directory) else { return ([], []) }
        var records: [AttachmentRecord] = []
        var corrupt: [CacheFileProblem] = []
        for name in names where !name.hasPrefix(".") && name.hasPrefix(prefix) && (containing.map { name.contains($0) } ?? true) {
            let p = "\(directory)/\(name)"
            switch readFile(p) {
            // A record is only valid at its own path: a copy under another name is not that attachment.
            case .record(let r) where path(r.key) != p: corrupt.append(CacheFileProblem(path: p, reason: "holds the record of \(r.key)"))
            case .record(let r) where include(r): records.append(r)
            case .corrupt(let why): corrupt.append(CacheFileProblem(path: p, reason: why))
            default: continue
            }
        }
        return (records, corrupt)
    }
}
