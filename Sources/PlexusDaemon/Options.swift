import CNISpec
import SystemKit

/// The daemon's settings: a JSON file (`--config`), then command-line flags, then defaults.
public struct DaemonOptions: Equatable, Sendable {
    public var socket = "/run/plexus/plexus.sock"
    /// nil: in-cluster configuration (service account token, `KUBERNETES_SERVICE_HOST`).
    public var kubeconfig: String?
    public var nodeName = ""
    /// `host:port` or `unix:/path`; empty disables the endpoint.
    public var metricsAddress = "127.0.0.1:9494"
    public var maxConcurrent = 16
    public var maxQueued = 256
    public var drainSeconds = 30.0
    public var watchTimeoutSeconds = 300
    public var pageSize = 500
    public var logLevel = "info"
    public var logFile: String?
    /// Where `plexus-kubeconfig` (YAML kubeconfigs) is found.
    public var binDir = "/opt/cni/bin"

    public init() {}

    public struct OptionError: Error, CustomStringConvertible, Equatable {
        public var description: String
        init(_ d: String) { description = d }
    }

    static let usage = """
        usage: plexus-daemon [--config FILE] [--socket PATH] [--kubeconfig PATH] [--node-name NAME]
                             [--metrics-address HOST:PORT|unix:PATH|""] [--max-concurrent N] [--max-queued N]
                             [--drain-seconds S] [--watch-timeout-seconds S] [--log-level LEVEL] [--log-file PATH]
                             [--bin-dir DIR]
        The node name defaults to $NODE_NAME.
        """

    /// Parses `arguments` (without the program name) over `environment`.
    public static func parse(_ arguments: [String], environment: [String: String],
                             readFile: (String) throws -> [UInt8] = { p in try FileSystem.read(p) }) throws(OptionError) -> DaemonOptions {
        var o = DaemonOptions()
        if let n = environment["NODE_NAME"] { o.nodeName = n }
        var flags: [(String, String)] = []
        var i = 0
        while i < arguments.count {
            let a = arguments[i]
            if a == "-h" || a == "--help" { throw OptionError(usage) }
            guard a.hasPrefix("--") else { throw OptionError("unexpected argument \(a)\n" + usage) }
            var name = String(a.dropFirst(2))
            var value: String
            if let eq = name.firstIndex(of: "=") {
                value = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            } else {
                guard i + 1 < arguments.count else { throw OptionError("--\(name) needs a value") }
                i += 1
                value = arguments[i]
            }
            flags.append((name, value))
            i += 1
        }
        if let file = flags.first(where: { $0.0 == "config" })?.1 {
            let bytes: [UInt8]
            do { bytes = try readFile(file) } catch { throw OptionError("cannot read \(file): \(error)") }
            guard let json = try? JSON.parse(bytes), let obj = json.objectValue else { throw OptionError("\(file) is not a JSON object") }
            for m in obj.members {
                let v: String
                switch m.value {
                case .string(let s): v = s
                case .number(let n): v = n
                case .null: continue
                default: throw OptionError("\(file): \"\(m.key)\" must be a string or a number")
                }
                try o.set(Self.flagName(m.key), v, source: file)
            }
        }
        for (name, value) in flags where name != "config" { try o.set(name, value, source: "the command line") }
        try o.validate()
        return o
    }

    /// `maxConcurrent` → `max-concurrent`.
    static func flagName(_ key: String) -> String {
        var out = ""
        for c in key {
            if c.isUppercase { out += "-" + c.lowercased() } else { out.append(c) }
        }
        return out
    }

    mutating func set(_ name: String, _ value: String, source: String) throws(OptionError) {
        func int(_ min: Int, _ max: Int) throws(OptionError) -> Int {
            guard let n = Int(value), n >= min, n <= max else { throw OptionError("\(name) must be an integer in \(min)...\(max) (\(source))") }
            return n
        }
        switch name {
        case "socket": socket = value
        case "kubeconfig": kubeconfig = value.isEmpty ? nil : value
        case "node-name": nodeName = value
        case "metrics-address": metricsAddress = value
        case "max-concurrent": maxConcurrent = try int(1, 4096)
        case "max-queued": maxQueued = try int(0, 100_000)
        case "drain-seconds":
            guard let d = Double(value), d.isFinite, d >= 0, d <= 3600 else { throw OptionError("drain-seconds must be in 0...3600 (\(source))") }
            drainSeconds = d
        case "watch-timeout-seconds": watchTimeoutSeconds = try int(1, 3600)
        case "page-size": pageSize = try int(1, 10_000)
        case "log-level": logLevel = value
        case "log-file": logFile = value.isEmpty ? nil : value
        case "bin-dir": binDir = value
        default: throw OptionError("unknown option \(name) (\(source))\n" + Self.usage)
        }
    }

    func validate() throws(OptionError) {
        for (key, path) in [("socket", socket), ("kubeconfig", kubeconfig ?? "/"), ("log-file", logFile ?? "/"), ("bin-dir", binDir)] {
            guard path.hasPrefix("/"), FileSystem.isCSafe(path) else { throw OptionError("\(key) must be an absolute path") }
        }
        guard KubernetesNames.isDNS1123Subdomain(nodeName) else {
            throw OptionError("the node name (--node-name or $NODE_NAME) must be set to a valid node name, got \"\(nodeName)\"")
        }
        if !metricsAddress.isEmpty && HTTPEndpoint.Address(metricsAddress) == nil {
            throw OptionError("metrics-address must be HOST:PORT or unix:/PATH, got \"\(metricsAddress)\"")
        }
        guard LogLevel(name: logLevel) != nil else { throw OptionError("unknown log level \(logLevel)") }
    }
}
