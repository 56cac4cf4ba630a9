import CNIInvoke
import CNISpec
import SystemKit
@testable import PlexusCore

#if canImport(Glibc)
import Glibc
#endif

/// An in-process fake of the delegate process boundary: records every call and answers from a script.
final class FakeExecutor: PluginExecutor, @unchecked Sendable {
    struct Call {
        var command: String
        var type: String
        var ifname: String
        var containerID: String
        var netns: String
        var stdin: JSON
        var cniArgs: String = ""
    }

    private(set) var calls: [Call] = []
    private let lock = NSLockish()
    /// (command, network name) -> error to throw.
    var failures: [String: CNIError] = [:]
    /// Live attachments per network: "net/cid/ifname".
    private(set) var live: Set<String> = []
    /// ADD results to return per network name instead of the generated one.
    var results: [String: JSON] = [:]

    func find(_ type: String, in paths: [String]) throws(CNIError) -> String {
        try CNIValidation.validatePluginType(type)
        if type == "missing" { throw CNIError(.invalidNetworkConfig, "failed to find plugin \"missing\"") }
        return "/fake/" + type
    }

    func execute(_ r: ExecRequest) throws(CNIError) -> [UInt8] {
        // As the process executor: the gate passes before the delegate sees its configuration.
        try r.inputGate?.pass()
        let stdin = (try? JSON.parse(r.stdin)) ?? .null
        let net = stdin["name"]?.stringValue ?? ""
        let type = String(r.pluginPath.dropFirst("/fake/".count))
        lock.lock()
        defer { lock.unlock() }
        calls.append(Call(command: r.command, type: type, ifname: r.ifname, containerID: r.containerID, netns: r.netns, stdin: stdin,
                          cniArgs: r.cniArgs))
        if let e = failures["\(r.command)/\(net)"] { throw e }
        let key = "\(net)/\(r.containerID)/\(r.ifname)"
        switch r.command {
        case "ADD":
            live.insert(key)
            if let fixed = results[net] { return fixed.serializedBytes() }
            if let prev = stdin["prevResult"] { return prev.serializedBytes() }
            let v = stdin["cniVersion"]?.stringValue ?? "1.0.0"
            var res = CNIResult(cniVersion: v)
            res.interfaces = [.init(name: r.ifname, mac: "02:00:00:00:00:01", sandbox: r.netns)]
            res.ips = [.init(address: "10.0.\(calls.count).2/24", gateway: "10.0.\(calls.count).1", interface: 0)]
            return (try? res.json(version: v).serializedBytes()) ?? []
        case "DEL":
            live.remove(key)
            return []
        default:
            return []
        }
    }
}

/// A pthread mutex (the fake is called from teardown threads).
final class NSLockish: @unchecked Sendable {
    private var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    func lock() { pthread_mutex_lock(&m) }
    func unlock() { pthread_mutex_unlock(&m) }
}

/// A temporary directory removed at deinit.
final class TempDir {
    let path: String
    init() {
        var template = Array("/tmp/pxunit.XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { buf in mkdtemp(buf.baseAddress!) }
        path = p.map { String(cString: $0) } ?? "/tmp/pxunit-fallback"
    }
    deinit { _ = system("rm -rf '\(path)'") }

    func files(_ sub: String) -> [String] { (try? FileSystem.list(path + "/" + sub)) ?? [] }
}

/// Serial attach and teardown by default so call order is deterministic; the concurrent paths have their own tests.
func makeConfig(_ dir: TempDir, version: String = "1.0.0", extra: String = "", parallel: Bool = false,
                delegates: [String]) throws -> PlexusConfig {
    let text = #"{"cniVersion":"\#(version)","name":"pxnet","type":"plexus","cniDir":"\#(dir.path)/cache","confDir":"\#(dir.path)/conf","binDir":"/fake","parallelTeardown":\#(parallel),"parallelAttach":\#(parallel)\#(extra),"delegates":[\#(delegates.joined(separator: ","))]}"#
    return try PlexusConfig(bytes: Array(text.utf8))
}

func net(_ name: String, version: String = "1.0.0", type: String = "bridge") -> String {
    #"{"cniVersion":"\#(version)","name":"\#(name)","plugins":[{"type":"\#(type)","x":{"keep":1.50}}]}"#
}

func invocation(_ command: String, cid: String = "c1", ifname: String = "eth0", netns: String = "/var/run/netns/px1",
                args: String = "K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=pod1") throws -> CNIInvocation {
    try CNIInvocation(environment: ["CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname,
                                    "CNI_NETNS": netns, "CNI_ARGS": args, "CNI_PATH": "/fake"])
}

func plexus(_ config: PlexusConfig, _ inv: CNIInvocation, _ exec: FakeExecutor) -> Plexus {
    Plexus(config: config, invocation: inv, executor: exec, logger: Logger(level: .panic, toStderr: false), sleep: { _ in })
}
