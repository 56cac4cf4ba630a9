import CNIInvoke
import CNISpec
import SystemKit

/// What the process prints on stdout and its exit code.
public struct CNIOutcome: Sendable {
    public var stdout: [UInt8]
    public var exitCode: Int32
}

/// The concrete I/O the dispatcher wires in; `main.swift` provides the real ones, tests provide fakes.
public struct PlexusServices {
    public var makeExecutor: (PlexusConfig) -> any PluginExecutor
    /// A planner for ADD beyond the local one (Kubernetes), or nil.
    public var makePlanner: (PlexusConfig, CNIInvocation, Logger) throws(CNIError) -> (any NetworkPlanner)?
    public var makeReporter: (PlexusConfig, CNIInvocation, Logger) -> (any AttachmentReporter)?
    /// Lists a netns' interfaces on ADD, so no generated name collides with one that exists; nil skips the check.
    public var interfaceLister: (any InterfaceLister)?
    /// Route control and interface facts for `default-route` and network-status; nil disables both.
    public var routing: (any NetnsRouting)?
    /// Device-plugin allocations (kubelet PodResources / checkpoint); built per invocation, used only when a planned
    /// network has a `resourceName`.
    public var makeDeviceSource: (PlexusConfig, Logger) -> (any DeviceSource)?
    /// DRA devices (ResourceClaims) for ADDs with a `resourceName` network.
    public var makeClaimSource: (PlexusConfig, CNIInvocation, Logger) -> (any ClaimDeviceSource)?
    /// The writer of claims' networkData; built only when an ADD or DEL has something to write.
    public var makeClaimPublisher: (PlexusConfig, CNIInvocation, Logger) -> (any ClaimStatusPublisher)?
    public var logger: Logger

    public init(makeExecutor: @escaping (PlexusConfig) -> any PluginExecutor,
                makePlanner: @escaping (PlexusConfig, CNIInvocation, Logger) throws(CNIError) -> (any NetworkPlanner)? = { _, _, _ in nil },
                makeReporter: @escaping (PlexusConfig, CNIInvocation, Logger) -> (any AttachmentReporter)? = { _, _, _ in nil },
                interfaceLister: (any InterfaceLister)? = nil, routing: (any NetnsRouting)? = nil,
                makeDeviceSource: @escaping (PlexusConfig, Logger) -> (any DeviceSource)? = { c, l in KubeletDeviceSource(config: c, logger: l) },
                makeClaimSource: @escaping (PlexusConfig, CNIInvocation, Logger) -> (any ClaimDeviceSource)? = { _, _, _ in nil },
                makeClaimPublisher: @escaping (PlexusConfig, CNIInvocation, Logger) -> (any ClaimStatusPublisher)? = { _, _, _ in nil },
                logger: Logger) {
        self.makeClaimSource = makeClaimSource
        self.makeClaimPublisher = makeClaimPublisher
        self.routing = routing
        self.makeDeviceSource = makeDeviceSource
        self.makeExecutor = makeExecutor
        self.makePlanner = makePlanner
        self.makeReporter = makeReporter
        self.interfaceLister = interfaceLister
        self.logger = logger
    }
}

