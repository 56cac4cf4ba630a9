import CNISpec
import SystemKit

/// What the installer wrote on the node, so that uninstall removes exactly that. Written atomically before every
/// change it describes: a file is listed (with every hash it may have during the change) before it is written,
/// so a crash at any point leaves a manifest that covers what is on disk.
public struct InstallManifest: Sendable, Equatable {
    public static let kind = "plexusInstallManifestV1"

    public enum Role: String, Sendable, CaseIterable {
        // In install order; uninstall goes the other way (the configuration first, so no runtime calls a
        // removed binary through it).
        case binary, token, ca, kubeconfig, config
    }

    public struct Entry: Sendable, Equatable {
        /// Node path (without the host-root prefix).
        public var path: String
        public var role: Role
        /// SHA-256 digests the file may have that are ours: one, or two while it is being replaced.
        public var sha256: [String]
        /// A file of that name existed before the installer first wrote it (it is still removed on uninstall
        /// when its content is the installer's).
        public var replacedExisting: Bool

        public init(path: String, role: Role, sha256: [String], replacedExisting: Bool = false) {
            self.path = path
            self.role = role
            self.sha256 = sha256
            self.replacedExisting = replacedExisting
        }
    }

    /// The installer instance that manages the node; an instance that finds another owner stops writing.
    public var owner: String
    /// `namespace/name` of the owner's pod, for people reading the file.
    public var ownerPod: String?
    public var files: [Entry] = []
    /// Directories the installer created (node paths, parents first); removed on uninstall when empty.
    public var directories: [String] = []

    public init(owner: String, ownerPod: String? = nil) {
        self.owner = owner
        self.ownerPod = ownerPod
    }

    public func entry(_ path: String) -> Entry? { files.first { $0.path == path } }

    public mutating func set(_ e: Entry) {
        if let i = files.firstIndex(where: { $0.path == e.path }) { files[i] = e } else { files.append(e) }
    }

    public mutating func remove(_ path: String) { files.removeAll { $0.path == path } }

    public var json: JSON {
        var o = JSONObject()
        o["kind"] = .string(InstallManifest.kind)
        o["owner"] = .string(owner)
        if let ownerPod { o["ownerPod"] = .string(ownerPod) }
        o["files"] = .array(files.map { e in
            .object(JSONObject([("path", .string(e.path)), ("role", .string(e.role.rawValue)),
                                ("sha256", .array(e.sha256.map { .string($0) })),
                                ("replacedExisting", .bool(e.replacedExisting))]))
        })
        o["directories"] = .array(directories.map { .string($0) })
        return .object(o)
    }

    /// Strict: a manifest of another kind or shape is an error naming `path` (uninstall must not guess).
    public init(bytes: [UInt8], path: String) throws(InstallError) {
        func bad(_ why: String) -> InstallError { InstallError("install manifest \(path) is not usable: \(why)") }
        let json: JSON
        do { json = try JSON.parse(bytes) } catch { throw bad("\(error)") }
        guard json["kind"]?.stringValue == InstallManifest.kind else {
            throw bad("kind is not \(InstallManifest.kind)")
        }
        guard let owner = json["owner"]?.stringValue else { throw bad("no owner") }
        self.owner = owner
        ownerPod = json["ownerPod"]?.stringValue
        guard let files = json["files"]?.arrayValue, let dirs = json["directories"]?.arrayValue else {
            throw bad("no files or directories list")
        }
        for f in files {
            guard let p = f["path"]?.stringValue, p.hasPrefix("/"),
                  let role = f["role"]?.stringValue.flatMap(Role.init(rawValue:)),
                  let hashes = f["sha256"]?.arrayValue?.compactMap(\.stringValue) else {
                throw bad("a files entry lacks an absolute path, a known role or its sha256 list: \(f.serialized())")
            }
            self.files.append(Entry(path: p, role: role, sha256: hashes,
                                    replacedExisting: f["replacedExisting"]?.boolValue ?? false))
        }
        directories = try dirs.map { (d: JSON) throws(InstallError) in
            guard let s = d.stringValue, s.hasPrefix("/") else { throw bad("a directories entry is not an absolute path") }
            return s
        }
    }
}
