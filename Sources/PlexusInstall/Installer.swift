#if canImport(Glibc)
import Glibc
#endif
import CNISpec
import SystemKit

/// The node installer: binaries, the generated conflist, the kubeconfig with the mirrored token and CA, the
/// watch loop, and removal of exactly what it wrote. See CONVENTIONS.md ("Installer") for the on-disk contract.
///
/// The projected service account token lives in the pod, at a path the node's runtime (which runs Plexus) cannot
/// know; the installer therefore mirrors it, atomically and on every change, into the state directory, and the
/// kubeconfig names that copy by `tokenFile`. Plexus reads the file on every ADD, so a rotated token is in use
/// within one watch interval and no token is ever embedded in a file that outlives it.
public final class Installer {
    public enum Outcome: Sendable, Equatable {
        /// No primary network configuration yet: nothing but the binaries was written.
        case waitingForPrimary
        case upToDate
        case updated
        /// Another installer instance took the node over (a newer pod during a rollout): this one stops writing.
        case passive
    }

    public let options: InstallOptions
    public let owner: String
    let environment: [String: String]
    let logger: Logger
    let files: NodeFiles

    private var fileSettings = JSONObject()
    private var settingsFileDigest: String?
    private var server: String?
    private var lastPrimary: String?
    private var lastSkipped: [Detection.Skipped] = []
    private var lastShadowing: [String] = []
    private var binaryStamps: [String: FileStamp] = [:]
    public private(set) var isPassive = false

    public init(options: InstallOptions, environment: [String: String], logger: Logger, owner: String? = nil) {
        self.options = options
        self.environment = environment
        self.logger = logger
        self.owner = owner ?? Installer.randomOwner()
        var pod: String?
        if let name = environment["POD_NAME"], !name.isEmpty {
            pod = (environment["POD_NAMESPACE"].map { $0 + "/" } ?? "") + name
        }
        files = NodeFiles(options: options, logger: logger, owner: self.owner, ownerPod: pod)
    }

    static func randomOwner() -> String {
        var g = SystemRandomNumberGenerator()
        return String(g.next(), radix: 16) + String(g.next(), radix: 16)
    }

    var sourceBinDir: String {
        if let d = options.sourceBinDir { return d }
        return ProcessEnvironment.executablePath().map { FileSystem.directoryName(of: $0) } ?? "."
    }

    // MARK: - Checks before anything is written

    /// Validates every input (source binaries, settings, API server, token and CA) so that a bad option fails
    /// the installer before it writes anything.
    public func prepare(checkBinaries: Bool = true) throws(InstallError) {
        if checkBinaries {
            for name in options.binaries {
                let p = sourceBinDir + "/" + name
                guard FileSystem.isRegularFile(p), access(p, X_OK) == 0 else {
                    throw InstallError("binary to install \(p) does not exist or is not executable "
                        + "(set --source-bin-dir)")
                }
            }
        }
        try refreshSettings()
        if !options.skipKubeconfig {
            guard let s = options.apiServer ?? ConfigGenerator.inClusterServer(environment) else {
                throw InstallError("cannot tell the API server's address: set --api-server, or run in a pod "
                    + "(KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT), or pass --skip-kubeconfig")
            }
            server = s
            _ = try readSecretInput(options.tokenFile, what: "service account token")
            _ = try readSecretInput(options.caFile, what: "cluster CA")
        }
    }

    /// Reads the settings file when its content changed. Invalid content is an error and leaves the previous
    /// settings in force.
    private func refreshSettings() throws(InstallError) {
        guard let path = options.settingsFile else { return }
        let bytes: [UInt8]
        do { bytes = try FileSystem.read(path, limit: 1 << 20) } catch {
            throw InstallError("cannot read the settings file: \(error)")
        }
        let digest = SHA256.hex(bytes)
        if digest == settingsFileDigest { return }
        fileSettings = try PlexusSettings.parseFile(bytes, path: path)
        if settingsFileDigest != nil { logger.info("settings file changed", [("path", path)]) }
        settingsFileDigest = digest
    }

