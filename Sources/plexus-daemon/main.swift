// plexus-daemon: the node daemon (see PlexusDaemon). Wires the process (signals, options, logger) and waits.
import PlexusDaemon
import SystemKit

#if canImport(Glibc)
import Glibc
#endif

ProcessEnvironment.ignoreSIGPIPE()
// Block the stop signals before any thread exists, so every thread inherits the mask and the main thread takes
// them with sigtimedwait (delegates get a clean mask from posix_spawn).
let waiter = SignalWaiter()
waiter.block()
let environment = ProcessEnvironment.dictionary()
let options: DaemonOptions
do { options = try DaemonOptions.parse(Array(CommandLine.arguments.dropFirst()), environment: environment) } catch {
    try? FileSystem.writeAll(fd: 2, Array("plexus-daemon: \(error.description)\n".utf8))
    exit(2)
}
let logger = Logger(level: LogLevel(name: options.logLevel) ?? .info, toStderr: true)
if let f = options.logFile { logger.setFile(f) }
logger.context = [("component", "plexus-daemon")]

let daemon: Daemon
do { daemon = try Daemon(options: options, environment: environment, logger: logger) } catch {
    logger.error("cannot start", [("error", error.description)])
    exit(1)
}
do {
    if let port = try daemon.start() { logger.info("metrics port", [("port", String(port))]) }
} catch {
    logger.error("cannot start", [("error", error.description)])
    exit(1)
}
while true {
    guard let sig = waiter.wait(milliseconds: 60_000) else { continue }
    logger.info("stopping: draining in-flight calls", [("signal", SignalWaiter.name(sig)), ("seconds", String(options.drainSeconds))])
    let left = daemon.drain()
    if left > 0 { logger.warning("calls still running at the drain deadline", [("calls", String(left))]) }
    logger.info("stopped")
    exit(0)
}
