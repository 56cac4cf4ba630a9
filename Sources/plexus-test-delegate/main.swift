// plexus-test-delegate: a fake CNI delegate for tests (failure injection, recording, crash points).
//
// Behaviour comes from keys in its own network configuration (so each network of a test can behave differently):
//   "recordDir":  every invocation is written to <recordDir>/<seq>-<COMMAND>-<ifname>.json ({env, stdin}; env holds
//                 the CNI_* variables and the trace context TRACEPARENT/TRACESTATE/BAGGAGE)
//   "stateDir":   ADD creates <stateDir>/<containerID>-<ifname>; DEL removes it; CHECK fails if it is missing;
//                 GC removes every file not named by cni.dev/valid-attachments
//   "fail":       {"ADD": {"code": 11, "msg": "...", "details": "..."}, "DEL": {...}}: always fail that verb
//   "failProbability" + "failCommands": fail the listed verbs at random with that probability (soak tests)
//   "pauseFile":  on ADD, create <pauseFile>.started and wait until <pauseFile>.release exists (crash tests)
//   "sleepMs":    sleep before answering
//   "ip":         address for the generated result (default 10.99.0.2/24)
//   "resultVersion": cniVersion to stamp on the generated result (default: the config's)
//   "supportedVersions": VERSION answer
//   "status":     {"code": 50, "msg": "..."}: STATUS fails with it
// With a prevResult (inside a chain) ADD passes it through unchanged, as the spec requires.
import CNISpec
import SystemKit

#if canImport(Glibc)
import Glibc
#endif

ProcessEnvironment.ignoreSIGPIPE()
let env = ProcessEnvironment.dictionary()
let command = env["CNI_COMMAND"] ?? ""
let containerID = env["CNI_CONTAINERID"] ?? ""
let ifname = env["CNI_IFNAME"] ?? ""
let stdinBytes = (try? FileSystem.readAll(fd: 0)) ?? []

func emit(_ json: JSON, exitCode: Int32) -> Never {
    var out = json.serializedBytes()
    out.append(0x0A)
    try? FileSystem.writeAll(fd: 1, out)
    exit(exitCode)
}

func failWith(_ spec: JSON?, version: String, defaultMsg: String) -> Never {
    let code = spec?["code"]?.intValue ?? 999
    let msg = spec?["msg"]?.stringValue ?? defaultMsg
    let details = spec?["details"]?.stringValue ?? ""
    emit(CNIError(.init(rawValue: code), msg, details: details).json(cniVersion: version), exitCode: 1)
}

if command == "VERSION" {
    let versions = (try? JSON.parse(stdinBytes))?["supportedVersions"] ?? .array(CNIVersion.supported.map { .string($0) })
    emit(.object(JSONObject([("cniVersion", .string("1.1.0")), ("supportedVersions", versions)])), exitCode: 0)
}

guard let config = try? JSON.parse(stdinBytes), let conf = config.objectValue else {
    failWith(.object(JSONObject([("code", .int(6)), ("msg", .string("cannot parse config"))])), version: "", defaultMsg: "")
}
let version = conf["cniVersion"]?.stringValue ?? ""

if let dir = conf["recordDir"]?.stringValue {
    try? FileSystem.makeDirectories(dir, mode: 0o755)
    let envObj = JSONObject(env.keys.sorted().filter { $0.hasPrefix("CNI_") || ["TRACEPARENT", "TRACESTATE", "BAGGAGE"].contains($0) }.map { ($0, JSON.string(env[$0] ?? "")) })
    let record = JSONObject([("env", .object(envObj)), ("stdin", config)])
    let seq = Clock.monotonicNanoseconds()
    try? FileSystem.writeAtomically("\(dir)/\(seq)-\(getpid())-\(command)-\(ifname).json", JSON.object(record).serializedBytes(), mode: 0o644)
}

if let ms = conf["sleepMs"]?.intValue { Clock.sleep(milliseconds: ms) }

if let fails = conf["fail"]?.objectValue, let spec = fails[command] {
    failWith(spec, version: version, defaultMsg: "injected \(command) failure")
}
if let p = conf["failProbability"].flatMap({ $0.serialized() }).flatMap(Double.init), p > 0 {
    let commands = conf["failCommands"]?.arrayValue?.compactMap(\.stringValue) ?? ["ADD", "DEL"]
    var rng = SystemRandomNumberGenerator()
    if commands.contains(command), Double.random(in: 0..<1, using: &rng) < p {
        failWith(.object(JSONObject([("code", .int(11)), ("msg", .string("random \(command) failure"))])),
                 version: version, defaultMsg: "")
    }
}

let stateDir = conf["stateDir"]?.stringValue
let stateFile = stateDir.map { "\($0)/\(containerID)-\(ifname)" }

switch command {
case "ADD":
    if let pause = conf["pauseFile"]?.stringValue {
        try? FileSystem.writeAtomically(pause + ".started", Array("\(getpid())".utf8), mode: 0o644)
        while !FileSystem.exists(pause + ".release") { Clock.sleep(milliseconds: 10) }
    }
    if let stateDir, let stateFile {
        try? FileSystem.makeDirectories(stateDir, mode: 0o755)
        if FileSystem.exists(stateFile) {
            failWith(nil, version: version, defaultMsg: "attachment \(containerID)/\(ifname) already exists")
        }
        try? FileSystem.writeAtomically(stateFile, Array(version.utf8), mode: 0o644)
    }
    if let prev = conf["prevResult"], prev.objectValue != nil {
        emit(prev, exitCode: 0)
    }
    let resultVersion = conf["resultVersion"]?.stringValue ?? version
    var r = CNIResult(cniVersion: resultVersion)
    r.interfaces = [CNIResult.Interface(name: ifname, mac: "02:00:00:00:00:01", sandbox: env["CNI_NETNS"] ?? "")]
    r.ips = [CNIResult.IPConfig(address: conf["ip"]?.stringValue ?? "10.99.0.2/24", gateway: "10.99.0.1", interface: 0)]
    r.routes = [CNIResult.Route(dst: "0.0.0.0/0", gw: "10.99.0.1")]
    guard let out = try? r.json(version: resultVersion) else {
        failWith(nil, version: version, defaultMsg: "cannot build result")
    }
    emit(out, exitCode: 0)
case "DEL":
    if let stateFile { try? FileSystem.remove(stateFile) }
    exit(0)
case "CHECK":
    if let stateFile, !FileSystem.exists(stateFile) {
        failWith(nil, version: version, defaultMsg: "attachment \(containerID)/\(ifname) does not exist")
    }
    exit(0)
case "GC":
    if let stateDir {
        let valid = Set((conf["cni.dev/valid-attachments"]?.arrayValue ?? []).compactMap { a -> String? in
            guard let c = a["containerID"]?.stringValue, let i = a["ifname"]?.stringValue else { return nil }
            return "\(c)-\(i)"
        })
        for name in (try? FileSystem.list(stateDir)) ?? [] where !valid.contains(name) {
            try? FileSystem.remove("\(stateDir)/\(name)")
        }
    }
    exit(0)
case "STATUS":
    if let spec = conf["status"] { failWith(spec, version: version, defaultMsg: "not available") }
    exit(0)
default:
    failWith(.object(JSONObject([("code", .int(4)), ("msg", .string("unknown CNI_COMMAND: \(command)"))])), version: version, defaultMsg: "")
}