    /// The token or CA bytes (never logged): non-empty, from the pod's projected volume.
    private func readSecretInput(_ path: String, what: String) throws(InstallError) -> [UInt8] {
        let bytes: [UInt8]
        do { bytes = try FileSystem.read(path, limit: 1 << 20) } catch {
            throw InstallError("cannot read the \(what) \(path): \(error)")
        }
        guard bytes.contains(where: { $0 > 0x20 }) else { throw InstallError("the \(what) \(path) is empty") }
        return bytes
    }

    public var settings: JSONObject { PlexusSettings.merge(file: fileSettings, overrides: options.settings) }

    // MARK: - Install

    /// Creates the state directory and makes this instance the node's installer (adopting what an earlier
    /// instance recorded, so its files are still removed on uninstall).
    public func takeOver() throws(InstallError) {
        try files.ensureDirectory(options.resolvedStateDir, mode: 0o700)
        let created = files.manifest.directories
        try files.locked { () throws(InstallError) in
            var m: InstallManifest
            do throws(InstallError) {
                m = try files.readManifest() ?? InstallManifest(owner: owner)
            } catch {
                logger.error("ignoring an unusable install manifest; its files are adopted when rewritten",
                             [("error", error.message)])
                m = InstallManifest(owner: owner)
            }
            if m.owner != owner && !m.files.isEmpty {
                logger.info("taking over the node's installation", [("previousOwner", m.owner)])
            }
            m.owner = owner
            m.ownerPod = files.manifest.ownerPod
            for d in created where !m.directories.contains(d) { m.directories.append(d) }
            files.manifest = m
            try files.saveManifest()
        }
    }

    /// Copies each binary to the CNI bin directory unless it is already there with the same content.
    public func installBinaries() throws(InstallError) {
        try files.locked { () throws(InstallError) in
            for name in options.binaries { _ = try installBinary(name) }
        }
    }

    private func installBinary(_ name: String) throws(InstallError) -> Bool {
        let source = sourceBinDir + "/" + name
        let bytes: [UInt8]
        do { bytes = try FileSystem.read(source, limit: 512 << 20) } catch {
            throw InstallError("cannot read the binary to install: \(error)")
        }
        let dest = options.cniBinDir + "/" + name
        let written = try files.put(dest, bytes, mode: 0o755, role: .binary)
        if written {
            logger.info("installed binary", [("path", dest), ("sha256", files.manifest.entry(dest)?.sha256.first ?? "")])
        }
        binaryStamps[name] = FileStamp(local: files.local(dest))
        return written
    }

