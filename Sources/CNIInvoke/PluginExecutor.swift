import CNISpec
import Synchronization
import SystemKit

/// One plugin execution: the binary, the CNI verb and parameters, and the exact stdin bytes.
public struct ExecRequest: Sendable {
    public var pluginPath: String
    public var command: String
    public var containerID: String
    public var netns: String
    public var ifname: String
    public var cniArgs: String
    /// `CNI_PATH` for the plugin (it finds its own delegates, e.g. IPAM, there).
    public var cniPath: String
    public var stdin: [UInt8]
    /// Passed (see `InputGate`) once the plugin process exists and before it is given `stdin`; when it fails the
    /// plugin never gets its configuration and the execution fails with the gate's error.
    public var inputGate: InputGate?

    public init(pluginPath: String, command: String, containerID: String = "", netns: String = "", ifname: String = "",
                cniArgs: String = "", cniPath: String, stdin: [UInt8], inputGate: InputGate? = nil) {
        self.inputGate = inputGate
        self.pluginPath = pluginPath
        self.command = command
        self.containerID = containerID
        self.netns = netns
        self.ifname = ifname
        self.cniArgs = cniArgs
        self.cniPath = cniPath
        self.stdin = stdin
    }
}

/// Work that must be finished before any plugin learns its configuration, run at most once: Plexus makes the
/// attachment plan durable through one, so a delegate can never hold resources the plan does not name, and the
/// fsync overlaps the delegate's own start-up (a plugin acts only on the configuration it reads from stdin). The
/// first `pass` runs the work; every later or concurrent one waits for it and gets the same outcome.
public final class InputGate: Sendable {
    enum State { case pending(@Sendable () throws(CNIError) -> Void), passed, failed(CNIError) }
    let state: Mutex<State>

    public init(_ work: @escaping @Sendable () throws(CNIError) -> Void) { state = Mutex(.pending(work)) }

    public func pass() throws(CNIError) {
        try state.withLock { (state: inout State) throws(CNIError) in
            switch state {
            case .passed: return
            case .failed(let e): throw e
            case .pending(let work):
                do throws(CNIError) {
                    try work()
                    state = .passed
                } catch {
                    state = .failed(error)
                    throw error
                }
            }
        }
    }

    /// Whether the work has run and succeeded.
    public var hasPassed: Bool { state.withLock { if case .passed = $0 { true } else { false } } }
}

/// The process boundary to delegate plugins. The real implementation spawns binaries; tests use fakes.
public protocol PluginExecutor: Sendable {
    /// Runs a plugin and returns its stdout when it exits 0. An implementation passes `request.inputGate` before
    /// the plugin can see `request.stdin`. A failure is a `CNIError` decoded from the plugin's
    /// stdout error JSON, or built from its stderr text, as libcni does.
    func execute(_ request: ExecRequest) throws(CNIError) -> [UInt8]
    /// Finds plugin `type` in `paths`: the first regular file `dir/type` wins.
    func find(_ type: String, in paths: [String]) throws(CNIError) -> String
}

/// Spawns plugin binaries with `posix_spawn` and a deadline.
public struct ProcessPluginExecutor: PluginExecutor {
    /// The environment every plugin inherits (the runtime's own), minus the `CNI_*` keys Plexus sets.
    public var baseEnvironment: [String]
    public var timeoutNanoseconds: Int64

    static let cniKeys: Set<String> = ["CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"]

    public init(baseEnvironment: [String], timeoutSeconds: Double) {
        self.baseEnvironment = baseEnvironment.filter { e in
            let key = e.split(separator: "=", maxSplits: 1).first.map(String.init) ?? e
            return !ProcessPluginExecutor.cniKeys.contains(key)
        }
        // Never trapping: a value that is not a usable duration (the configuration validates the range) means 60 s.
        timeoutNanoseconds = Clock.nanoseconds(seconds: timeoutSeconds) ?? 60_000_000_000
    }

