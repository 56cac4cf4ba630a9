import Glibc
@testable import DeviceInfo

/// Bytes from a hex string; spaces and newlines are ignored. Test input only (a bad literal fails the test).
func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var pending: UInt8?
    for c in s.utf8 {
        let v: UInt8
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c - UInt8(ascii: "A") + 10
        default: continue
        }
        if let p = pending { out.append(p << 4 | v); pending = nil } else { pending = v }
    }
    return out
}

func hexString(_ bytes: [UInt8]) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for (i, b) in bytes.enumerated() {
        if i > 0 { out.append(UInt8(ascii: " ")) }
        out.append(digits[Int(b >> 4)])
        out.append(digits[Int(b & 0xF)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// `tag len "text"` for a string field.
func lenField(_ tag: UInt8, _ text: String) -> [UInt8] {
    [tag, UInt8(text.utf8.count)] + Array(text.utf8)
}

enum Golden {
    /// §2.4: the Get request body for pod `sriov-pod` in `default` (25 bytes, framed).
    static let getRequestFrame = hex("""
        00 00 00 00 14
        0a 09 73 72 69 6f 76 2d 70 6f 64
        12 07 64 65 66 61 75 6c 74
        """)

    /// §2.4: the List response body of the fake kubelet with two pods (135 bytes, framed).
    static var listResponseFrame: [UInt8] {
        let devices: [UInt8] = lenField(0x0a, "intel.com/intel_sriov_netdevice")
            + lenField(0x12, "0000:03:02.3") + lenField(0x12, "0000:03:02.0") + hex("1a 02 0a 00")
        let app: [UInt8] = lenField(0x0a, "app") + [0x12, UInt8(devices.count)] + devices
        let pod1: [UInt8] = lenField(0x0a, "sriov-pod") + lenField(0x12, "default") + [0x1a, UInt8(app.count)] + app
            + hex("1a 09") + lenField(0x0a, "sidecar")
        let pod2: [UInt8] = lenField(0x0a, "plain") + lenField(0x12, "default") + hex("1a 03") + lenField(0x0a, "c")
        let body: [UInt8] = [0x0a, UInt8(pod1.count)] + pod1 + [0x0a, UInt8(pod2.count)] + pod2
        return [0, 0, 0, 0, UInt8(body.count)] + body
    }

    static let resource = "intel.com/intel_sriov_netdevice"

    static var sriovPod: PodResources {
        PodResources(name: "sriov-pod", namespace: "default", containers: [
            ContainerResources(name: "app", devices: [
                ContainerDevices(resourceName: resource, deviceIDs: ["0000:03:02.3", "0000:03:02.0"], numaNodes: [0]),
            ]),
            ContainerResources(name: "sidecar"),
        ])
    }

    static var plainPod: PodResources {
        PodResources(name: "plain", namespace: "default", containers: [ContainerResources(name: "c")])
    }
}

/// A clock that moves only when slept on (or advanced by a fake call).
final class FakeClock: PodResourcesClock, @unchecked Sendable {
    var current: Int64
    private(set) var sleeps: [Int64] = []
    init(start: Int64 = 1_000_000_000_000) { current = start }
    func now() -> Int64 { current }
    func sleep(nanoseconds: Int64) {
        sleeps.append(nanoseconds)
        current += nanoseconds
    }
}

/// A scripted PodResources transport: each call pops the next step (the last step repeats).
final class FakePodResourcesTransport: PodResourcesTransport, @unchecked Sendable {
    enum Step {
        case answer([UInt8])
        case fail(PodResourcesCallError)
    }

    var steps: [Step]
    let clock: FakeClock?
    /// Fake time each call takes.
    var callDuration: Int64 = 1_000_000
    private(set) var calls: [(path: String, message: [UInt8], timeout: Int64)] = []

    init(_ steps: [Step], clock: FakeClock? = nil) {
        self.steps = steps
        self.clock = clock
    }

    func unaryCall(path: String, message: [UInt8], timeoutNanoseconds: Int64) throws(PodResourcesCallError) -> [UInt8] {
        calls.append((path, message, timeoutNanoseconds))
        clock?.current += min(callDuration, timeoutNanoseconds)
        let step: Step
        if steps.count > 1 { step = steps.removeFirst() } else if let s = steps.first { step = s } else {
            throw PodResourcesCallError(.setup, "no scripted step")
        }
        switch step {
        case .answer(let bytes): return bytes
        case .fail(let e): throw e
        }
    }
}

/// A fresh private temporary directory.
func makeTempDir(_ tag: String = "devinfo") -> String {
    var template = Array("/tmp/plexus-\(tag)-XXXXXX".utf8CString)
    let p = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(p != nil, "mkdtemp failed")
    return String(cString: p!)
}

func writeFile(_ path: String, _ bytes: [UInt8]) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    precondition(fd >= 0, "cannot write \(path)")
    _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

func removeTree(_ path: String) {
    guard path.hasPrefix("/tmp/plexus-") else { return }
    var pid: pid_t = 0
    let args = ["/bin/rm", "-rf", path]
    var argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
    defer { for a in argv { free(a) } }
    if posix_spawn(&pid, "/bin/rm", nil, nil, &argv, nil) == 0 {
        var st: Int32 = 0
        waitpid(pid, &st, 0)
    }
}