/// The single entry and exit point of a CNI invocation: validates the environment and the configuration, gates
/// versions, dispatches the verb, and maps every error to the spec's JSON on stdout with exit code 1.
public enum Dispatcher {
    public static func run(environment: [String: String], stdin: [UInt8], services: PlexusServices) -> CNIOutcome {
        var configVersion: String?
        do throws(CNIError) {
            let invocation = try CNIInvocation(environment: environment)
            if invocation.command == .version { return version(stdin: stdin) }
            let config: PlexusConfig
            do throws(CNIError) {
                config = try PlexusConfig(bytes: stdin)
                configVersion = config.cniVersion
                try gate(config: config, command: invocation.command)
                switch invocation.command {
                case .del, .gc: break  // teardown proceeds with the defaults; logged below
                default: if let problem = config.settingProblems.first { throw problem }
                }
            } catch {
                // Name the pod/container in configuration errors too (GC and STATUS have neither).
                switch invocation.command {
                case .add, .del, .check: throw error.prefixed(invocation.subject)
                default: throw error
                }
            }
            configure(services.logger, config: config, invocation: invocation)
            for problem in config.settingProblems {
                services.logger.warning("ignoring an invalid setting, using its default", [("error", problem.description)])
            }
            let started = Clock.monotonicNanoseconds()
            let plexus = Plexus(config: config, invocation: invocation, executor: services.makeExecutor(config),
                                planner: invocation.command == .add ? try services.makePlanner(config, invocation, services.logger) : nil,
                                reporter: invocation.command == .add ? services.makeReporter(config, invocation, services.logger) : nil,
                                interfaceLister: services.interfaceLister, routing: services.routing,
                                deviceSource: invocation.command == .add ? services.makeDeviceSource(config, services.logger) : nil,
                                claimSource: invocation.command == .add ? services.makeClaimSource(config, invocation, services.logger) : nil,
                                makeClaimPublisher: { services.makeClaimPublisher(config, invocation, services.logger) },
                                logger: services.logger)
            var out: [UInt8] = []
            switch invocation.command {
            case .add:
                out = try plexus.add().serializedBytes()
                out.append(0x0A)
            case .del: try plexus.del()
            case .check: try plexus.check()
            case .gc: try plexus.gc()
            case .status: try plexus.status()
            case .version: break
            }
            services.logger.info("command done", [("ms", millis(since: started))])
            return CNIOutcome(stdout: out, exitCode: 0)
        } catch {
            services.logger.error("command failed", [("code", String(error.code.rawValue)), ("error", error.description)])
            var out = error.json(cniVersion: configVersion.flatMap { $0.isEmpty ? nil : $0 } ?? CNIVersion.current.description)
                .serializedBytes()
            out.append(0x0A)
            return CNIOutcome(stdout: out, exitCode: 1)
        }
    }

    /// VERSION: stdin is optional; the input `cniVersion` is echoed when it is a supported version.
    static func version(stdin: [UInt8]) -> CNIOutcome {
        var echoed = CNIVersion.current.description
        if let json = try? JSON.parse(stdin), let v = json["cniVersion"]?.stringValue, CNIVersion.supported.contains(v) {
            echoed = v
        }
        let o = JSONObject([("cniVersion", .string(echoed)),
                            ("supportedVersions", .array(CNIVersion.supported.map { .string($0) }))])
        var out = JSON.object(o).serializedBytes()
        out.append(0x0A)
        return CNIOutcome(stdout: out, exitCode: 0)
    }

    static func gate(config: PlexusConfig, command: CNIInvocation.Command) throws(CNIError) {
        let supported = CNIVersion.supported
        let effective = config.cniVersion.isEmpty ? "0.1.0" : config.cniVersion
        guard supported.contains(effective), let v = CNIVersion(effective) else {
            throw CNIError(.incompatibleVersion, "incompatible CNI versions",
                           details: "config is \"\(config.cniVersion)\", plugin supports \(supported)")
        }
        switch command {
        case .check where !v.supportsCheck:
            throw CNIError(.incompatibleVersion, "config version does not allow CHECK", details: effective)
        case .gc where !v.supportsGCAndStatus, .status where !v.supportsGCAndStatus:
            throw CNIError(.incompatibleVersion, "config version does not allow \(command.rawValue)", details: effective)
        default: break
        }
    }

    public static func configure(_ logger: Logger, config: PlexusConfig, invocation: CNIInvocation) {
        logger.toStderr = config.logToStderr
        if let l = config.logLevel.flatMap(LogLevel.init(name:)) { logger.level = l }
        if let f = config.logFile { logger.setFile(f) }
        var ctx: [(String, String)] = [("cmd", invocation.command.rawValue)]
        if !invocation.containerID.isEmpty { ctx.append(("container", invocation.containerID)) }
        if !invocation.ifname.isEmpty { ctx.append(("ifname", invocation.ifname)) }
        if let pod = invocation.pod { ctx.append(("pod", pod.description)) }
        if let trace = invocation.traceID { ctx.append(("trace", trace)) }
        logger.context = ctx
    }
}
