// The plexus CNI plugin executable: wires real I/O (environment, stdin/stdout, posix_spawn executor, logger)
// into the dispatcher. All behaviour lives in PlexusCore.
import CNIInvoke
import CNISpec
import Netlink
import PlexusCore
import SystemKit

#if canImport(Glibc)
import Glibc
#endif

ProcessEnvironment.ignoreSIGPIPE()
let baseEnvironment = ProcessEnvironment.entries()
let environment = ProcessEnvironment.dictionary(baseEnvironment)
// `plexus inspect|validate` (an administrator, not a runtime: no CNI_COMMAND) is the admin binary next to this
// one. Handing over with execve keeps swift-argument-parser out of the plugin and off the CNI hot path.
if environment["CNI_COMMAND"] == nil, CommandLine.arguments.count > 1,
   ["inspect", "validate", "help", "--help", "-h"].contains(CommandLine.arguments[1]) {
    let admin = FileSystem.directoryName(of: ProcessEnvironment.executablePath() ?? "/opt/cni/bin/plexus") + "/plexus-admin"
    let error = Subprocess.exec(path: admin, arguments: [admin] + CommandLine.arguments.dropFirst(), environment: baseEnvironment)
    try? FileSystem.writeAll(fd: 2, Array("plexus: cannot run \(admin): \(error.description)\n".utf8))
    exit(1)
}
let isVersion = environment["CNI_COMMAND"] == "VERSION"
// VERSION ignores stdin (runtimes may not even send any): do not block reading it.
let input: [UInt8] = isVersion ? [] : ((try? FileSystem.readAll(fd: 0, path: "<stdin>", limit: 16 << 20)) ?? [])
let logger = Logger(level: .error, toStderr: true)

let kubernetes = KubernetesServices(environment: environment)

let services = PlexusServices(
    makeExecutor: { config in
        ProcessPluginExecutor(baseEnvironment: baseEnvironment, timeoutSeconds: config.delegateTimeoutSeconds)
    },
    makePlanner: { config, invocation, logger throws(CNIError) in
        try kubernetes.planner(config: config, invocation: invocation, logger: logger)
    },
    makeReporter: { config, invocation, logger in
        kubernetes.reporter(config: config, invocation: invocation, logger: logger)
    },
    interfaceLister: NetlinkNetns(),
    routing: NetlinkNetns(),
    makeClaimSource: { config, invocation, logger in kubernetes.claimSource(config: config, invocation: invocation, logger: logger) },
    makeClaimPublisher: { config, invocation, logger in kubernetes.claimPublisher(config: config, invocation: invocation, logger: logger) },
    logger: logger)

let outcome = Dispatcher.run(environment: environment, stdin: input, services: services)
try? FileSystem.writeAll(fd: 1, outcome.stdout, path: "<stdout>")
exit(outcome.exitCode)
