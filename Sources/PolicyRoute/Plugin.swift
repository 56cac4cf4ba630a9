import CNISpec

/// What the process prints on stdout and its exit code.
public struct PolicyRouteOutcome: Sendable, Equatable {
    public var stdout: [UInt8]
    public var exitCode: Int32

    public init(stdout: [UInt8], exitCode: Int32) {
        self.stdout = stdout
        self.exitCode = exitCode
    }

    /// The output as text (tests).
    public var text: String { String(decoding: stdout, as: UTF8.self) }
}

/// The CNI verbs the plugin answers.
public enum PolicyRouteCommand: String, Sendable, CaseIterable {
    case add = "ADD", del = "DEL", check = "CHECK", version = "VERSION", gc = "GC", status = "STATUS"
}

/// A validated call: the verb and the environment it needs (`CNI_CONTAINERID` and `CNI_IFNAME` for ADD, CHECK and
/// DEL; `CNI_NETNS` for ADD and CHECK, optional for DEL). Problems are code 4.
public struct PolicyRouteInvocation: Sendable, Equatable {
    public var command: PolicyRouteCommand
    public var containerID: String
    public var netns: String
    /// The cluster network's interface: it keeps the main table.
    public var ifname: String

    public init(environment env: [String: String]) throws(CNIError) {
        guard let raw = env["CNI_COMMAND"], !raw.isEmpty else {
            throw CNIError(.invalidEnvironment, "required env variables [CNI_COMMAND] missing",
                           details: "plexus-policy-route is a CNI plugin (a Plexus finalizer)")
        }
        guard let command = PolicyRouteCommand(rawValue: raw) else {
            throw CNIError(.invalidEnvironment, "unknown CNI_COMMAND: \(CNIValidation.visible(raw))", details: "CNI_COMMAND")
        }
        self.command = command
        containerID = env["CNI_CONTAINERID"] ?? ""
        netns = env["CNI_NETNS"] ?? ""
        ifname = env["CNI_IFNAME"] ?? ""
        let required: [String]
        switch command {
        case .add, .check: required = ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]
        case .del: required = ["CNI_CONTAINERID", "CNI_IFNAME"]
        case .version, .gc, .status: required = []
        }
        let missing = required.filter { (env[$0] ?? "").isEmpty }
        if !missing.isEmpty {
            throw CNIError(.invalidEnvironment, "required env variables [\(missing.joined(separator: ","))] missing",
                           details: missing.joined(separator: ","))
        }
        if command == .add || command == .check || command == .del {
            try CNIValidation.validateContainerID(containerID)
            try CNIValidation.validateInterfaceName(ifname)
            if CNIValidation.hasControlCharacters(netns) {
                throw CNIError(.invalidEnvironment, "CNI_NETNS holds control characters", details: CNIValidation.visible(netns))
            }
        }
    }
}

/// `plexus-policy-route`: source-based policy routing for a pod's secondary interfaces, run by Plexus as a
/// finalizer once every network is attached (stdin: its own configuration plus the pod's merged `prevResult`).
///
/// - ADD installs the plan (`PolicyPlan`) and prints the prevResult, converted to the configuration's `cniVersion`.
///   It needs a prevResult (code 7 without one).
/// - CHECK (cniVersion 0.4.0 and later) verifies every planned rule and route (code 999 naming the missing ones).
/// - DEL removes the planned rules and the planned tables' routes. It succeeds without doing anything when
///   `CNI_NETNS` is empty or gone, when there is no prevResult (nothing is known to delete: the plugin never guesses
///   at rules it may not own), or when the options or the prevResult are unusable (ADD refused them, so nothing was
///   installed); those cases are logged.
/// - GC and STATUS (cniVersion 1.1.0) succeed: the state lives in the pod's netns and goes with it.
/// - VERSION prints the supported versions.
public enum PolicyRoutePlugin {
    public static func run(environment: [String: String], stdin: [UInt8], netns: any PolicyNetns,
                           log: (String) -> Void) -> PolicyRouteOutcome {
        var version: String?
        do throws(CNIError) {
            let invocation = try PolicyRouteInvocation(environment: environment)
            if invocation.command == .version { return versionOutcome(stdin: stdin) }
            let input = try PolicyRouteInput(bytes: stdin)
            version = input.cniVersion
            let v = CNIVersion(input.cniVersion) ?? CNIVersion.v030
            switch invocation.command {
            case .check where !v.supportsCheck:
                throw CNIError(.incompatibleVersion, "CHECK needs cniVersion 0.4.0 or later", details: input.cniVersion)
            case .gc, .status:
                if !v.supportsGCAndStatus {
                    throw CNIError(.incompatibleVersion, "\(invocation.command.rawValue) needs cniVersion 1.1.0", details: input.cniVersion)
                }
                return PolicyRouteOutcome(stdout: [], exitCode: 0)
            default: break
            }
            switch invocation.command {
            case .add: return try add(input, invocation, netns)
            case .check: try check(input, invocation, netns)
            case .del: try del(input, invocation, netns, log: log)
            case .version, .gc, .status: break
            }
            return PolicyRouteOutcome(stdout: [], exitCode: 0)
        } catch {
            log("plexus-policy-route: error \(error.code.rawValue): \(error.description)")
            var out = error.json(cniVersion: version ?? CNIVersion.current.description).serializedBytes()
            out.append(0x0A)
            return PolicyRouteOutcome(stdout: out, exitCode: 1)
        }
    }

