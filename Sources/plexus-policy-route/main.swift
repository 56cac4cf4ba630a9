// plexus-policy-route: a CNI plugin run by Plexus as a finalizer (once per pod, after every network is attached).
// It gives each secondary interface its own routing table and source rules. The verbs live in PolicyRoute; this file
// wires the environment, stdin/stdout and netlink in. stdout carries nothing but the result or error JSON.
import CNISpec
import PolicyRoute
import SystemKit

#if canImport(Glibc)
import Glibc
#endif

ProcessEnvironment.ignoreSIGPIPE()
let environment = ProcessEnvironment.dictionary()
// VERSION ignores stdin (runtimes may not send any): do not block reading it.
let input: [UInt8] = environment["CNI_COMMAND"] == "VERSION"
    ? [] : ((try? FileSystem.readAll(fd: 0, path: "<stdin>", limit: 16 << 20)) ?? [])
let outcome = PolicyRoutePlugin.run(environment: environment, stdin: input, netns: NetlinkPolicyNetns(), log: { line in
    try? FileSystem.writeAll(fd: 2, Array((line + "\n").utf8), path: "<stderr>")
})
try? FileSystem.writeAll(fd: 1, outcome.stdout, path: "<stdout>")
exit(outcome.exitCode)
