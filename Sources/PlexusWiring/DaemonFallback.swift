import CNISpec
import DaemonWire
import PlexusCore
import SystemKit

/// The thin plugin's half of daemon mode: forward, relay, or fall back.
public enum DaemonFallback {
    public enum Decision {
        /// Print this and exit with this code (the daemon's answer, or an error when it died mid-call).
        case relay(stdout: [UInt8], exitCode: Int32)
        /// Nobody ran the call: run it in this process.
        case runHere
    }

    /// Whether the configuration bytes contain the key `daemonSocket` at all.
    public static func mentionsDaemon(_ stdin: [UInt8]) -> Bool {
        let key = Array("\"daemonSocket\"".utf8)
        guard stdin.count >= key.count else { return false }
        var i = 0
        while i + key.count <= stdin.count {
            if stdin[i] == key[0] && Array(stdin[i..<(i + key.count)]) == key { return true }
            i += 1
        }
        return false
    }

    /// `<cniDir>/daemon-unavailable` exists while ADDs fall back, so the fallback is logged once, not per ADD.
    static func marker(_ config: PlexusConfig) -> String { config.cniDir + "/daemon-unavailable" }

    public static func forward(socket: String, config: PlexusConfig, environment: [String: String], baseEnvironment: [String],
                               stdin: [UInt8], logger: Logger) -> Decision {
        // The result wait covers every delegate of a pod; the runtime's own timeout usually ends it earlier.
        let resultMs = Int(min(config.delegateTimeoutSeconds, 3600) * 1000) * 32 + Int(min(config.apiDeadlineSeconds, 3600) * 1000) * 4
        switch DaemonClient.forward(socketPath: socket, environment: baseEnvironment, stdin: stdin,
                                    admitMilliseconds: config.daemonAdmitMilliseconds, resultMilliseconds: resultMs) {
        case .answered(let stdout, let code):
            if FileSystem.exists(marker(config)) {
                try? FileSystem.remove(marker(config))
                configured(logger, config, environment).warning("node daemon answers again", [("socket", socket)])
            }
            return .relay(stdout: stdout, exitCode: code)
        case .unavailable(let why):
            if !FileSystem.exists(marker(config)) {
                try? FileSystem.writeAtomically(marker(config), Array((why + "\n").utf8), durable: false)
                configured(logger, config, environment).error("node daemon unavailable, running ADDs in the plugin until it answers",
                                                              [("socket", socket), ("reason", why)])
            }
            return .runHere
        case .lost(let why):
            let subject = (try? CNIInvocation(environment: environment))?.subject ?? "the container"
            let error = CNIError(.tryAgainLater, "\(subject): the node daemon stopped while it ran the ADD",
                                 details: "\(socket): \(why); the runtime's DEL cleans up what was attached")
            configured(logger, config, environment).error("command failed", [("code", "11"), ("error", error.description)])
            var out = error.json(cniVersion: config.cniVersion.isEmpty ? CNIVersion.current.description : config.cniVersion)
                .serializedBytes()
            out.append(0x0A)
            return .relay(stdout: out, exitCode: 1)
        }
    }

    static func configured(_ logger: Logger, _ config: PlexusConfig, _ environment: [String: String]) -> Logger {
        if let invocation = try? CNIInvocation(environment: environment) {
            Dispatcher.configure(logger, config: config, invocation: invocation)
        }
        return logger
    }
}
