// plexus-passthru: the head of an `auxiliaryCNIChainName` chain, as Multus' passthru. ADD prints an empty result
// of the configuration's version (so the chained plugins after it get a valid prevResult); DEL, CHECK, GC and
// STATUS succeed with no output; VERSION lists the versions it can emit.
import CNISpec
import SystemKit

#if canImport(Glibc)
import Glibc
#endif

let versions = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

func emit(_ json: JSON, exitCode: Int32) -> Never {
    var out = json.serializedBytes()
    out.append(0x0A)
    try? FileSystem.writeAll(fd: 1, out, path: "<stdout>")
    exit(exitCode)
}

ProcessEnvironment.ignoreSIGPIPE()
let command = ProcessEnvironment.dictionary()["CNI_COMMAND"] ?? ""
let stdin = command == "VERSION" ? [] : ((try? FileSystem.readAll(fd: 0, path: "<stdin>", limit: 16 << 20)) ?? [])

switch command {
case "VERSION":
    emit(.object(JSONObject([("cniVersion", .string("1.1.0")), ("supportedVersions", .array(versions.map { .string($0) }))])),
         exitCode: 0)
case "ADD":
    let version: String
    do {
        let config = try JSON.parse(stdin)
        version = config["cniVersion"]?.stringValue ?? ""
    } catch {
        emit(CNIError(.decodingFailure, "passthru: cannot parse the network configuration", details: error.description)
            .json(cniVersion: "1.1.0"), exitCode: 1)
    }
    guard versions.contains(version) else {
        emit(CNIError(.incompatibleVersion, "passthru: unsupported cniVersion \"\(version)\"", details: "supports \(versions)")
            .json(cniVersion: "1.1.0"), exitCode: 1)
    }
    let result = JSONObject([("cniVersion", .string(version)), ("interfaces", .array([])), ("ips", .array([])),
                             ("routes", .array([])), ("dns", .object(JSONObject()))])
    emit(.object(result), exitCode: 0)
case "DEL", "CHECK", "GC", "STATUS":
    exit(0)
default:
    emit(CNIError(.invalidEnvironment, "passthru: unknown CNI_COMMAND \"\(command)\"").json(cniVersion: "1.1.0"), exitCode: 1)
}