    /// One pass: checks ownership, settings, binaries, the primary configuration, token and CA, and rewrites
    /// whatever is missing or stale. Safe to call repeatedly; a pass with no change writes nothing.
    public func reconcile() throws(InstallError) -> Outcome {
        if isPassive { return .passive }
        return try files.locked { () throws(InstallError) -> Outcome in
            let onDisk: InstallManifest?
            do throws(InstallError) { onDisk = try files.readManifest() } catch {
                logger.error("the install manifest became unusable; rewriting it", [("error", error.message)])
                onDisk = files.manifest
            }
            guard let m = onDisk, m.owner == owner else {
                isPassive = true
                logger.info("another installer instance manages this node now; this one stops writing",
                            [("owner", onDisk?.owner ?? "none")])
                return .passive
            }
            files.manifest = m
            try refreshSettings()
            var changed = false
            for name in options.binaries where FileStamp(local: files.local(options.cniBinDir + "/" + name)) != binaryStamps[name] {
                if try installBinary(name) { changed = true }
            }
            let detection = try PrimaryDetector.detect(localDir: files.local(options.cniConfDir),
                                                       hostDir: options.cniConfDir, ownName: options.configName,
                                                       forced: options.primaryConfig)
            report(detection)
            guard let primary = detection.primary else { return .waitingForPrimary }
            var kubeconfigPath: String?
            if !options.skipKubeconfig, let server {
                let token = try readSecretInput(options.tokenFile, what: "service account token")
                let ca = try readSecretInput(options.caFile, what: "cluster CA")
                if try files.put(options.mirroredTokenPath, token, mode: 0o600, role: .token) {
                    logger.info("service account token mirrored", [("path", options.mirroredTokenPath)])
                }
                if try files.put(options.mirroredCAPath, ca, mode: 0o644, role: .ca) {
                    logger.info("cluster CA mirrored", [("path", options.mirroredCAPath)])
                }
                let kc = ConfigGenerator.kubeconfig(server: server, caHostPath: options.mirroredCAPath,
                                                    tokenHostPath: options.mirroredTokenPath)
                if try files.put(options.resolvedKubeconfigPath, PrettyJSON.bytes(kc), mode: 0o600, role: .kubeconfig) {
                    logger.info("kubeconfig written", [("path", options.resolvedKubeconfigPath), ("server", server)])
                    changed = true
                }
                kubeconfigPath = options.resolvedKubeconfigPath
            }
            let conf = try generate(primary: primary, kubeconfigPath: kubeconfigPath)
            if try files.put(options.configPath, PrettyJSON.bytes(conf), mode: 0o644, role: .config) {
                logger.info("configuration written", [("path", options.configPath), ("clusterNetwork", primary.hostPath),
                                                      ("cniVersion", conf["cniVersion"]?.stringValue ?? "")])
                changed = true
            }
            return changed ? .updated : .upToDate
        }
    }

    func generate(primary: PrimaryNetwork, kubeconfigPath: String?) throws(InstallError) -> JSON {
        try ConfigGenerator.conflist(primary: primary, networkName: options.networkName, settings: settings,
                                     kubeconfigHostPath: kubeconfigPath, binDir: options.cniBinDir)
    }

    /// Logs what changed since the last scan (so a 1 s watch does not repeat itself).
    private func report(_ d: Detection) {
        for s in d.skipped where !lastSkipped.contains(s) {
            if s.file == options.configName { continue }
            logger.warning("skipping a CNI configuration file", [("file", s.file), ("reason", s.reason)])
        }
        lastSkipped = d.skipped
        if d.shadowing != lastShadowing && !d.shadowing.isEmpty {
            logger.warning("configuration files sort before Plexus' and will be used by the runtime instead; remove them",
                           [("files", d.shadowing.joined(separator: ",")), ("plexus", options.configName)])
        }
        lastShadowing = d.shadowing
        let name = d.primary.map { "\($0.fileName):\($0.sha256)" }
        if name != lastPrimary {
            if let p = d.primary {
                logger.info("primary network configuration", [("file", p.fileName), ("network", p.list.name),
                                                              ("cniVersion", p.list.cniVersion)])
            } else {
                logger.warning("no primary network configuration; waiting for one", [("dir", options.cniConfDir)])
            }
        }
        lastPrimary = name
    }

    // MARK: - Render, status, uninstall

    /// The configuration that would be written now (nothing is written).
    public func render() throws(InstallError) -> [UInt8] {
        try prepare(checkBinaries: false)
        let d = try PrimaryDetector.detect(localDir: files.local(options.cniConfDir), hostDir: options.cniConfDir,
                                           ownName: options.configName, forced: options.primaryConfig)
        guard let primary = d.primary else {
            throw InstallError("no primary network configuration in \(files.local(options.cniConfDir))"
                + d.skipped.map { "; skipped \($0.file): \($0.reason)" }.joined())
        }
        return PrettyJSON.bytes(try generate(primary: primary,
                                             kubeconfigPath: options.skipKubeconfig ? nil : options.resolvedKubeconfigPath))
    }

