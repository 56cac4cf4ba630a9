// plexus-install: the node installer the DaemonSet runs (see `plexus-install --help` and README "Administration").
// All behaviour lives in PlexusInstall; this wires the process: arguments, environment, stderr, exit status.
import PlexusInstall
import SystemKit

#if canImport(Glibc)
import Glibc
#endif

ProcessEnvironment.ignoreSIGPIPE()
let environment = ProcessEnvironment.dictionary()

func fail(_ e: InstallError) -> Never {
    let line = "plexus-install: error: \(e.message)\n"
    try? FileSystem.writeAll(fd: 2, Array(line.utf8), path: "<stderr>")
    exit(e.exitCode)
}

let options: InstallOptions
do {
    options = try InstallOptions.parse(arguments: Array(CommandLine.arguments.dropFirst()), environment: environment)
} catch {
    fail(error)
}

let logger = Logger(level: options.logLevel, toStderr: true)
let installer = Installer(options: options, environment: environment, logger: logger)
do {
    switch options.command {
    case .help:
        try? FileSystem.writeAll(fd: 1, Array(InstallOptions.helpText.utf8), path: "<stdout>")
    case .install:
        try installer.run()
    case .uninstall:
        let left = try installer.uninstall(force: true)
        if !left.isEmpty {
            logger.warning("left in place (changed by someone else)", [("paths", left.joined(separator: ","))])
        }
    case .status:
        let (ok, message) = Installer.status(options: options)
        try? FileSystem.writeAll(fd: ok ? 1 : 2, Array((message + "\n").utf8), path: "<status>")
        exit(ok ? 0 : 1)
    case .render:
        try? FileSystem.writeAll(fd: 1, try installer.render(), path: "<stdout>")
    }
} catch {
    fail(error)
}
exit(0)
