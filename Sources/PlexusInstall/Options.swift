import CNISpec
import SystemKit

/// A failure the installer reports as one clear line and a non-zero exit (2 for usage errors, 1 otherwise).
public struct InstallError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var exitCode: Int32

    public init(_ message: String, exitCode: Int32 = 1) {
        self.message = message
        self.exitCode = exitCode
    }

    public static func usage(_ message: String) -> InstallError { InstallError(message, exitCode: 2) }

    public var description: String { message }
}

/// What `plexus-install` is asked to do.
public enum InstallCommand: String, Sendable, CaseIterable {
    /// Install, then watch (regenerate on change) until SIGTERM/SIGINT, then remove what was installed.
    case install
    /// Remove what the install manifest lists (files somebody else replaced are left alone).
    case uninstall
    /// Exit 0 when the installation on disk is complete and unmodified (the DaemonSet's readiness probe).
    case status
    /// Print the configuration that would be written, write nothing.
    case render
    case help
}

/// Every option, from flags (`--name=value` or `--name value`) or the environment (`PLEXUS_NAME`); flags win.
/// Directories named "host" are paths on the node: the installer reaches them under `hostRoot` (the DaemonSet
/// mounts the node's directories under `/host`) and writes them, without the prefix, into the files it generates.
public struct InstallOptions: Sendable, Equatable {
    public var command: InstallCommand = .install
    /// Prefix under which the node's file system is mounted ("" = this file system).
    public var hostRoot = ""
    /// Host path scanned for the primary network configuration and where the generated conflist goes.
    public var cniConfDir = "/etc/cni/net.d"
    /// Host path the binaries are installed into.
    public var cniBinDir = "/opt/cni/bin"
    /// Local path holding the binaries to install (default: the directory of the running installer).
    public var sourceBinDir: String?
    public var binaries = ["plexus"]
    /// File name of the generated conflist in `cniConfDir`; it must sort first so the runtime picks it.
    public var configName = "00-plexus.conflist"
    /// `name` of the generated network list (Plexus' attachment records carry it: keep it stable).
    public var networkName = "plexus-cni-network"
    /// Use this file of `cniConfDir` as the primary network instead of the first one.
    public var primaryConfig: String?
    /// Host path of the installer's state: manifest, kubeconfig and the mirrored token and CA.
    public var stateDir: String?
    /// Host path of the generated kubeconfig.
    public var kubeconfigPath: String?
    /// Local (in-pod) paths of the projected service account token and the cluster CA.
    public var tokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    public var caFile = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    /// `https://host:port`; default: `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT`.
    public var apiServer: String?
    /// Generate no kubeconfig (Plexus without Kubernetes: no NADs, no network-status).
    public var skipKubeconfig = false
    /// Local path of a JSON object of Plexus settings (the DaemonSet's ConfigMap); re-read on change.
    public var settingsFile: String?
    /// Plexus settings given as flags or environment variables; they override the settings file.
    public var settings = JSONObject()
    public var intervalMilliseconds = 1000
    /// Install and exit, without watching and without removing anything on exit.
    public var once = false
    public var logLevel: LogLevel = .info

    public init() {}

    public var resolvedStateDir: String { stateDir ?? cniConfDir + "/plexus.d" }
    public var resolvedKubeconfigPath: String { kubeconfigPath ?? resolvedStateDir + "/plexus.kubeconfig" }
    public var manifestPath: String { resolvedStateDir + "/install-manifest.json" }
    public var mirroredTokenPath: String { resolvedStateDir + "/token" }
    public var mirroredCAPath: String { resolvedStateDir + "/ca.crt" }
    public var configPath: String { cniConfDir + "/" + configName }

    /// Where a host path is reached from this process.
    public func local(_ hostPath: String) -> String { hostRoot.isEmpty ? hostPath : hostRoot + hostPath }
}

/// One option: its flag, environment variable, value placeholder (nil for a boolean) and help line.
public struct OptionSpec: Sendable {
    public let flag: String
    public let placeholder: String?
    public let help: String
    let apply: @Sendable (inout InstallOptions, String) throws(InstallError) -> Void

    /// `--cni-conf-dir` reads `PLEXUS_CNI_CONF_DIR`.
    public var environmentName: String {
        "PLEXUS_" + String(String(flag.dropFirst(2)).uppercased().map { $0 == "-" ? "_" : $0 })
    }
}

extension InstallOptions {
    static func absolute(_ flag: String, _ v: String) throws(InstallError) -> String {
        guard v.hasPrefix("/") else { throw .usage("\(flag) must be an absolute path, got \"\(v)\"") }
        var p = v
        while p.count > 1 && p.hasSuffix("/") { p.removeLast() }
        return p
    }