    public func find(_ type: String, in paths: [String]) throws(CNIError) -> String {
        try CNIValidation.validatePluginType(type)
        if paths.isEmpty { throw CNIError(.invalidEnvironment, "no plugin search path", details: "CNI_PATH") }
        for dir in paths where !dir.isEmpty {
            let candidate = dir.hasSuffix("/") ? dir + type : dir + "/" + type
            if FileSystem.isRegularFile(candidate) { return candidate }
        }
        throw CNIError(.invalidNetworkConfig, "failed to find plugin \"\(type)\" in path \(paths)")
    }

    public func execute(_ request: ExecRequest) throws(CNIError) -> [UInt8] {
        var env = baseEnvironment
        env.append("CNI_COMMAND=\(request.command)")
        env.append("CNI_CONTAINERID=\(request.containerID)")
        env.append("CNI_NETNS=\(request.netns)")
        env.append("CNI_IFNAME=\(request.ifname)")
        env.append("CNI_ARGS=\(request.cniArgs)")
        env.append("CNI_PATH=\(request.cniPath)")
        var output: ProcessOutput
        var attempt = 0
        // The gate runs while the plugin starts. A failed gate (the only way input is withheld) keeps its error.
        let beforeInput: (() -> Bool)? = request.inputGate.map { gate in { (try? gate.pass()) != nil } }
        while true {
            do {
                output = try Subprocess.run(path: request.pluginPath, arguments: [request.pluginPath], environment: env,
                                            stdin: request.stdin, timeoutNanoseconds: timeoutNanoseconds, beforeInput: beforeInput)
                break
            } catch {
                // "text file busy": the binary is being replaced (an upgrade copying into the bin dir). Retry briefly.
                if error.errno == 26 /* ETXTBSY */ && attempt < 5 {
                    attempt += 1
                    Clock.sleep(milliseconds: 200)
                    continue
                }
                throw CNIError(.ioFailure, "cannot execute plugin", details: error.description)
            }
        }
        if output.inputWithheld {
            try request.inputGate?.pass()  // rethrows the gate's error
            throw CNIError(.ioFailure, "plugin \(request.pluginPath) was not given its configuration")
        }
        if output.timedOut {
            throw CNIError(.tryAgainLater, "plugin \(request.pluginPath) timed out (\(request.command)) after \(timeoutNanoseconds / 1_000_000_000) s and was killed")
        }
        if output.exitStatus == 0 { return output.stdout }
        throw PluginFailure.decode(stdout: output.stdout, stderr: output.stderr, exitStatus: output.exitStatus)
    }
}

/// Turns a failed plugin's output into a `CNIError` the way libcni's `pluginErr` does.
public enum PluginFailure {
    public static func decode(stdout: [UInt8], stderr: [UInt8], exitStatus: Int32) -> CNIError {
        let status = exitStatus > 128 ? "killed by signal \(exitStatus - 128)" : "exit status \(exitStatus)"
        if !stdout.isEmpty {
            if let json = try? JSON.parse(stdout), let e = CNIError.decode(json) {
                if e.code.isValidPluginCode { return e }
                // Not a valid CNI error code (0, negative, an unassigned reserved one): passing it on would make
                // Plexus' own answer invalid. Report it as a plugin-specific failure that keeps what it said.
                let said = e.details.isEmpty ? e.msg : "\(e.msg): \(e.details)"
                return CNIError(.internalError, "delegate failed with an invalid CNI error code",
                                details: "code \(e.code.rawValue): \(said)")
            }
            return CNIError(.internalError, "netplugin failed but error parsing its diagnostic message",
                            details: "\(trimmed(stdout)) (\(status))")
        }
        if !stderr.isEmpty {
            return CNIError(.internalError, "netplugin failed: \"\(trimmed(stderr))\": \(status)")
        }
        return CNIError(.internalError, "netplugin failed with no error message: \(status)")
    }

    static func trimmed(_ bytes: [UInt8]) -> String {
        var s = String(decoding: bytes.prefix(4096), as: UTF8.self)
        while let last = s.last, last.isWhitespace { s.removeLast() }
        return s
    }
}
