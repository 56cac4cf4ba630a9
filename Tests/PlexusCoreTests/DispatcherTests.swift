import CNIInvoke
import CNISpec
import SystemKit
import Testing
@testable import PlexusCore

@Suite struct DispatcherTests {
    func run(_ env: [String: String], _ stdin: String, exec: FakeExecutor = FakeExecutor()) -> (Int32, JSON?) {
        let services = PlexusServices(makeExecutor: { _ in exec }, logger: Logger(level: .panic, toStderr: false))
        let out = Dispatcher.run(environment: env, stdin: Array(stdin.utf8), services: services)
        return (out.exitCode, try? JSON.parse(out.stdout))
    }

    let base = ["CNI_CONTAINERID": "c1", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0", "CNI_PATH": "/fake"]
    var conf: String { #"{"cniVersion":"1.0.0","name":"pxnet","type":"plexus","cniDir":"/tmp/pxunit-never","delegates":[{"cniVersion":"1.0.0","name":"a","type":"bridge"}]}"# }

    @Test func versionEchoesSupportedInput() {
        let (code, out) = run(["CNI_COMMAND": "VERSION"], #"{"cniVersion":"0.4.0"}"#)
        #expect(code == 0)
        #expect(out?["cniVersion"] == .string("0.4.0"))
        #expect(out?["supportedVersions"]?.arrayValue?.count == 7)
        #expect(run(["CNI_COMMAND": "VERSION"], "").1?["cniVersion"] == .string("1.1.0"))
    }

    @Test(arguments: [
        (["CNI_COMMAND": "ADD"], 4, "CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME"),
        (["CNI_COMMAND": "FOO"], 4, "unknown CNI_COMMAND"),
        ([:], 4, "CNI_COMMAND"),
        (["CNI_COMMAND": "ADD", "CNI_CONTAINERID": "-bad", "CNI_NETNS": "/x", "CNI_IFNAME": "eth0"], 4, "containerID"),
        (["CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/x", "CNI_IFNAME": "waytoolonginterface"], 4, "too long"),
        (["CNI_COMMAND": "DEL", "CNI_CONTAINERID": "c"], 4, "CNI_IFNAME"),
    ] as [([String: String], Int, String)])
    func environmentErrors(_ env: [String: String], _ code: Int, _ fragment: String) {
        let (exit, out) = run(env, conf)
        #expect(exit == 1)
        #expect(out?["code"]?.intValue == code)
        let msg: String = out?["msg"]?.stringValue ?? ""
        let details: String = out?["details"]?.stringValue ?? ""
        let text = msg + " " + details
        #expect(text.contains(fragment))
    }

    @Test(arguments: [
        ("{not json", 6, "cannot parse"),
        (#"{"cniVersion":"9.9.9","name":"n","type":"plexus","delegates":[{"name":"a","type":"b"}]}"#, 1, "incompatible"),
        (#"{"cniVersion":"1.0.0","name":"n","type":"plexus","binDir":5,"delegates":[{"name":"a","type":"b"}]}"#, 7, "binDir"),
        (#"{"cniVersion":"1.0.0","name":"n","type":"plexus","delegates":{}}"#, 7, "delegates"),
        (#"{"cniVersion":"1.0.0","name":"n","type":"plexus"}"#, 7, "clusterNetwork"),
        (#"{"cniVersion":"1.0.0","name":"n","type":"plexus","logToStderr":"yes","delegates":[{"name":"a","type":"b"}]}"#, 7, "logToStderr"),
        (#"{"cniVersion":"1.0.0","name":"n","type":"plexus","cniDir":"/tmp/pxunit-t","delegates":[{"cniVersion":"1.0.0","name":"a","type":"../evil"}]}"#, 7, "../evil"),
    ])
    func configErrors(_ stdin: String, _ code: Int, _ fragment: String) {
        let exec = FakeExecutor()
        let (exit, out) = run(base.merging(["CNI_COMMAND": "ADD"]) { $1 }, stdin, exec: exec)
        #expect(exit == 1)
        #expect(out?["code"]?.intValue == code)
        let msg: String = out?["msg"]?.stringValue ?? ""
        let details: String = out?["details"]?.stringValue ?? ""
        #expect((msg + details).contains(fragment))
        #expect(exec.calls.isEmpty)
    }

    @Test func gcAndStatusNeed110() {
        let (exit, out) = run(["CNI_COMMAND": "GC"], conf)
        #expect(exit == 1 && out?["code"]?.intValue == 1)
    }
}
