import CNIInvoke
import CNISpec
import NetAttach
import PlexusCore
import SystemKit

/// What `plexus inspect` reports of one delegate network of an attachment.
public struct InspectedNetwork: Sendable, Equatable {
    public var name: String
    public var display: String
    public var interface: String
    public var ips: [String]
    public var mac: String?
    /// `attached` (result cached), `pending` (planned, no result: ADD under way or crashed before it), or
    /// `unreadable` (the result file is corrupt).
    public var state: String
    /// SHA-256 of the exact configuration bytes the delegates got (and DEL replays).
    public var configDigest: String
}

/// One Plexus attachment as the cache on this node knows it.
public struct InspectedAttachment: Sendable, Equatable {
    public var plexusNetwork: String
    public var pod: String?
    public var podUID: String?
    public var containerID: String
    public var ifname: String
    public var netns: String
    /// `attached`, `rollback-failed (awaiting DEL)`, `delete-failed (awaiting DEL)`; `busy` is added while an
    /// ADD/DEL/CHECK of the container holds its lock.
    public var state: String
    public var ageSeconds: Int64?
    public var busy: Bool
    /// With `--stale`: the netns no longer exists (nil when not checked or when the record has none).
    public var stale: Bool?
    public var networks: [InspectedNetwork]
}

public struct InspectReport: Sendable {
    public var cniDir: String
    public var attachments: [InspectedAttachment]
    /// Result-cache entries no readable record accounts for (left by a crash, or by a corrupt record).
    public var orphans: [CachedAttachment]
    public var problems: [CacheFileProblem]
}

/// Reads Plexus' cache under `cniDir` without changing it. Takes the GC lock shared (GC waits while it reads), and
/// tries each container's lock without waiting: a record whose container is busy is still read (records are
/// replaced atomically) and marked `busy`.
public struct Inspector {
    public var cniDir: String
    public var checkStale: Bool
    public var netnsExists: (String) -> Bool
    public var now: () -> Int64

    public init(cniDir: String, checkStale: Bool = false, netnsExists: @escaping (String) -> Bool = FileSystem.exists,
                now: @escaping () -> Int64 = FileSystem.now) {
        self.cniDir = cniDir
        self.checkStale = checkStale
        self.netnsExists = netnsExists
        self.now = now
    }

    public func inspect() throws(SystemError) -> InspectReport {
        let locks = LockSet(cniDir: cniDir)
        // Never create anything in a cache directory that does not exist (a mistyped --cni-dir).
        var gcLock: FileLock?
        if FileSystem.isOwnDirectory(locks.directory) { gcLock = try FileLock(path: locks.gcPath, mode: .shared) }
        defer { gcLock?.unlock() }

        let store = AttachmentStore(cniDir: cniDir)
        let cache = ResultCache(cniDir: cniDir)
        let (records, corruptRecords) = store.all()
        let (entries, corruptEntries) = cache.list()
        var problems = corruptRecords + corruptEntries

        for dir in [store.directory, cache.directory] {
            for name in (try? FileSystem.list(dir)) ?? [] where name.contains(FileSystem.quarantineMarker) {
                problems.append(CacheFileProblem(path: dir + "/" + name, reason: "moved aside: it stood where a cache file belongs"))
            }
        }
        var accounted = Set<String>()
        var out: [InspectedAttachment] = []
        for r in records.sorted(by: { ($0.pod ?? "", $0.key.description) < ($1.pod ?? "", $1.key.description) }) {
            var busy = false
            if FileSystem.isOwnDirectory(locks.directory) {
                if let l = try? FileLock.tryLock(path: locks.bucketPath(r.key.containerID), mode: .exclusive) {
                    l.unlock()
                } else {
                    busy = true
                }
            }
            var networks: [InspectedNetwork] = []
            for n in r.networks {
                let p = cache.path(network: n.list.name, containerID: r.key.containerID, ifname: n.ifname)
                accounted.insert(p)
                var net = InspectedNetwork(name: n.list.name, display: n.displayName, interface: n.ifname, ips: [], mac: nil,
                                           state: "pending", configDigest: SHA256.hex(n.list.bytes))
                switch cache.read(network: n.list.name, containerID: r.key.containerID, ifname: n.ifname) {
                case .entry(let e):
                    net.state = "attached"
                    if let facts = Inspector.facts(e, ifname: n.ifname, cniVersion: n.list.cniVersion) {
                        net.interface = facts.interface ?? n.ifname
                        net.ips = facts.ips
                        net.mac = facts.mac
                    }
                case .corrupt: net.state = "unreadable"
                case .absent: break
                }
                networks.append(net)
            }
            let state: String
            switch r.state {
            case .planned: state = networks.allSatisfy({ $0.state == "attached" }) ? "attached" : "partial"
            case .rollbackFailed: state = "rollback-failed (awaiting DEL)"
            case .deleteFailed: state = "delete-failed (awaiting DEL)"
            }
            let mtime = FileSystem.modificationTime(store.path(r.key))
            out.append(InspectedAttachment(
                plexusNetwork: r.key.network, pod: r.pod, podUID: r.cniArgs["K8S_POD_UID"], containerID: r.key.containerID,
                ifname: r.key.ifname, netns: r.netns, state: state, ageSeconds: mtime.map { max(0, now() - $0) }, busy: busy,
                stale: checkStale && !r.netns.isEmpty ? !netnsExists(r.netns) : nil, networks: networks))
        }
        let orphans = entries.filter { !accounted.contains($0.path) }.map(\.entry)
        return InspectReport(cniDir: cniDir, attachments: out, orphans: orphans, problems: problems)
    }

