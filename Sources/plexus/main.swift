// The plexus CNI plugin executable: wires real I/O (environment, stdin/stdout, posix_spawn executor, logger)
// into the dispatcher. All behaviour lives in PlexusCore.
import CNIInvoke
import CNISpec
import DaemonWire
import PlexusCore
import PlexusWiring
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

// Daemon mode: an ADD goes to the node daemon when the configuration names its socket; nobody answering in time
// means this process runs the call, as without a daemon. Every other verb (DEL above all) always runs here.
// The byte search keeps the configuration from being parsed twice when it names no daemon.
if environment["CNI_COMMAND"] == "ADD", DaemonFallback.mentionsDaemon(input), let config = try? PlexusConfig(bytes: input),
   let socket = config.daemonSocket {
    switch DaemonFallback.forward(socket: socket, config: config, environment: environment, baseEnvironment: baseEnvironment,
                                  stdin: input, logger: logger) {
    case .relay(let stdout, let code):
        try? FileSystem.writeAll(fd: 1, stdout, path: "<stdout>")
        exit(code)
    case .runHere:
        break
    }
}

let kubernetes = KubernetesServices(environment: environment)
let services = PlexusWiring.services(baseEnvironment: baseEnvironment, kubernetes: kubernetes, logger: logger)
let outcome = Dispatcher.run(environment: environment, stdin: input, services: services)
try? FileSystem.writeAll(fd: 1, outcome.stdout, path: "<stdout>")
exit(outcome.exitCode)
