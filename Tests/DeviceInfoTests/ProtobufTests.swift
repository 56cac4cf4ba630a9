import Testing
@testable import DeviceInfo

private func protobufError<T>(_ body: () throws(ProtobufError) -> T) -> ProtobufError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

private func frameError(_ body: () throws(GRPCFrameError) -> [UInt8]) -> GRPCFrameError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error
    }
}

@Suite struct VarintTests {
    static let table: [(UInt64, String)] = [
        (0, "00"), (1, "01"), (127, "7f"), (128, "80 01"), (300, "ac 02"),
        (UInt64(bitPattern: -1), "ff ff ff ff ff ff ff ff ff 01"),
        (UInt64.max >> 1, "ff ff ff ff ff ff ff ff 7f"),
    ]

    @Test(arguments: table)
    func roundTrip(value: UInt64, bytes: String) throws {
        var w = ProtobufWriter()
        w.writeVarint(value)
        #expect(hexString(w.bytes) == bytes)
        var r = try ProtobufReader(hex(bytes))
        #expect(try r.readVarint() == value)
        #expect(r.isAtEnd)
    }

    @Test func negativeInt64IsTenBytes() throws {
        var w = ProtobufWriter()
        w.writeInt64(1, -1)
        #expect(hexString(w.bytes) == "08 ff ff ff ff ff ff ff ff ff 01")
        var r = try ProtobufReader(w.bytes)
        let f = try #require(try r.nextField())
        #expect(try r.readInt64(f) == -1)
    }

    @Test(arguments: [
        "80",                                  // continuation, then nothing
        "ff ff",                               // still continuing at the end
        "ff ff ff ff ff ff ff ff ff",          // 9 bytes, all continuing
    ])
    func truncatedVarint(bytes: String) throws {
        var r = try ProtobufReader(hex(bytes))
        let e = protobufError { () throws(ProtobufError) in try r.readVarint() }
        #expect(e?.kind == .truncated)
        #expect(e?.offset == 0)
    }

    @Test(arguments: [
        "ff ff ff ff ff ff ff ff ff 02",       // 10th byte carries more than bit 63
        "ff ff ff ff ff ff ff ff ff 81 00",    // 11 bytes
        "80 80 80 80 80 80 80 80 80 80 80 00", // 12 bytes of padding
    ])
    func overlongVarint(bytes: String) throws {
        var r = try ProtobufReader(hex(bytes))
        #expect(protobufError { () throws(ProtobufError) in try r.readVarint() }?.kind == .malformedVarint)
    }
}

@Suite struct PodResourcesCodecTests {
    @Test func getRequestGoldenBytes() {
        let message = GetPodResourcesRequest(podName: "sriov-pod", podNamespace: "default").encoded()
        #expect(message.count == 20)
        #expect(GRPCFraming.frame(message) == Golden.getRequestFrame)
        #expect(Golden.getRequestFrame.count == 25)
    }

    @Test func emptyFieldsAreOmitted() {
        #expect(GetPodResourcesRequest(podName: "", podNamespace: "").encoded() == [])
        #expect(GetPodResourcesRequest(podName: "", podNamespace: "ns").encoded() == hex("12 02 6e 73"))
    }

    @Test func listRequestIsTheEmptyFrame() {
        #expect(GRPCFraming.frame(ListPodResourcesRequest().encoded()) == hex("00 00 00 00 00"))
    }

    @Test func listResponseGoldenBytesDecode() throws {
        let frame = Golden.listResponseFrame
        #expect(frame.count == 135)
        #expect(Array(frame.prefix(7)) == hex("00 00 00 00 82 0a 69"))
        let message = try GRPCFraming.unframe(frame)
        let list = try ListPodResourcesResponse.decode(message)
        #expect(list.podResources == [Golden.sriovPod, Golden.plainPod])
        #expect(list.pods(namespace: "default", name: "sriov-pod") == [Golden.sriovPod])
        #expect(list.pods(namespace: "other", name: "sriov-pod").isEmpty)
    }

    @Test func encoderReproducesTheGoldenResponse() {
        let list = ListPodResourcesResponse(podResources: [Golden.sriovPod, Golden.plainPod])
        #expect(GRPCFraming.frame(list.encoded()) == Golden.listResponseFrame)
    }

