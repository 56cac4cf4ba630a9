import CNISpec

/// The pod a CNI call is for, from the runtime's `CNI_ARGS` (`K8S_POD_*`).
public struct PodIdentity: Sendable, Equatable, CustomStringConvertible {
    public var namespace: String
    public var name: String
    public var uid: String?
    public var infraContainerID: String?

    public init(namespace: String, name: String, uid: String? = nil, infraContainerID: String? = nil) {
        self.namespace = namespace
        self.name = name
        self.uid = uid
        self.infraContainerID = infraContainerID
    }

    public init?(args: CNIArgs) {
        guard let ns = args["K8S_POD_NAMESPACE"], !ns.isEmpty, let name = args["K8S_POD_NAME"], !name.isEmpty else { return nil }
        self.init(namespace: ns, name: name, uid: args["K8S_POD_UID"].flatMap { $0.isEmpty ? nil : $0 },
                  infraContainerID: args["K8S_POD_INFRA_CONTAINER_ID"].flatMap { $0.isEmpty ? nil : $0 })
    }

    public var description: String { "\(namespace)/\(name)" }
}

/// A validated CNI call: the verb and its environment parameters.
public struct CNIInvocation: Sendable {
    public enum Command: String, Sendable, CaseIterable {
        case add = "ADD", del = "DEL", check = "CHECK", version = "VERSION", status = "STATUS", gc = "GC"

        /// Required environment per verb (spec §"Parameters"). `CNI_PATH` is optional everywhere because Plexus
        /// always has `binDir`.
        var requiredEnvironment: [String] {
            switch self {
            case .add, .check: return ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]
            case .del: return ["CNI_CONTAINERID", "CNI_IFNAME"]
            case .version, .status, .gc: return []
            }
        }
    }

    public var command: Command
    public var containerID: String
    public var netns: String
    public var ifname: String
    public var cniArgs: CNIArgs
    public var cniPath: String?
    public var pod: PodIdentity?
    /// The W3C trace id of the caller's `TRACEPARENT`, for log lines (nil when absent or malformed). The trace
    /// variables themselves reach every delegate and finalizer unchanged with the rest of the environment.
    public var traceID: String?

    /// Validates the environment: missing required variables, container ID and interface name rules, `CNI_ARGS`
    /// syntax. Errors are code 4 and name the variables.
    public init(environment env: [String: String]) throws(CNIError) {
        guard let raw = env["CNI_COMMAND"], !raw.isEmpty else {
            throw CNIError(.invalidEnvironment, "required env variables [CNI_COMMAND] missing",
                           details: "plexus is a CNI plugin; run it from a container runtime")
        }
        guard let command = Command(rawValue: raw) else {
            throw CNIError(.invalidEnvironment, "unknown CNI_COMMAND: \(raw)", details: "CNI_COMMAND")
        }
        self.command = command
        let missing = command.requiredEnvironment.filter { (env[$0] ?? "").isEmpty }
        if !missing.isEmpty {
            throw CNIError(.invalidEnvironment, "required env variables [\(missing.joined(separator: ","))] missing",
                           details: missing.joined(separator: ","))
        }
        containerID = env["CNI_CONTAINERID"] ?? ""
        netns = env["CNI_NETNS"] ?? ""
        ifname = env["CNI_IFNAME"] ?? ""
        cniPath = env["CNI_PATH"]
        switch command {
        case .add, .del, .check:
            try CNIValidation.validateContainerID(containerID)
            try CNIValidation.validateInterfaceName(ifname)
            cniArgs = try CNIArgs(parsing: env["CNI_ARGS"] ?? "")
        case .version, .status, .gc:
            cniArgs = (try? CNIArgs(parsing: env["CNI_ARGS"] ?? "")) ?? CNIArgs()
        }
        pod = PodIdentity(args: cniArgs)
        traceID = env["TRACEPARENT"].flatMap(CNIInvocation.traceID(traceparent:))
    }

    /// W3C Trace Context `traceparent`: `<version>-<trace-id>-<parent-id>-<flags>`, 2/32/16/2 lowercase hex digits;
    /// version `ff` and an all-zero trace or parent id are invalid; a later version may append `-…` fields.
    public static func traceID(traceparent: String) -> String? {
        let parts = traceparent.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count >= 4 else { return nil }
        func hex(_ s: Substring, _ n: Int) -> Bool {
            s.utf8.count == n && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
        }
        let (version, trace, parent, flags) = (parts[0], parts[1], parts[2], parts[3])
        guard hex(version, 2), version != "ff", hex(trace, 32), hex(parent, 16), hex(flags, 2),
              trace.utf8.contains(where: { $0 != 48 }), parent.utf8.contains(where: { $0 != 48 }) else { return nil }
        if version == "00" && parts.count != 4 { return nil }
        return String(trace)
    }

    /// How errors name the call: the pod when known, always the container.
    public var subject: String {
        if let pod { return "pod \(pod) (container \(containerID), \(ifname))" }
        return "container \(containerID) (\(ifname))"
    }
}