    /// Whether the installation on disk is complete and unmodified: the manifest lists the configuration, and
    /// every listed file has one of its recorded hashes.
    public static func status(options: InstallOptions) -> (ok: Bool, message: String) {
        let files = NodeFiles(options: options, logger: Logger(level: .panic), owner: "", ownerPod: nil)
        let m: InstallManifest
        do {
            guard let read = try files.readManifest() else { return (false, "not installed: no install manifest") }
            m = read
        } catch {
            return (false, error.message)
        }
        guard m.files.contains(where: { $0.role == .config }) else {
            return (false, "not ready: no configuration written yet (waiting for a primary network configuration?)")
        }
        for e in m.files {
            switch NodeFiles.hash(ofLocal: files.local(e.path)) {
            case nil: return (false, "missing: \(e.path)")
            case let h? where !e.sha256.contains(h): return (false, "changed by someone else: \(e.path)")
            default: continue
            }
        }
        return (true, "installed: \(m.files.count) files, owner \(m.owner)")
    }

    /// Removes what the manifest lists. Unless `force`, only the owning instance removes anything (an older pod
    /// stopping after a newer one took over leaves the newer one's files alone). Returns the paths left in place.
    @discardableResult
    public func uninstall(force: Bool) throws(InstallError) -> [String] {
        guard FileSystem.isDirectory(files.local(options.resolvedStateDir)) else {
            logger.info("nothing to uninstall: no state directory", [("path", options.resolvedStateDir)])
            return []
        }
        var directories: [String] = []
        let left = try files.locked { () throws(InstallError) -> [String] in
            guard let m = try files.readManifest() else {
                logger.info("nothing to uninstall: no install manifest", [("path", options.manifestPath)])
                return []
            }
            if !force && m.owner != owner {
                logger.info("another installer instance manages this node; leaving its files", [("owner", m.owner)])
                return []
            }
            files.manifest = m
            directories = m.directories
            return try files.removeEverything()
        }
        return left + files.removeCreatedDirectories(directories)
    }

    // MARK: - The DaemonSet's main loop

    /// Installs, then watches until a stop signal, then uninstalls (unless `--once`, or another instance took
    /// over). Errors before the first complete installation are fatal; later ones are logged and retried.
    public func run(waiter: SignalWaiter = SignalWaiter()) throws(InstallError) {
        waiter.block()
        try prepare()
        try takeOver()
        try installBinaries()
        var outcome = try reconcile()
        while outcome == .waitingForPrimary {
            if let sig = waiter.wait(milliseconds: options.intervalMilliseconds) {
                return try stop(sig)
            }
            outcome = try reconcile()
        }
        logger.info("installed", [("config", options.configPath), ("owner", owner)])
        if options.once { return }
        var lastError: String?
        while true {
            if let sig = waiter.wait(milliseconds: options.intervalMilliseconds) { return try stop(sig) }
            if isPassive { continue }
            do {
                _ = try reconcile()
                if lastError != nil { logger.info("watch pass succeeded again") }
                lastError = nil
            } catch {
                // Once per distinct failure, not once per interval.
                if error.message != lastError {
                    logger.error("watch pass failed; keeping the last good installation", [("error", error.message)])
                }
                lastError = error.message
            }
        }
    }

    private func stop(_ sig: Int32) throws(InstallError) {
        if isPassive {
            logger.info("stopping; another instance manages the node", [("signal", SignalWaiter.name(sig))])
            return
        }
        logger.info("stopping: removing what was installed", [("signal", SignalWaiter.name(sig))])
        let left = try uninstall(force: false)
        if !left.isEmpty {
            logger.warning("uninstall left paths in place", [("paths", left.joined(separator: ","))])
        }
    }
}

/// Cheap change detection for installed binaries between watch passes (no rehash unless this changes).
struct FileStamp: Equatable {
    var size: Int64
    var mtime: Int64
    var inode: UInt64

    init?(local path: String) {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        size = Int64(st.st_size)
        mtime = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
        inode = UInt64(st.st_ino)
    }
}