    static func boolean(_ flag: String, _ v: String) throws(InstallError) -> Bool {
        switch v.lowercased() {
        case "", "true", "1", "yes": return true
        case "false", "0", "no": return false
        default: throw .usage("\(flag) takes true or false, got \"\(v)\"")
        }
    }

    static func fileName(_ flag: String, _ v: String) throws(InstallError) -> String {
        guard !v.isEmpty, !v.contains("/"), v != ".", v != ".." else {
            throw .usage("\(flag) must be a plain file name, got \"\(v)\"")
        }
        return v
    }

    static func commaList(_ v: String) -> [String] {
        v.split(separator: ",").map { $0.trimmingSpaces }.filter { !$0.isEmpty }
    }

    private static func path(_ flag: String, _ set: @escaping @Sendable (inout InstallOptions, String) -> Void,
                             _ help: String) -> OptionSpec {
        OptionSpec(flag: flag, placeholder: "PATH", help: help) { (o: inout InstallOptions, v: String) throws(InstallError) in
            set(&o, try absolute(flag, v))
        }
    }

    private static func flagOption(_ flag: String, _ set: @escaping @Sendable (inout InstallOptions, Bool) -> Void,
                                   _ help: String) -> OptionSpec {
        OptionSpec(flag: flag, placeholder: nil, help: help) { (o: inout InstallOptions, v: String) throws(InstallError) in
            set(&o, try boolean(flag, v))
        }
    }

    /// The installer's own options.
    public static let installerOptions: [OptionSpec] = [
        OptionSpec(flag: "--host-root", placeholder: "PATH",
                   help: "where the node's file system is mounted (the DaemonSet uses /host; default: none)") {
            (o: inout InstallOptions, v: String) throws(InstallError) in
            o.hostRoot = v == "/" ? "" : try absolute("--host-root", v)
        },
        path("--cni-conf-dir", { $0.cniConfDir = $1 }, "node directory of CNI configurations (default /etc/cni/net.d)"),
        path("--cni-bin-dir", { $0.cniBinDir = $1 }, "node directory of CNI plugin binaries (default /opt/cni/bin)"),
        path("--source-bin-dir", { $0.sourceBinDir = $1 },
             "local directory holding the binaries to install (default: the installer's own directory)"),
        OptionSpec(flag: "--binaries", placeholder: "NAME,...", help: "binaries to install (default plexus)") {
            (o: inout InstallOptions, v: String) throws(InstallError) in
            let names = commaList(v)
            guard !names.isEmpty else { throw .usage("--binaries needs at least one name") }
            o.binaries = try names.map { (n: String) throws(InstallError) in try fileName("--binaries", n) }
        },
        OptionSpec(flag: "--config-name", placeholder: "NAME",
                   help: "file name of the generated conflist (default 00-plexus.conflist; it must sort first)") {
            (o: inout InstallOptions, v: String) throws(InstallError) in
            let n = try fileName("--config-name", v)
            guard n.hasSuffix(".conflist") else { throw .usage("--config-name must end in .conflist, got \"\(n)\"") }
            o.configName = n
        },
        OptionSpec(flag: "--network-name", placeholder: "NAME",
                   help: "name of the generated network list (default plexus-cni-network)") {
            (o: inout InstallOptions, v: String) throws(InstallError) in
            guard (try? CNIValidation.validateNetworkName(v)) != nil else {
                throw .usage("--network-name \"\(v)\" is not a valid CNI network name")
            }
            o.networkName = v
        },
        OptionSpec(flag: "--primary-config", placeholder: "NAME",
                   help: "use this file of the conf dir as the cluster network (default: the first, as runtimes do)") {
            (o: inout InstallOptions, v: String) throws(InstallError) in
            o.primaryConfig = try fileName("--primary-config", v)
        },
        path("--state-dir", { $0.stateDir = $1 }, "node directory for the manifest, kubeconfig, token and CA "
            + "(default <cni-conf-dir>/plexus.d)"),
        path("--kubeconfig-path", { $0.kubeconfigPath = $1 }, "node path of the generated kubeconfig "
            + "(default <state-dir>/plexus.kubeconfig)"),
        path("--token-file", { $0.tokenFile = $1 }, "local path of the projected service account token "
            + "(default /var/run/secrets/kubernetes.io/serviceaccount/token)"),
        path("--ca-file", { $0.caFile = $1 }, "local path of the cluster CA (default: ca.crt next to the token)"),
        OptionSpec(flag: "--api-server", placeholder: "URL",
                   help: "API server URL (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)") {
            (o: inout InstallOptions, v: String) throws(InstallError) in
            guard v.hasPrefix("https://") || v.hasPrefix("http://") else {
                throw .usage("--api-server must be an http(s) URL, got \"\(v)\"")
            }
            o.apiServer = v
        },
        flagOption("--skip-kubeconfig", { $0.skipKubeconfig = $1 }, "write no kubeconfig (Plexus without Kubernetes)"),
        path("--settings-file", { $0.settingsFile = $1 }, "local JSON file of Plexus settings (the ConfigMap), re-read on change"),
        OptionSpec(flag: "--interval-ms", placeholder: "MS", help: "watch interval (default 1000)") {
            (o: inout InstallOptions, v: String) throws(InstallError) in
            guard let n = Int(v), n >= 10, n <= 3_600_000 else {
                throw .usage("--interval-ms takes 10 to 3600000, got \"\(v)\"")
            }
            o.intervalMilliseconds = n
        },
        flagOption("--once", { $0.once = $1 }, "install and exit: no watching, nothing removed on exit"),
        OptionSpec(flag: "--install-log-level", placeholder: "LEVEL", help: "installer log level (default info)") {
            (o: inout InstallOptions, v: String) throws(InstallError) in
            guard let l = LogLevel(name: v) else { throw .usage("--install-log-level: unknown level \"\(v)\"") }
            o.logLevel = l
        },
    ]

