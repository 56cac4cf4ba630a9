import CNISpec
import Glibc
import Testing
@testable import DeviceInfo

private func infoError<T>(_ body: () throws(DeviceInfoError) -> T) -> DeviceInfoError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

@Suite struct DeviceInfoDocumentTests {
    /// §5.2's valid examples.
    static let examples: [(String, DeviceInfoDocument.DeviceType)] = [
        (#"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.0","pf-pci-address":"0000:03:00.0"}}"#, .pci),
        (#"{"type":"vdpa","version":"1.1.0","vdpa":{"parent-device":"vdpa0","driver":"vhost","path":"/dev/vhost-vdpa-0","pci-address":"0000:65:00.2"}}"#, .vdpa),
        (#"{"type":"vhost-user","version":"1.1.0","vhost-user":{"mode":"server","path":"/var/run/vhost/net1.sock"}}"#, .vhostUser),
        (#"{"type":"memif","version":"1.1.0","memif":{"role":"master","path":"/run/memif/net1.sock","mode":"ethernet"}}"#, .memif),
    ]

    @Test(arguments: examples)
    func specExamplesParseAndRoundTrip(text: String, type: DeviceInfoDocument.DeviceType) throws {
        let doc = try DeviceInfoDocument.parse(Array(text.utf8))
        #expect(doc.type == type)
        #expect(doc.version == "1.1.0")
        #expect(doc.details != nil)
        #expect(doc.missingRequiredKeys.isEmpty)
        #expect(String(decoding: doc.serializedBytes(), as: UTF8.self) == text)
    }

    @Test func unknownKeysAndNumberTextPassThrough() throws {
        let text = #"""
        { "version": "1.1.0", "x-vendor": {"a": [1.50, null]}, "type": "pci",
          "pci": {"rdma-device": "mlx5_0,mlx5_1", "pci-address": "0000:03:02.0", "future": 10000000000000000001} }
        """#
        let doc = try DeviceInfoDocument.parse(Array(text.utf8))
        #expect(doc.pciAddress == "0000:03:02.0")
        #expect(doc.object.keys == ["version", "x-vendor", "type", "pci"])
        #expect(String(decoding: doc.serializedBytes(), as: UTF8.self)
            == #"{"version":"1.1.0","x-vendor":{"a":[1.50,null]},"type":"pci","pci":{"rdma-device":"mlx5_0,mlx5_1","pci-address":"0000:03:02.0","future":10000000000000000001}}"#)
        #expect(doc.json["x-vendor"]?["a"]?.arrayValue?.count == 2)
    }

    @Test func builtDocuments() {
        let doc = DeviceInfoDocument.pci(address: "0000:03:02.0",
                                         extra: JSONObject([("pf-pci-address", .string("0000:03:00.0"))]))
        #expect(String(decoding: doc.serializedBytes(), as: UTF8.self)
            == #"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.0","pf-pci-address":"0000:03:00.0"}}"#)
        let memif = DeviceInfoDocument(type: .memif, details: JSONObject([("role", .string("slave"))]))
        #expect(memif.missingRequiredKeys == ["memif.path", "memif.mode"])
    }

    @Test func missingRequiredKeysAreReportedNotRejected() throws {
        let doc = try DeviceInfoDocument.parse(Array(#"{"type":"vdpa","vdpa":{"driver":"virtio"}}"#.utf8))
        #expect(doc.version == "")
        #expect(doc.missingRequiredKeys == ["version", "vdpa.parent-device", "vdpa.path"])
        let noMap = try DeviceInfoDocument.parse(Array(#"{"type":"pci","version":"1.1.0"}"#.utf8))
        #expect(noMap.details == nil)
        #expect(noMap.pciAddress == nil)
        #expect(noMap.missingRequiredKeys == ["pci"])
        let future = try DeviceInfoDocument.parse(Array(#"{"type":"cxl","version":"1.2.0","cxl":{"id":1}}"#.utf8))
        #expect(future.type == .other("cxl"))
        #expect(future.details?["id"] == .number("1"))
        #expect(future.missingRequiredKeys.isEmpty)
    }

    static let invalid: [(String, DeviceInfoError.Kind)] = [
        ("", .invalidJSON),
        ("{\"type\":", .invalidJSON),
        ("[]", .invalidDocument),
        ("\"pci\"", .invalidDocument),
        ("{}", .invalidDocument),
        (#"{"type":1}"#, .invalidDocument),
        (#"{"type":""}"#, .invalidDocument),
        (#"{"type":"pci","version":110}"#, .invalidDocument),
        (#"{"type":"pci","pci":"0000:03:02.0"}"#, .invalidDocument),
    ]

    @Test(arguments: invalid)
    func invalidDocuments(text: String, kind: DeviceInfoError.Kind) {
        let e = infoError { () throws(DeviceInfoError) in try DeviceInfoDocument.parse(Array(text.utf8)) }
        #expect(e?.kind == kind, "\(text)")
        #expect(e?.description.hasPrefix("invalid device-info: ") == true)
    }
}

@Suite struct DeviceInfoPathTests {
    static let containerID = String(repeating: "ab", count: 32)

    @Test func dpFileNameFollowsTheSpec() throws {
        #expect(try DeviceInfoPaths.dpFileName(resourceName: "intel.com/intel_sriov_netdevice", deviceID: "0000:03:02.0")
            == "intel.com-intel_sriov_netdevice-0000:03:02.0-device.json")
        // `/` in the device ID is replaced too (NAD client); `.`, `:` are kept.
        #expect(try DeviceInfoPaths.dpFileName(resourceName: "a.b/c/d", deviceID: "x/y..z")
            == "a.b-c-d-x-y..z-device.json")
        let paths = DeviceInfoPaths()
        #expect(paths.dpDirectory == "/run/k8s.cni.cncf.io/devinfo/dp")
        #expect(try paths.dpFilePath(resourceName: "nvidia.com/bf2_sf", deviceID: "mlx5_core.sf.4")
            == "/run/k8s.cni.cncf.io/devinfo/dp/nvidia.com-bf2_sf-mlx5_core.sf.4-device.json")
    }

    @Test func cniFileNameIsMultusUniqueFileName() throws {
        #expect(try DeviceInfoPaths.cniFileName(networkName: "default/sriov-a", containerID: Self.containerID, ifName: "net1")
            == "default-sriov-a-\(Self.containerID)_net1")
        let paths = DeviceInfoPaths(baseDirectory: "/tmp/devinfo//")
        #expect(paths.baseDirectory == "/tmp/devinfo")
        #expect(paths.cniDirectory == "/tmp/devinfo/cni")
        #expect(try paths.cniFilePath(networkName: "macvlan-conf", containerID: "c1", ifName: "eth0")
            == "/tmp/devinfo/cni/macvlan-conf-c1_eth0")
        #expect(DeviceInfoPaths(baseDirectory: "/").cniDirectory == "/cni")
    }

    /// `/` and `..` cannot escape the directory: every name is one component and never `.` or `..`.
    @Test(arguments: [("../..", "..", "/"), ("..", "..", ".."), ("/etc/passwd", "x", "a/../b")])
    func traversalIsNeutralised(network: String, container: String, ifName: String) throws {
        let name = try DeviceInfoPaths.cniFileName(networkName: network, containerID: container, ifName: ifName)
        #expect(!name.contains("/"))
        #expect(name != "." && name != "..")
        let path = try DeviceInfoPaths(baseDirectory: "/b").cniFilePath(networkName: network, containerID: container,
                                                                          ifName: ifName)
        #expect(path == "/b/cni/" + name)
        let dp = try DeviceInfoPaths.dpFileName(resourceName: network, deviceID: ifName)
        #expect(!dp.contains("/") && dp.hasSuffix("-device.json"))
    }

    static let rejected: [(String, String, String)] = [
        ("", "c", "net1"),
        ("n", "", "net1"),
        ("n", "c", ""),
        ("ns/na\u{0}d", "c", "net1"),
        ("n", "c\n", "net1"),
        ("n", "c", "net\u{7F}"),
    ]

    @Test(arguments: rejected)
    func unsafeNamesAreRejected(network: String, container: String, ifName: String) {
        let e = infoError { () throws(DeviceInfoError) in
            try DeviceInfoPaths.cniFileName(networkName: network, containerID: container, ifName: ifName)
        }
        #expect(e?.kind == .invalidName)
        #expect(e.map { !$0.description.utf8.contains(0) } == true)
    }

    @Test func dpNamesAndBaseAreChecked() {
        #expect(infoError { () throws(DeviceInfoError) in try DeviceInfoPaths.dpFileName(resourceName: "", deviceID: "d") }?.kind
            == .invalidName)
        #expect(infoError { () throws(DeviceInfoError) in try DeviceInfoPaths.dpFileName(resourceName: "r", deviceID: "d\u{0}") }?.kind
            == .invalidName)
        let long = String(repeating: "x", count: 250)
        let e = infoError { () throws(DeviceInfoError) in try DeviceInfoPaths.dpFileName(resourceName: "r", deviceID: long) }
        #expect(e?.description.contains("longer than 255") == true)
        #expect(infoError { () throws(DeviceInfoError) in
            try DeviceInfoPaths(baseDirectory: "/b\u{0}x").dpFilePath(resourceName: "r", deviceID: "d")
        }?.kind == .invalidName)
        #expect(infoError { () throws(DeviceInfoError) in
            try DeviceInfoPaths(baseDirectory: "").cniFilePath(networkName: "n", containerID: "c", ifName: "i")
        }?.kind == .invalidName)
    }

    @Test func readingDPFiles() throws {
        let base = makeTempDir()
        defer { removeTree(base) }
        let paths = DeviceInfoPaths(baseDirectory: base)
        mkdir(paths.dpDirectory, 0o700)
        let resource = "intel.com/intel_sriov_netdevice"

        // Missing: nil (the ADD goes on without device-info).
        #expect(try paths.readDPFile(resourceName: resource, deviceID: "0000:03:02.0") == nil)

        let text = #"{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:02.0"}}"#
        let file = try paths.dpFilePath(resourceName: resource, deviceID: "0000:03:02.0")
        writeFile(file, Array(text.utf8))
        let doc = try #require(try paths.readDPFile(resourceName: resource, deviceID: "0000:03:02.0"))
        #expect(doc.pciAddress == "0000:03:02.0")
        #expect(doc.serializedBytes() == Array(text.utf8))

        // Garbage: a typed error naming the file.
        let bad = try paths.dpFilePath(resourceName: resource, deviceID: "0000:03:02.3")
        writeFile(bad, Array("{not json".utf8))
        let e = infoError { () throws(DeviceInfoError) in try paths.readDPFile(resourceName: resource, deviceID: "0000:03:02.3") }
        #expect(e?.kind == .invalidJSON)
        #expect(e?.description.contains(bad) == true)

        // A symlink (to a real file) is refused, never followed; so is a FIFO, without blocking.
        let link = try paths.dpFilePath(resourceName: resource, deviceID: "link")
        symlink(file, link)
        #expect(infoError { () throws(DeviceInfoError) in try paths.readDPFile(resourceName: resource, deviceID: "link") }?.kind
            == .unreadable)
        let fifo = try paths.dpFilePath(resourceName: resource, deviceID: "fifo")
        mkfifo(fifo, 0o600)
        #expect(infoError { () throws(DeviceInfoError) in try paths.readDPFile(resourceName: resource, deviceID: "fifo") }?.kind
            == .unreadable)
    }
}