    @Test func numaNodeOneAndMissingTopology() throws {
        let withNode1 = lenField(0x0a, "r") + lenField(0x12, "d") + hex("1a 04 0a 02 08 01")
        let noTopology = lenField(0x0a, "r") + lenField(0x12, "e")
        let container = lenField(0x0a, "c") + [0x12, UInt8(withNode1.count)] + withNode1
            + [0x12, UInt8(noTopology.count)] + noTopology
        let pod = lenField(0x0a, "p") + lenField(0x12, "n") + [0x1a, UInt8(container.count)] + container
        let got = try GetPodResourcesResponse.decode([0x0a, UInt8(pod.count)] + pod)
        let devices = try #require(got.podResources?.containers.first?.devices)
        #expect(devices == [
            ContainerDevices(resourceName: "r", deviceIDs: ["d"], numaNodes: [1]),
            ContainerDevices(resourceName: "r", deviceIDs: ["e"], numaNodes: nil),
        ])
        #expect(ContainerDevices(resourceName: "r", deviceIDs: ["d"], numaNodes: [1]).encoded() == withNode1)
    }

    @Test func getResponseEmptyMeansAbsent() throws {
        #expect(try GetPodResourcesResponse.decode([]).podResources == nil)
        #expect(try GetPodResourcesResponse.decode(hex("0a 00")).podResources == PodResources(name: "", namespace: ""))
    }

    @Test func repeatedSingularMessageMerges() throws {
        let a = lenField(0x0a, "p") + hex("1a 03 0a 01 61")     // name "p", container "a"
        let b = lenField(0x12, "ns") + hex("1a 03 0a 01 62")    // namespace "ns", container "b"
        let bytes = [0x0a, UInt8(a.count)] + a + [0x0a, UInt8(b.count)] + b
        let pod = try #require(try GetPodResourcesResponse.decode(bytes).podResources)
        #expect(pod.name == "p")
        #expect(pod.namespace == "ns")
        #expect(pod.containers.map(\.name) == ["a", "b"])
    }

    /// Fields of every wire type this decoder does not know, at every level, are skipped.
    @Test func unknownFieldsOfEveryWireTypeAreSkipped() throws {
        let unknown: [UInt8] = hex("""
            f8 07 96 01
            f9 07 01 02 03 04 05 06 07 08
            fa 07 03 61 62 63
            fd 07 01 02 03 04
            """)  // fields 127: varint 150, fixed64, LEN "abc", fixed32
        let devices = lenField(0x0a, "r") + unknown + lenField(0x12, "d1") + hex("1a 06 0a 04 08 02 10 05") + unknown
        let container = unknown + lenField(0x0a, "c")
            + [0x12] + varint(devices.count) + devices
            + hex("1a 03 01 02 03")            // cpu_ids, packed
            + hex("18 07 18 08")               // cpu_ids, unpacked
            + hex("22 04 0a 02 68 70")         // memory
            + hex("2a 04 12 02 63 6c")         // dynamic_resources
        let pod = lenField(0x0a, "p") + lenField(0x12, "n") + [0x1a] + varint(container.count) + container
            + hex("22 02 01 02") + hex("2a 00") + unknown
        #expect(pod.count > 127)  // two-byte lengths
        let list = try ListPodResourcesResponse.decode(unknown + [0x0a] + varint(pod.count) + pod + unknown)
        #expect(list.podResources == [PodResources(name: "p", namespace: "n", containers: [
            ContainerResources(name: "c", devices: [ContainerDevices(resourceName: "r", deviceIDs: ["d1"], numaNodes: [2])]),
        ])])
    }

    static let malformed: [(String, [UInt8], ProtobufError.Kind)] = [
        ("truncated key varint", hex("80"), .truncated),
        ("truncated length varint", hex("0a 80"), .truncated),
        ("length past end", hex("0a 05 01 02"), .lengthOutOfBounds(declared: 5, available: 2)),
        ("huge length", hex("0a ff ff ff ff ff ff ff ff 7f"), .lengthOutOfBounds(declared: UInt64.max >> 1, available: 0)),
        ("length one past the nested end",
         hex("0a 04 0a 03 61 62"), .lengthOutOfBounds(declared: 3, available: 2)),
        ("wire type 3 (start group)", hex("0b"), .invalidWireType(3)),
        ("wire type 4 (end group)", hex("0c"), .invalidWireType(4)),
        ("wire type 6", hex("0e"), .invalidWireType(6)),
        ("wire type 7", hex("0f"), .invalidWireType(7)),
        ("field number 0", hex("02 00"), .invalidFieldNumber(0)),
        ("field number above 2^29-1", hex("82 80 80 80 10 00"), .invalidFieldNumber(1 << 29)),
        ("key above 32 bits", hex("82 80 80 80 80 01 00"), .invalidFieldNumber(1 << 32)),
        ("pod_resources as varint", hex("08 01"), .wrongWireType(field: 1, expected: .lengthDelimited, actual: .varint)),
        ("name as fixed32", hex("0a 05 0d 01 02 03 04"),
         .wrongWireType(field: 1, expected: .lengthDelimited, actual: .fixed32)),
        ("invalid UTF-8 name", hex("0a 03 0a 01 ff"), .invalidUTF8(field: 1)),
        ("truncated unknown fixed64", hex("11 01 02 03"), .truncated),
        ("truncated unknown fixed32", hex("15 01 02"), .truncated),
        ("overlong unknown varint", hex("10 ff ff ff ff ff ff ff ff ff 7f"), .malformedVarint),
        ("truncated unknown LEN", hex("0a 02 2a 05 00"), .lengthOutOfBounds(declared: 5, available: 0)),
        ("NUMA ID as LEN", hex("0a 0b 1a 09 12 07 1a 05 0a 03 0a 01 00"),
         .wrongWireType(field: 1, expected: .varint, actual: .lengthDelimited)),
    ]

    @Test(arguments: malformed)
    func malformedListResponse(name: String, bytes: [UInt8], kind: ProtobufError.Kind) {
        let e = protobufError { () throws(ProtobufError) in try ListPodResourcesResponse.decode(bytes) }
        #expect(e?.kind == kind, "\(name)")
        #expect(e?.description.hasPrefix("invalid protobuf") == true)
    }

    @Test func sizeCap() throws {
        let e = protobufError { () throws(ProtobufError) in try ProtobufReader([UInt8](repeating: 0, count: 11), limit: 10) }
        #expect(e?.kind == .tooLarge(11, limit: 10))
        let big = [UInt8](repeating: 0, count: Protobuf.maxMessageBytes + 1)
        #expect(protobufError { () throws(ProtobufError) in try ListPodResourcesResponse.decode(big) }?.kind
            == .tooLarge(Protobuf.maxMessageBytes + 1, limit: Protobuf.maxMessageBytes))
    }

    /// A generic walker that descends into every LEN field as a message stops at `Protobuf.maxDepth`.
    @Test func deepNestingIsCapped() throws {
        var bytes: [UInt8] = []
        for _ in 0..<100 {
            var w = ProtobufWriter()
            w.writeMessage(1, bytes)
            bytes = w.bytes
        }
        func walk(_ r: inout ProtobufReader) throws(ProtobufError) -> Int {
            var deepest = r.depth
            while let f = try r.nextField() {
                var sub = try r.readMessage(f)
                deepest = max(deepest, try walk(&sub))
            }
            return deepest
        }
        var r = try ProtobufReader(bytes)
        let e = protobufError { () throws(ProtobufError) in try walk(&r) }
        #expect(e?.kind == .tooDeep(Protobuf.maxDepth))

        // The PodResources decoders never descend into unknown fields: deep garbage there is skipped.
        let pod = lenField(0x0a, "p") + [0xfa, 0x07] + varint(bytes.count) + bytes
        let list = try ListPodResourcesResponse.decode([0x0a] + varint(pod.count) + pod)
        #expect(list.podResources.map(\.name) == ["p"])
    }

    /// Every prefix and many single-byte corruptions of the golden response decode or throw; none traps or hangs.
    @Test func truncationsAndCorruptionsNeverTrap() throws {
        let message = try GRPCFraming.unframe(Golden.listResponseFrame)
        var failures = 0
        for n in 0..<message.count {
            do { _ = try ListPodResourcesResponse.decode(Array(message.prefix(n))) } catch { failures += 1 }
        }
        #expect(failures > 0)
        var state: UInt64 = 7
        for _ in 0..<5000 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            var corrupted = message
            let i = Int((state >> 33) % UInt64(corrupted.count))
            corrupted[i] = UInt8(truncatingIfNeeded: state >> 17)
            _ = try? ListPodResourcesResponse.decode(corrupted)
            _ = try? GetPodResourcesResponse.decode(corrupted)
        }
    }
}