    /// VERSION: the input's `cniVersion` is echoed when supported (stdin is optional).
    static func versionOutcome(stdin: [UInt8]) -> PolicyRouteOutcome {
        var echoed = CNIVersion.current.description
        if let json = try? JSON.parse(stdin), let v = json["cniVersion"]?.stringValue, PolicyRouteVersions.isSupported(v) {
            echoed = v
        }
        let o = JSONObject([("cniVersion", .string(echoed)),
                            ("supportedVersions", .array(PolicyRouteVersions.supported.map { .string($0) }))])
        var out = JSON.object(o).serializedBytes()
        out.append(0x0A)
        return PolicyRouteOutcome(stdout: out, exitCode: 0)
    }

    static func requiredPlan(_ input: PolicyRouteInput, _ invocation: PolicyRouteInvocation) throws(CNIError) -> PolicyPlan {
        let options = try input.options()
        guard let result = try input.parsedPrevResult() else {
            throw CNIError(.invalidNetworkConfig, "\(invocation.command.rawValue) needs a prevResult",
                           details: "plexus-policy-route runs as a finalizer, after the pod's networks")
        }
        return try PolicyPlan.make(options: options, result: result, clusterInterface: invocation.ifname)
    }

    static func session(_ netns: any PolicyNetns, _ invocation: PolicyRouteInvocation) throws(CNIError) -> any PolicyNetnsSession {
        guard let session = try netns.open(invocation.netns) else {
            throw CNIError(.invalidEnvironment, "the netns \(invocation.netns) does not exist", details: "CNI_NETNS")
        }
        return session
    }

    static func add(_ input: PolicyRouteInput, _ invocation: PolicyRouteInvocation, _ netns: any PolicyNetns) throws(CNIError) -> PolicyRouteOutcome {
        let plan = try requiredPlan(input, invocation)
        if !plan.isEmpty { try plan.install(in: session(netns, invocation)) }
        // requiredPlan proved there is a prevResult.
        let result = try CNIResult.convert(input.prevResult ?? .object(JSONObject()), to: input.cniVersion, defaultVersion: input.cniVersion)
        var out = result.serializedBytes()
        out.append(0x0A)
        return PolicyRouteOutcome(stdout: out, exitCode: 0)
    }

    static func check(_ input: PolicyRouteInput, _ invocation: PolicyRouteInvocation, _ netns: any PolicyNetns) throws(CNIError) {
        let plan = try requiredPlan(input, invocation)
        if !plan.isEmpty { try plan.verify(in: session(netns, invocation)) }
    }

    static func del(_ input: PolicyRouteInput, _ invocation: PolicyRouteInvocation, _ netns: any PolicyNetns,
                    log: (String) -> Void) throws(CNIError) {
        let plan: PolicyPlan
        do throws(CNIError) {
            let options = try input.options()
            guard let result = try input.parsedPrevResult() else {
                log("plexus-policy-route: DEL without prevResult: nothing is known to delete")
                return
            }
            plan = try PolicyPlan.make(options: options, result: result, clusterInterface: invocation.ifname)
        } catch {
            log("plexus-policy-route: DEL with an unusable configuration or prevResult, nothing deleted: \(error.description)")
            return
        }
        guard !plan.isEmpty, !invocation.netns.isEmpty else { return }
        guard let session = try netns.open(invocation.netns) else { return }
        try plan.remove(from: session)
    }
}
