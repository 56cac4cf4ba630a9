#if canImport(Glibc)
import Glibc
#endif
import CNISpec
import SystemKit

/// The node's files as the installer changes them: every write goes through `put`, which keeps the manifest one
/// step ahead of the disk, and every removal through `removeInstalled`, which deletes a file only while its
/// content is still one the installer wrote.
final class NodeFiles {
    let options: InstallOptions
    let logger: Logger
    var manifest: InstallManifest

    init(options: InstallOptions, logger: Logger, owner: String, ownerPod: String?) {
        self.options = options
        self.logger = logger
        manifest = InstallManifest(owner: owner, ownerPod: ownerPod)
    }

    func local(_ hostPath: String) -> String { options.local(hostPath) }

    // MARK: - Manifest

    /// The manifest on disk: nil when there is none; an unusable one is an error (callers decide how to go on).
    func readManifest() throws(InstallError) -> InstallManifest? {
        let path = local(options.manifestPath)
        let bytes: [UInt8]
        do { bytes = try FileSystem.read(path, limit: 1 << 20) } catch {
            if error.isNotFound { return nil }
            throw InstallError("cannot read the install manifest: \(error)")
        }
        return try InstallManifest(bytes: bytes, path: options.manifestPath)
    }

    func saveManifest() throws(InstallError) {
        do {
            try FileSystem.writeAtomically(local(options.manifestPath), PrettyJSON.bytes(manifest.json), mode: 0o600,
                                           durableRename: true)
        } catch {
            throw InstallError("cannot write the install manifest: \(error)")
        }
    }