    /// Options that become keys of the generated Plexus configuration.
    public static let settingOptions: [OptionSpec] = PlexusSettings.known.compactMap { s in
        guard let flag = s.flag else { return nil }
        return OptionSpec(flag: flag, placeholder: s.kind == .bool ? nil : s.kind.placeholder,
                          help: "Plexus setting \"\(s.key)\"") { (o: inout InstallOptions, v: String) throws(InstallError) in
            o.settings[s.key] = try PlexusSettings.value(fromText: v, for: s, origin: flag)
        }
    }

    public static var allOptions: [OptionSpec] { installerOptions + settingOptions }

    /// Parses the command line (without argv[0]) over the environment. Empty environment values count as unset.
    public static func parse(arguments: [String], environment: [String: String]) throws(InstallError) -> InstallOptions {
        var o = InstallOptions()
        let specs = allOptions
        for spec in specs {
            if let v = environment[spec.environmentName], !v.isEmpty { try spec.apply(&o, v) }
        }
        var i = 0
        var commandSeen = false
        while i < arguments.count {
            let arg = arguments[i]
            i += 1
            if arg == "-h" || arg == "--help" { o.command = .help; return o }
            guard arg.hasPrefix("--") else {
                guard !commandSeen, let c = InstallCommand(rawValue: arg) else {
                    throw .usage("unexpected argument \"\(arg)\" (commands: install, uninstall, status, render; see --help)")
                }
                o.command = c
                commandSeen = true
                continue
            }
            var name = arg
            var value: String?
            if let eq = arg.firstIndex(of: "=") {
                name = String(arg[..<eq])
                value = String(arg[arg.index(after: eq)...])
            }
            guard let spec = specs.first(where: { $0.flag == name }) else {
                throw .usage("unknown option \(name) (see --help)")
            }
            if value == nil && spec.placeholder != nil {
                guard i < arguments.count else { throw .usage("\(name) needs a value") }
                value = arguments[i]
                i += 1
            }
            try spec.apply(&o, value ?? "true")
        }
        return o
    }

    public static var helpText: String {
        var s = """
        usage: plexus-install [install|uninstall|status|render] [options]

          install    copy the binaries, generate \(InstallOptions().configName) from the node's primary CNI
                     configuration and a kubeconfig, then watch (regenerate on change); on SIGTERM or SIGINT
                     remove exactly what was installed (the default command)
          uninstall  remove what the install manifest lists, except files somebody else changed
          status     exit 0 when the installation is complete and unmodified (readiness probe)
          render     print the configuration that would be generated; write nothing

        Every option can also be given as an environment variable (shown in brackets); flags win.

        """
        func line(_ spec: OptionSpec) -> String {
            let left = spec.flag + (spec.placeholder.map { " " + $0 } ?? "")
            return "  \(left)  [\(spec.environmentName)]\n      \(spec.help)\n"
        }
        s += "installer options:\n"
        for spec in installerOptions { s += line(spec) }
        s += "\nPlexus settings (written into the generated configuration; override the settings file):\n"
        for spec in settingOptions { s += line(spec) }
        return s
    }
}