    /// The sandbox interface, its MAC and its addresses as the cached result states them.
    static func facts(_ e: CachedAttachment, ifname: String, cniVersion: String) -> (interface: String?, mac: String?, ips: [String])? {
        guard let result = e.result,
              let current = try? CNIResult.convert(result, to: "1.1.0", defaultVersion: cniVersion).objectValue
        else { return nil }
        let entry = NetworkStatus.entry(for: AttachmentStatusInput(networkName: e.networkName, requestedIfname: ifname,
                                                                   isDefault: false, result: current))
        return (entry.interface, entry.mac, entry.ips)
    }

}

// MARK: - Output

extension InspectReport {
    public var json: JSON {
        func opt(_ s: String?) -> JSON { s.map { .string($0) } ?? .null }
        let atts: [JSON] = attachments.map { a in
            var o = JSONObject()
            o["plexusNetwork"] = .string(a.plexusNetwork)
            o["pod"] = opt(a.pod)
            o["podUID"] = opt(a.podUID)
            o["containerID"] = .string(a.containerID)
            o["ifname"] = .string(a.ifname)
            o["netns"] = .string(a.netns)
            o["state"] = .string(a.state)
            o["busy"] = .bool(a.busy)
            o["ageSeconds"] = a.ageSeconds.map { .number(String($0)) } ?? .null
            if let s = a.stale { o["stale"] = .bool(s) }
            o["networks"] = .array(a.networks.map { n in
                .object(JSONObject([
                    ("name", .string(n.name)), ("display", .string(n.display)), ("interface", .string(n.interface)),
                    ("ips", .array(n.ips.map { .string($0) })), ("mac", opt(n.mac)), ("state", .string(n.state)),
                    ("configDigest", .string("sha256:" + n.configDigest)),
                ]))
            })
            return .object(o)
        }
        let orphanJSON: [JSON] = orphans.map { e in
            .object(JSONObject([("network", .string(e.networkName)), ("containerID", .string(e.containerID)),
                                ("ifname", .string(e.ifname)),
                                ("owner", e.owner.map { .string("\($0.network)/\($0.ifname)") } ?? .null)]))
        }
        return .object(JSONObject([
            ("cniDir", .string(cniDir)), ("attachments", .array(atts)), ("orphanedResults", .array(orphanJSON)),
            ("unreadableFiles", .array(problems.map { .object(JSONObject([("path", .string($0.path)), ("reason", .string($0.reason))])) })),
        ]))
    }

    /// An aligned table: one row per delegate network, the attachment's columns on its first row.
    public var table: String {
        var rows: [[String]] = [["POD", "CONTAINER", "IFNAME", "STATE", "AGE", "NETWORK", "INTERFACE", "IPS", "MAC", "CONFIG"]]
        for a in attachments {
            var state = a.state
            if a.busy { state += ", busy" }
            if a.stale == true { state += ", stale (netns gone)" }
            let pod = a.pod.map { p in a.podUID.map { "\(p) (\($0.prefix(8)))" } ?? p } ?? "-"
            for (i, n) in a.networks.enumerated() {
                let head = i == 0 ? [pod, String(a.containerID.prefix(12)), "\(a.plexusNetwork)/\(a.ifname)", state,
                                     a.ageSeconds.map(InspectReport.age) ?? "-"] : ["", "", "", "", ""]
                let netState = n.state == "attached" ? "" : " (\(n.state))"
                rows.append(head + [n.display + netState, n.interface, n.ips.isEmpty ? "-" : n.ips.joined(separator: ","),
                                    n.mac ?? "-", String(n.configDigest.prefix(12))])
            }
        }
        var widths = [Int](repeating: 0, count: rows[0].count)
        for r in rows { for (i, c) in r.enumerated() { widths[i] = max(widths[i], c.count) } }
        var text = ""
        for r in rows {
            var line = ""
            for (i, c) in r.enumerated() {
                line += i == r.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count + 2)
            }
            while line.last == " " { line.removeLast() }
            text += line + "\n"
        }
        if attachments.isEmpty { text += "(no attachments in \(cniDir))\n" }
        for e in orphans {
            text += "orphaned result: \(e.networkName) container \(e.containerID) \(e.ifname)"
                + (e.owner.map { " (owner \($0.network)/\($0.ifname), no record)" } ?? " (no owner)") + "\n"
        }
        for p in problems { text += "unreadable: \(p.path): \(p.reason)\n" }
        return text
    }

    static func age(_ s: Int64) -> String {
        if s < 120 { return "\(s)s" }
        if s < 7200 { return "\(s / 60)m" }
        if s < 172_800 { return "\(s / 3600)h" }
        return "\(s / 86400)d"
    }

    /// Whether anything needs an administrator: unreadable files, orphans, failed teardowns, stale records.
    public var needsAttention: Bool {
        !problems.isEmpty || !orphans.isEmpty || attachments.contains { $0.stale == true || $0.state.contains("failed") }
    }
}