private func varint(_ n: Int) -> [UInt8] {
    var w = ProtobufWriter()
    w.writeVarint(UInt64(n))
    return w.bytes
}

@Suite struct FramingTests {
    @Test func roundTrip() throws {
        let m: [UInt8] = Array(0..<200).map { UInt8($0) }
        let f = GRPCFraming.frame(m)
        #expect(Array(f.prefix(5)) == [0, 0, 0, 0, 200])
        #expect(try GRPCFraming.unframe(f) == m)
        #expect(try GRPCFraming.unframe(hex("00 00 00 00 00")) == [])
        #expect(Array(GRPCFraming.frame([UInt8](repeating: 1, count: 70_000)).prefix(5)) == hex("00 00 01 11 70"))
    }

    static let bad: [(String, [UInt8], GRPCFrameError.Kind)] = [
        ("empty body", [], .truncatedPrefix(0)),
        ("short prefix", hex("00 00 00"), .truncatedPrefix(3)),
        ("compressed", hex("01 00 00 00 01 00"), .compressed(1)),
        ("bad flag", hex("02 00 00 00 00"), .compressed(2)),
        ("length short", hex("00 00 00 00 02 0a"), .lengthMismatch(declared: 2, actual: 1)),
        ("length long", hex("00 00 00 00 01 0a 00"), .lengthMismatch(declared: 1, actual: 2)),
        ("two messages", hex("00 00 00 00 00 00 00 00 00 00"), .lengthMismatch(declared: 0, actual: 5)),
        ("too large", hex("00 ff ff ff ff"), .tooLarge(UInt32.max, limit: Protobuf.maxMessageBytes)),
    ]

    @Test(arguments: bad)
    func rejects(name: String, body: [UInt8], kind: GRPCFrameError.Kind) {
        #expect(frameError { () throws(GRPCFrameError) in try GRPCFraming.unframe(body) }?.kind == kind, "\(name)")
    }
}
