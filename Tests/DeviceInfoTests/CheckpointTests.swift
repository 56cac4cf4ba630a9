import Testing
@testable import DeviceInfo

private func checkpointError(_ text: String) -> CheckpointError? {
    do {
        _ = try DeviceCheckpoint.parse(Array(text.utf8))
        return nil
    } catch {
        return error
    }
}

@Suite struct CheckpointTests {
    /// §3.2's realistic example (kubelet >= 1.20, map of NUMA node to IDs).
    static let mapShape = #"""
    {
      "Data": {
        "PodDeviceEntries": [
          {
            "PodUID": "6f1c2a9e-3d4b-4c5e-9f00-1a2b3c4d5e6f",
            "ContainerName": "app",
            "ResourceName": "intel.com/intel_sriov_netdevice",
            "DeviceIDs": { "0": ["0000:03:02.3", "0000:03:02.0"] },
            "AllocResp": "CkYKKVBDSURFVklDRV9JTlRFTF9DT01fSU5URUxfU1JJT1ZfTkVUREVWSUNFEhkwMDAwOjAzOjAyLjAsMDAwMDowMzowMi4z"
          }
        ],
        "RegisteredDevices": {
          "intel.com/intel_sriov_netdevice": ["0000:03:02.0", "0000:03:02.1", "0000:03:02.2", "0000:03:02.3"]
        }
      },
      "Checksum": 1602318840
    }
    """#

    @Test func mapShapeParses() throws {
        let cp = try DeviceCheckpoint.parse(Array(Self.mapShape.utf8))
        #expect(cp.entries == [DeviceCheckpoint.Entry(
            podUID: "6f1c2a9e-3d4b-4c5e-9f00-1a2b3c4d5e6f", containerName: "app",
            resourceName: "intel.com/intel_sriov_netdevice", deviceIDs: ["0000:03:02.3", "0000:03:02.0"])])
        #expect(cp.registeredDevices["intel.com/intel_sriov_netdevice"]?.count == 4)
        let devices = cp.devices(forPodUID: "6f1c2a9e-3d4b-4c5e-9f00-1a2b3c4d5e6f")
        #expect(devices.deviceIDs(for: "intel.com/intel_sriov_netdevice") == ["0000:03:02.0", "0000:03:02.3"])
        #expect(cp.devices(forPodUID: "other").isEmpty)
        #expect(cp.devices(forPodUID: "").isEmpty)
    }

    /// Multus' unit-test fixture: the "-1" (no topology) key; several NUMA groups and containers per pod, with an
    /// init container's device repeated in the app container.
    @Test func numaGroupsAndContainersMergeAndDeduplicate() throws {
        let text = #"""
        {"Data":{"PodDeviceEntries":[
          {"PodUID":"u1","ContainerName":"init","ResourceName":"r/a","DeviceIDs":{"-1":["0000:03:02.3"]}},
          {"PodUID":"u1","ContainerName":"app","ResourceName":"r/a","DeviceIDs":{"-1":["0000:03:02.3","0000:03:02.0"]}},
          {"PodUID":"u1","ContainerName":"app","ResourceName":"r/b","DeviceIDs":{"1":["b2"],"0":["b1","b2"]}},
          {"PodUID":"u2","ContainerName":"app","ResourceName":"r/a","DeviceIDs":{"0":["0000:04:00.0"]}}
        ],"RegisteredDevices":null},"Checksum":229855270}
        """#
        let cp = try DeviceCheckpoint.parse(Array(text.utf8))
        #expect(cp.entries.count == 4)
        #expect(cp.entries[2].deviceIDs == ["b2", "b1", "b2"])  // file order, NUMA groups concatenated
        #expect(cp.registeredDevices.isEmpty)
        let d = cp.devices(forPodUID: "u1")
        #expect(d.resourceNames == ["r/a", "r/b"])
        #expect(d.deviceIDs(for: "r/a") == ["0000:03:02.0", "0000:03:02.3"])
        #expect(d.deviceIDs(for: "r/b") == ["b1", "b2"])
        #expect(cp.devices(forPodUID: "u2").deviceIDs(for: "r/a") == ["0000:04:00.0"])
        #expect(cp.devicesByPodUID == ["u1": d, "u2": PodDevices([(resourceName: "r/a", deviceIDs: ["0000:04:00.0"])])])
    }

    /// kubelet <= 1.19 wrote DeviceIDs as a plain list.
    @Test func listShapeParses() throws {
        let text = #"""
        {"Data":{"PodDeviceEntries":[{"PodUID":"u1","ContainerName":"app","ResourceName":"r",
          "DeviceIDs":["d2","d1"],"AllocResp":"AA=="}],"RegisteredDevices":{"r":["d1","d2","d3"]}},"Checksum":1}
        """#
        let cp = try DeviceCheckpoint.parse(Array(text.utf8))
        #expect(cp.entries[0].deviceIDs == ["d2", "d1"])
        #expect(cp.devices(forPodUID: "u1").deviceIDs(for: "r") == ["d1", "d2"])
        #expect(cp.registeredDevices == ["r": ["d1", "d2", "d3"]])
    }

    @Test func toleratesNullsMissingAndUnknownKeys() throws {
        let text = #"""
        {"Data":{"PodDeviceEntries":null,"Future":{"x":[1,2]}},"Checksum":"not a number","Extra":true}
        """#
        let cp = try DeviceCheckpoint.parse(Array(text.utf8))
        #expect(cp.entries.isEmpty)
        let sparse = #"{"Data":{"PodDeviceEntries":[{"PodUID":"u","DeviceIDs":null,"New":1},{"PodUID":null}]}}"#
        let cp2 = try DeviceCheckpoint.parse(Array(sparse.utf8))
        #expect(cp2.entries == [
            DeviceCheckpoint.Entry(podUID: "u", containerName: "", resourceName: "", deviceIDs: []),
            DeviceCheckpoint.Entry(podUID: "", containerName: "", resourceName: "", deviceIDs: []),
        ])
        #expect(cp2.devices(forPodUID: "u").isEmpty)  // no resource name: nothing usable
    }

    static let malformed: [(String, CheckpointError.Kind, String)] = [
        ("", .invalidJSON, "invalid JSON"),
        ("{\"Data\":", .invalidJSON, "invalid JSON"),
        ("[]", .invalidShape, "top level is array"),
        ("{}", .invalidShape, "no Data object"),
        (#"{"Data":null}"#, .invalidShape, "no Data object"),
        (#"{"Data":[]}"#, .invalidShape, "Data is array"),
        (#"{"Data":{"PodDeviceEntries":{}}}"#, .invalidShape, "Data.PodDeviceEntries is object"),
        (#"{"Data":{"PodDeviceEntries":[1]}}"#, .invalidShape, "Data.PodDeviceEntries[0] is number"),
        (#"{"Data":{"PodDeviceEntries":[{"PodUID":5}]}}"#, .invalidShape, "Data.PodDeviceEntries[0].PodUID is number"),
        (#"{"Data":{"PodDeviceEntries":[{"DeviceIDs":"d1"}]}}"#, .invalidShape, "DeviceIDs is string"),
        (#"{"Data":{"PodDeviceEntries":[{"DeviceIDs":{"numa0":["d"]}}]}}"#, .invalidShape,
         #"DeviceIDs key "numa0" is not a NUMA node number"#),
        (#"{"Data":{"PodDeviceEntries":[{"DeviceIDs":{"0":"d"}}]}}"#, .invalidShape, #"DeviceIDs["0"] is string"#),
        (#"{"Data":{"PodDeviceEntries":[{"DeviceIDs":["d",7]}]}}"#, .invalidShape, "DeviceIDs[1] is number"),
        (#"{"Data":{"RegisteredDevices":[]}}"#, .invalidShape, "Data.RegisteredDevices is array"),
        (#"{"Data":{"RegisteredDevices":{"r":[null]}}}"#, .invalidShape, #"RegisteredDevices["r"][0] is null"#),
    ]

    @Test(arguments: malformed)
    func malformedIsATypedError(text: String, kind: CheckpointError.Kind, fragment: String) {
        let e = checkpointError(text)
        #expect(e?.kind == kind, "\(text)")
        #expect(e?.description.contains(fragment) == true, "\(e?.description ?? "no error")")
        #expect(e?.description.hasPrefix("kubelet device checkpoint is malformed: ") == true)
    }

    @Test func readFromFile() throws {
        let dir = makeTempDir()
        defer { removeTree(dir) }
        let path = dir + "/kubelet_internal_checkpoint"
        do {
            _ = try DeviceCheckpoint.read(path: path)
            Issue.record("expected notFound")
        } catch {
            #expect(error.kind == .notFound)
        }
        writeFile(path, Array(Self.mapShape.utf8))
        #expect(try DeviceCheckpoint.read(path: path).entries.count == 1)
        writeFile(path, Array("{".utf8))
        do {
            _ = try DeviceCheckpoint.read(path: path)
            Issue.record("expected invalidJSON")
        } catch {
            #expect(error.kind == .invalidJSON)
            #expect(error.description.contains(path))
        }
    }
}
