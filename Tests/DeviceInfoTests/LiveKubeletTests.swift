import Foundation
import KubeClient
import PlexusCore
import SystemKit
import Testing
@testable import DeviceInfo

// Through the plugin core's adapter (PlexusCore.CurlPodResourcesTransport): KubeClient's curl transport behind
// DeviceInfo's protocol, as the plugin uses it.

/// A fake kubelet in Python `grpcio` (device-plugins.md §7.1) on two sockets: `new.sock` serves `Get` and `List`,
/// `old.sock` only `List` (kubelet < 1.27). Pod `default/sriov-pod` has the §2.4 devices; `default/late` gets its
/// devices from the third `Get` of it on.
private final class FakeKubelet: @unchecked Sendable {
    static let enabled = ProcessInfo.processInfo.environment["PLEXUS_GRPC_LIVE"] == "1"
    nonisolated(unsafe) static var dirToRemove: String?

    static let shared: Result<FakeKubelet, StartError> = {
        do { return .success(try FakeKubelet()) } catch let e as StartError { return .failure(e) } catch {
            return .failure(StartError(message: "\(error)"))
        }
    }()

    struct StartError: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }

    static let script = #"""
    import os, sys, time, threading, grpc
    from concurrent import futures
    d, parent = sys.argv[1], int(sys.argv[2])
    def varint(n):
        out = b""
        while n >= 0x80:
            out += bytes([(n & 0x7f) | 0x80]); n >>= 7
        return out + bytes([n])
    def field(num, payload):
        return varint(num << 3 | 2) + varint(len(payload)) + payload
    def s(x): return x.encode()
    def devices(res, ids, numa=None):
        b = field(1, s(res)) + b"".join(field(2, s(i)) for i in ids)
        if numa is not None:
            b += field(3, field(1, b"" if numa == 0 else b"\x08" + varint(numa)))
        return b
    def pod(name, ns, containers):
        return field(1, s(name)) + field(2, s(ns)) + b"".join(field(3, c) for c in containers)
    RES = "intel.com/intel_sriov_netdevice"
    late_calls = [0]
    def pods():
        late_devs = [field(2, devices(RES, ["0000:03:02.5"], 1))] if late_calls[0] >= 3 else []
        return {
            ("default", "sriov-pod"): pod("sriov-pod", "default", [
                field(1, s("app")) + field(2, devices(RES, ["0000:03:02.3", "0000:03:02.0"], 0)),
                field(1, s("sidecar"))]),
            ("default", "late"): pod("late", "default", [field(1, s("app")) + b"".join(late_devs)]),
        }
    def parse_get(req):
        out, i = {}, 0
        while i < len(req):
            key = req[i]; n = req[i + 1]
            out[key >> 3] = req[i + 2:i + 2 + n].decode(); i += 2 + n
        return out.get(2, ""), out.get(1, "")
    def get(req, ctx):
        ns, name = parse_get(req)
        if name == "late":
            late_calls[0] += 1
        p = pods().get((ns, name))
        if p is None:
            ctx.abort(grpc.StatusCode.UNKNOWN, "pod %s in namespace %s not found" % (name, ns))
        return field(1, p)
    def lst(req, ctx):
        return b"".join(field(1, p) for p in pods().values())
    def serve(sock, methods):
        if os.path.exists(sock): os.unlink(sock)
        srv = grpc.server(futures.ThreadPoolExecutor(4))
        srv.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("v1.PodResourcesLister",
            {k: grpc.unary_unary_rpc_method_handler(v) for k, v in methods.items()}),))
        srv.add_insecure_port("unix://" + sock)
        srv.start()
        return srv
    a = serve(d + "/new.sock", {"Get": get, "List": lst})
    b = serve(d + "/old.sock", {"List": lst})
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)
    """#

    let dir: String
    private let process: Process

    /// Whether the server at `socket` answers a List (with devices or with any gRPC status).
    static func answers(_ socket: String) -> Bool {
        do {
            _ = try CurlGRPCTransport(socketPath: socket).call(path: "/v1.PodResourcesLister/List", message: [], timeoutNanoseconds: 2_000_000_000)
            return true
        } catch {
            if case .status = error.kind { return true }
            return false
        }
    }

    private init() throws {
        dir = makeTempDir("kubelet")
        FakeKubelet.dirToRemove = dir
        atexit { if let d = FakeKubelet.dirToRemove { removeTree(d) } }
        writeFile(dir + "/kubelet.py", Array(Self.script.utf8))
        let log = dir + "/kubelet.log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", dir + "/kubelet.py", dir, String(getpid())]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle(forWritingAtPath: log)
        p.standardError = FileHandle(forWritingAtPath: log)
        try p.run()
        process = p
        let deadline = Clock.monotonicNanoseconds() + 20_000_000_000
        while Clock.monotonicNanoseconds() < deadline {
            if !p.isRunning {
                let text = (try? FileSystem.readString(log)) ?? ""
                throw StartError(message: "the fake kubelet exited:\n\(text.suffix(2000))")
            }
            // The socket files appear at bind, before the server serves: ready once both answer a call.
            if FileSystem.exists(dir + "/new.sock") && FileSystem.exists(dir + "/old.sock"),
               Self.answers(dir + "/new.sock"), Self.answers(dir + "/old.sock") {
                return
            }
            Clock.sleep(milliseconds: 20)
        }
        p.terminate()
        throw StartError(message: "the fake kubelet did not create its sockets")
    }
}

private func kubelet() throws -> FakeKubelet {
    switch FakeKubelet.shared {
    case .success(let k): return k
    case .failure(let e): throw e
    }
}

private let resource = "intel.com/intel_sriov_netdevice"

private func client(_ socket: String) -> PodResourcesClient {
    PodResourcesClient(transport: CurlPodResourcesTransport(CurlGRPCTransport(socketPath: socket)),
                       policy: PodResourcesPolicy(callTimeoutNanoseconds: 2_000_000_000, baseDelayNanoseconds: 20_000_000))
}

@Suite(.enabled(if: FakeKubelet.enabled, "set PLEXUS_GRPC_LIVE=1 to run against a Python grpcio fake kubelet"), .serialized)
struct LiveKubeletTests {
    @Test func getThenPickTwoDevices() throws {
        let k = try kubelet()
        let c = client(k.dir + "/new.sock")
        let devices = try c.podDevices(namespace: "default", name: "sriov-pod", wanting: [resource],
                                       deadline: Clock.deadline(afterSeconds: 5))
        #expect(c.callPaths == ["/v1.PodResourcesLister/Get"])
        #expect(devices.deviceIDs(for: resource) == ["0000:03:02.0", "0000:03:02.3"])
        let picks = try DevicePicker.pick([(networkKey: "default/sriov-a", resourceName: resource),
                                           (networkKey: "default/sriov-b", resourceName: resource)], from: devices)
        #expect(picks == ["default/sriov-a": "0000:03:02.0", "default/sriov-b": "0000:03:02.3"])
    }

    @Test func oldKubeletFallsBackToList() throws {
        let k = try kubelet()
        let c = client(k.dir + "/old.sock")
        let devices = try c.podDevices(namespace: "default", name: "sriov-pod", wanting: [resource],
                                       deadline: Clock.deadline(afterSeconds: 5))
        #expect(c.callPaths == ["/v1.PodResourcesLister/Get", "/v1.PodResourcesLister/List"])
        #expect(devices.deviceIDs(for: resource) == ["0000:03:02.0", "0000:03:02.3"])
    }

    @Test func devicesThatAppearLaterAreWaitedFor() throws {
        let k = try kubelet()
        let c = client(k.dir + "/new.sock")
        let devices = try c.podDevices(namespace: "default", name: "late", wanting: [resource],
                                       deadline: Clock.deadline(afterSeconds: 5))
        #expect(devices.deviceIDs(for: resource) == ["0000:03:02.5"])
        #expect(c.callPaths.count >= 2)
    }

    @Test func unknownPodAndMissingSocket() throws {
        let k = try kubelet()
        let start = Clock.monotonicNanoseconds()
        do {
            _ = try client(k.dir + "/new.sock").podDevices(namespace: "default", name: "ghost", wanting: [resource],
                                                           deadline: Clock.deadline(afterSeconds: 0.5))
            Issue.record("expected podNotFound")
        } catch {
            #expect(error.kind == .podNotFound)
            #expect(error.detail.contains("pod ghost in namespace default not found"))
        }
        #expect(Clock.monotonicNanoseconds() - start < 1_500_000_000)
        do {
            _ = try client(k.dir + "/absent.sock").podDevices(namespace: "default", name: "sriov-pod", wanting: [resource],
                                                              deadline: Clock.deadline(afterSeconds: 5))
            Issue.record("expected socketAbsent")
        } catch {
            #expect(error.kind == .socketAbsent)
            #expect(error.attempts == 1)
        }
    }
}