    /// Holds an exclusive `flock` on the state directory (two installer instances on one node, as during a
    /// surge rollout, never interleave their manifest updates).
    func locked<T>(_ body: () throws(InstallError) -> T) throws(InstallError) -> T {
        let dir = local(options.resolvedStateDir)
        let fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd < 0 { throw InstallError("cannot open the state directory \(dir): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            if errno != EINTR { throw InstallError("cannot lock the state directory \(dir): \(String(cString: strerror(errno)))") }
        }
        return try body()
    }

    // MARK: - Directories

    /// Creates `hostPath` and missing parents (mode `mode`), recording each created one in the manifest first
    /// (once the manifest can be written: the state directory itself is recorded right after it exists).
    func ensureDirectory(_ hostPath: String, mode: UInt32) throws(InstallError) {
        var missing: [String] = []
        var p = hostPath
        while p != "/" && !p.isEmpty && !FileSystem.isDirectory(local(p)) {
            missing.append(p)
            p = FileSystem.directoryName(of: p)
        }
        let manifestWritable = FileSystem.isDirectory(local(options.resolvedStateDir))
        for dir in missing.reversed() {
            if !manifest.directories.contains(dir) { manifest.directories.append(dir) }
            if manifestWritable { try saveManifest() }
            if mkdir(local(dir), mode_t(mode)) != 0 && errno != EEXIST {
                throw InstallError("cannot create directory \(local(dir)): \(String(cString: strerror(errno)))")
            }
            logger.info("created directory", [("path", dir)])
        }
    }

    // MARK: - Files

    /// SHA-256 of a local file; nil when it does not exist, "" when it cannot be read (matches nothing).
    static func hash(ofLocal path: String) -> String? {
        do { return SHA256.hex(try FileSystem.read(path, limit: 1 << 30)) } catch {
            return error.isNotFound ? nil : ""
        }
    }

    /// Writes `bytes` to the node path atomically (temp file in the same directory, fsync, rename, directory
    /// fsync), so a runtime never reads or executes a half-written file. Returns false when the file already has
    /// exactly this content from us.
    @discardableResult
    func put(_ hostPath: String, _ bytes: [UInt8], mode: UInt32, role: InstallManifest.Role) throws(InstallError) -> Bool {
        let path = local(hostPath)
        let digest = SHA256.hex(bytes)
        let current = NodeFiles.hash(ofLocal: path)
        let known = manifest.entry(hostPath)
        if let known, known.sha256 == [digest], current == digest { return false }
        if known == nil, current == digest {
            // Already there with our content (a manifest that was lost, or an identical file): record, don't rewrite.
            manifest.set(.init(path: hostPath, role: role, sha256: [digest], replacedExisting: true))
            try saveManifest()
            logger.info("adopted an identical existing file", [("path", hostPath)])
            return false
        }
        var replaced = known?.replacedExisting ?? false
        var ours: [String] = []
        if let current {
            if let known, known.sha256.contains(current) {
                ours = [current]
            } else if known == nil {
                replaced = true
                logger.warning("replacing a file the installer did not write", [("path", hostPath)])
            } else if current != digest {
                logger.warning("rewriting a file that was changed by someone else", [("path", hostPath)])
            }
        }
        try ensureDirectory(FileSystem.directoryName(of: hostPath), mode: 0o755)
        manifest.set(.init(path: hostPath, role: role, sha256: ours.filter { $0 != digest } + [digest],
                           replacedExisting: replaced))
        try saveManifest()
        do { try FileSystem.writeAtomically(path, bytes, mode: mode, durableRename: true) } catch {
            throw InstallError("cannot write \(path): \(error)")
        }
        manifest.set(.init(path: hostPath, role: role, sha256: [digest], replacedExisting: replaced))
        try saveManifest()
        return true
    }

    /// Removes our leftover temp files of `hostPath` (`.<name>.tmp.<pid>`, from a writer that was killed).
    func sweepTemporaries(of hostPath: String) {
        let dir = local(FileSystem.directoryName(of: hostPath))
        let prefix = "." + FileSystem.baseName(of: hostPath) + ".tmp."
        for name in (try? FileSystem.list(dir)) ?? [] where name.hasPrefix(prefix) {
            try? FileSystem.remove(dir + "/" + name)
        }
    }

    /// Removes the installed file of `entry` if its content is still ours. Returns false when it was left in place.
    func removeInstalled(_ entry: InstallManifest.Entry) throws(InstallError) -> Bool {
        let path = local(entry.path)
        sweepTemporaries(of: entry.path)
        guard let current = NodeFiles.hash(ofLocal: path) else { return true }
        guard entry.sha256.contains(current) else {
            logger.warning("leaving a file somebody else changed or replaced", [("path", entry.path)])
            return false
        }
        do { try FileSystem.remove(path) } catch { throw InstallError("cannot remove \(path): \(error)") }
        FileSystem.syncDirectory(FileSystem.directoryName(of: path))
        logger.info("removed", [("path", entry.path)])
        return true
    }

    /// Removes every file of the manifest (configuration first, binaries last), then the manifest, then the
    /// directories the installer created if they are empty. Returns the node paths left in place.
    func removeEverything() throws(InstallError) -> [String] {
        var left: [String] = []
        for role in InstallManifest.Role.allCases.reversed() {
            for entry in manifest.files where entry.role == role {
                if try !removeInstalled(entry) { left.append(entry.path) }
                manifest.remove(entry.path)
                try saveManifest()
            }
        }
        sweepTemporaries(of: options.manifestPath)
        do { try FileSystem.remove(local(options.manifestPath)) } catch {
            throw InstallError("cannot remove the install manifest: \(error)")
        }
        return left
    }

    /// Removes the directories the installer created, deepest first, where empty.
    func removeCreatedDirectories(_ dirs: [String]) -> [String] {
        var left: [String] = []
        for dir in dirs.reversed() {
            if rmdir(local(dir)) == 0 || errno == ENOENT {
                logger.info("removed directory", [("path", dir)])
            } else {
                logger.warning("leaving a directory that is not empty", [("path", dir)])
                left.append(dir)
            }
        }
        return left
    }
}
