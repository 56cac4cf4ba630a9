// plexus-admin: the administrator's commands, also reached as `plexus inspect` and `plexus validate` (the plugin
// binary hands them over with execve, so the CNI hot path never links or loads swift-argument-parser).
import ArgumentParser
import CNISpec
import KubeClient
import PlexusAdmin
import PlexusCore
import SystemKit

#if canImport(Glibc)
import Glibc
#endif

func printErr(_ s: String) { _ = Array((s + "\n").utf8).withUnsafeBytes { write(2, $0.baseAddress, $0.count) } }

/// The Plexus plugin object inside a conflist or conf file (the one with `"type": "plexus"`).
func plexusObject(in path: String) throws(ValidationError) -> JSONObject {
    guard let bytes = try? FileSystem.read(path), let json = try? JSON.parse(bytes), let o = json.objectValue else {
        throw ValidationError("\(path) is not a readable JSON configuration")
    }
    if let (_, plugin) = Validator.plexusPlugin(in: o) { return plugin }
    throw ValidationError("\(path) has no plugin of type \"plexus\"")
}

struct Admin: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plexus",
        abstract: "Plexus administration: what is attached on this node, and whether a configuration will work.",
        subcommands: [Inspect.self, Validate.self])
}

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List every attachment Plexus' cache on this node records (reads only the cache; no API needed).")

    @Option(help: "Plexus' cache directory (the `cniDir` key).")
    var cniDir: String?

    @Option(help: "Read `cniDir` from this Plexus configuration file (e.g. /etc/cni/net.d/00-plexus.conflist).")
    var config: String?

    @Flag(help: "Also mark attachments whose network namespace no longer exists.")
    var stale = false

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func run() throws {
        var dir = cniDir ?? "/var/lib/cni/multus"
        if cniDir == nil, let config {
            let o = try plexusObject(in: config)
            if let d = o["cniDir"]?.stringValue, !d.isEmpty { dir = d }
        }
        guard FileSystem.isDirectory(dir) else {
            printErr("plexus inspect: no cache directory \(dir) (use --cni-dir or --config)")
            throw ExitCode(1)
        }
        let report: InspectReport
        do { report = try Inspector(cniDir: dir, checkStale: stale).inspect() } catch {
            printErr("plexus inspect: \(error.description)")
            throw ExitCode(1)
        }
        if json {
            var out = report.json.serializedBytes()
            out.append(0x0A)
            try? FileSystem.writeAll(fd: 1, out)
        } else {
            try? FileSystem.writeAll(fd: 1, Array(report.table.utf8))
        }
    }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate NetworkAttachmentDefinitions (YAML or JSON), network configurations or a whole Plexus configuration.",
        discussion: "Every finding is printed with its JSON-pointer path in the document; the exit status is 1 when any is an error.")

    @Argument(help: "Files to validate (YAML: the first document of each).")
    var files: [String] = []

    @Option(help: "Validate the NAD <namespace>/<name> read through --kubeconfig.")
    var name: String?

    @Option(help: "Kubeconfig for --name.")
    var kubeconfig: String?

    @Option(name: .customLong("bin-dir"), help: "Where delegate plugins are looked up (repeatable; default /opt/cni/bin).")
    var binDirs: [String] = []

    @Option(help: "Where network names without spec.config are looked up.")
    var confDir: String?

    @Flag(help: "Print the findings as JSON.")
    var json = false

    func validate() throws {
        if files.isEmpty && name == nil { throw ValidationError("name at least one file, or --name namespace/nad") }
        if name != nil && kubeconfig == nil { throw ValidationError("--name needs --kubeconfig") }
    }

    func run() throws {
        let validator = Validator(searchPaths: binDirs.isEmpty ? ["/opt/cni/bin"] : binDirs, confDir: confDir)
        var results: [(String, [Finding])] = []
        for file in files {
            do throws(ValidationError) { results.append((file, validator.validate(document: try load(file)))) } catch {
                results.append((file, [Finding(.error, "", error.message)]))
            }
        }
        if let name, let kubeconfig {
            results.append(("nad \(name)", fetch(name, kubeconfig: kubeconfig, validator: validator)))
        }
        var errors = 0
        if json {
            let docs: [JSON] = results.map { source, findings in
                .object(JSONObject([("source", .string(source)), ("findings", .array(findings.map { f in
                    .object(JSONObject([("severity", .string(f.severity.rawValue)), ("path", .string(f.path)),
                                        ("message", .string(f.message))]))
                }))]))
            }
            var out = JSON.array(docs).serializedBytes()
            out.append(0x0A)
            try? FileSystem.writeAll(fd: 1, out)
        }
        for (source, findings) in results {
            errors += findings.filter { $0.severity == .error }.count
            if json { continue }
            if findings.isEmpty { print("\(source): ok") }
            for f in findings { print("\(source): \(f)") }
        }
        if errors > 0 { throw ExitCode(1) }
    }

    /// JSON directly; anything else through the YAML converter that ships next to plexus.
    func load(_ path: String) throws(ValidationError) -> JSON {
        let bytes: [UInt8]
        do { bytes = try FileSystem.read(path, limit: 4 << 20) } catch { throw ValidationError("cannot read: \(error.description)") }
        if let j = try? JSON.parse(bytes) { return j }
        do {
            return try KubeConfig.convertYAML(path: path, searchPaths: binDirs + ["/opt/cni/bin"],
                                              timeoutNanoseconds: 10_000_000_000, operation: "read \(path)")
        } catch {
            throw ValidationError("neither JSON nor YAML: \(error.description)")
        }
    }

    func fetch(_ ref: String, kubeconfig: String, validator: Validator) -> [Finding] {
        let parts = ref.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
            return [Finding(.error, "", "--name must be <namespace>/<name>, got \"\(ref)\"")]
        }
        do throws(KubeError) {
            let cfg = try KubeConfig.load(kubeconfigPath: kubeconfig, converterSearchPaths: binDirs + ["/opt/cni/bin"])
            do { try CurlTransport.loadLibrary() } catch {
                return [Finding(.error, "", "cannot load libcurl: \(error.message)")]
            }
            let client = KubeHTTPClient(config: cfg, deadline: Clock.deadline(afterSeconds: 30), userAgent: "plexus-validate")
            let nad = try client.getNetworkAttachmentDefinition(namespace: String(parts[0]), name: String(parts[1]))
            return validator.validate(document: nad)
        } catch {
            return [Finding(.error, "", error.description)]
        }
    }
}

Admin.main()
