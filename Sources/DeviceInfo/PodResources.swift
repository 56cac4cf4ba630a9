/// The kubelet PodResources v1 messages a CNI plugin needs (device-plugins.md §1.3), and gRPC message framing
/// (§2.2). Only device-plugin devices are decoded; CPUs, memory, DRA resources and any field a newer kubelet adds
/// are skipped by wire type, so one decoder works against every kubelet version (§1.2).

/// The gRPC method paths of `v1.PodResourcesLister`.
public enum PodResourcesMethod {
    public static let get = "/v1.PodResourcesLister/Get"
    public static let list = "/v1.PodResourcesLister/List"
}

/// `GetPodResourcesRequest{pod_name = 1, pod_namespace = 2}`.
public struct GetPodResourcesRequest: Sendable, Equatable {
    public var podName: String
    public var podNamespace: String

    public init(podName: String, podNamespace: String) {
        self.podName = podName
        self.podNamespace = podNamespace
    }

    /// The protobuf encoding (unframed). Empty strings are omitted (proto3 defaults).
    public func encoded() -> [UInt8] {
        var w = ProtobufWriter()
        w.writeString(1, podName)
        w.writeString(2, podNamespace)
        return w.bytes
    }
}

/// `ListPodResourcesRequest{}`: no fields, encoded as zero bytes.
public struct ListPodResourcesRequest: Sendable, Equatable {
    public init() {}
    public func encoded() -> [UInt8] { [] }
}

/// `ContainerDevices{resource_name = 1, device_ids = 2 (repeated), topology = 3}`.
public struct ContainerDevices: Sendable, Equatable {
    public var resourceName: String
    public var deviceIDs: [String]
    /// NUMA node IDs of `topology.nodes` (a node without `ID` is node 0), or nil when no topology was sent.
    public var numaNodes: [Int64]?

    public init(resourceName: String, deviceIDs: [String], numaNodes: [Int64]? = nil) {
        self.resourceName = resourceName
        self.deviceIDs = deviceIDs
        self.numaNodes = numaNodes
    }
}

/// `ContainerResources{name = 1, devices = 2 (repeated), ...}`; `cpu_ids` (3), `memory` (4) and
/// `dynamic_resources` (5) are skipped.
public struct ContainerResources: Sendable, Equatable {
    public var name: String
    public var devices: [ContainerDevices]

    public init(name: String, devices: [ContainerDevices] = []) {
        self.name = name
        self.devices = devices
    }
}

/// `PodResources{name = 1, namespace = 2, containers = 3 (repeated), ...}`; pod-level `cpu_ids` (4) and `memory`
/// (5) are skipped.
public struct PodResources: Sendable, Equatable {
    public var name: String
    public var namespace: String
    public var containers: [ContainerResources]

    public init(name: String, namespace: String, containers: [ContainerResources] = []) {
        self.name = name
        self.namespace = namespace
        self.containers = containers
    }
}

/// `GetPodResourcesResponse{pod_resources = 1}`.
public struct GetPodResourcesResponse: Sendable, Equatable {
    /// nil when the field was absent (an empty message).
    public var podResources: PodResources?

    public init(podResources: PodResources?) { self.podResources = podResources }

    public static func decode(_ bytes: [UInt8]) throws(ProtobufError) -> GetPodResourcesResponse {
        var r = try ProtobufReader(bytes, messageName: "GetPodResourcesResponse")
        var pod: PodResources?
        while let f = try r.nextField() {
            if f.number == 1 {
                var sub = try r.readMessage(f, messageName: "PodResources")
                // A singular message field that repeats is merged into the first (protobuf rule).
                var merged = pod ?? PodResources(name: "", namespace: "")
                try PodResources.merge(&merged, from: &sub)
                pod = merged
            } else {
                try r.skip(f)
            }
        }
        return GetPodResourcesResponse(podResources: pod)
    }
}

/// `ListPodResourcesResponse{pod_resources = 1 (repeated)}`.
public struct ListPodResourcesResponse: Sendable, Equatable {
    public var podResources: [PodResources]

    public init(podResources: [PodResources]) { self.podResources = podResources }

    public static func decode(_ bytes: [UInt8]) throws(ProtobufError) -> ListPodResourcesResponse {
        var r = try ProtobufReader(bytes, messageName: "ListPodResourcesResponse")
        var pods: [PodResources] = []
        while let f = try r.nextField() {
            if f.number == 1 {
                var sub = try r.readMessage(f, messageName: "PodResources")
                var pod = PodResources(name: "", namespace: "")
                try PodResources.merge(&pod, from: &sub)
                pods.append(pod)
            } else {
                try r.skip(f)
            }
        }
        return ListPodResourcesResponse(podResources: pods)
    }

    /// The entries for one pod (normally one; an old and a new incarnation of the same name can both be listed,
    /// and the API has no UID to tell them apart, §1.4).
    public func pods(namespace: String, name: String) -> [PodResources] {
        podResources.filter { $0.namespace == namespace && $0.name == name }
    }
}

extension PodResources {
    static func merge(_ pod: inout PodResources, from r: inout ProtobufReader) throws(ProtobufError) {
        while let f = try r.nextField() {
            switch f.number {
            case 1: pod.name = try r.readString(f)
            case 2: pod.namespace = try r.readString(f)
            case 3:
                var sub = try r.readMessage(f, messageName: "ContainerResources")
                pod.containers.append(try ContainerResources.decode(&sub))
            default: try r.skip(f)
            }
        }
    }

    /// The protobuf encoding (used by tests and fakes; the plugin only decodes).
    public func encoded() -> [UInt8] {
        var w = ProtobufWriter()
        w.writeString(1, name)
        w.writeString(2, namespace)
        for c in containers { w.writeMessage(3, c.encoded()) }
        return w.bytes
    }
}

extension ContainerResources {
    static func decode(_ r: inout ProtobufReader) throws(ProtobufError) -> ContainerResources {
        var c = ContainerResources(name: "")
        while let f = try r.nextField() {
            switch f.number {
            case 1: c.name = try r.readString(f)
            case 2:
                var sub = try r.readMessage(f, messageName: "ContainerDevices")
                c.devices.append(try ContainerDevices.decode(&sub))
            default: try r.skip(f)
            }
        }
        return c
    }

    public func encoded() -> [UInt8] {
        var w = ProtobufWriter()
        w.writeString(1, name)
        for d in devices { w.writeMessage(2, d.encoded()) }
        return w.bytes
    }
}

extension ContainerDevices {
    static func decode(_ r: inout ProtobufReader) throws(ProtobufError) -> ContainerDevices {
        var d = ContainerDevices(resourceName: "", deviceIDs: [])
        while let f = try r.nextField() {
            switch f.number {
            case 1: d.resourceName = try r.readString(f)
            case 2: d.deviceIDs.append(try r.readString(f))
            case 3:
                // TopologyInfo{nodes = 1 (repeated NUMANode{ID = 1})}; repeated occurrences merge.
                var topo = try r.readMessage(f, messageName: "TopologyInfo")
                var nodes = d.numaNodes ?? []
                while let tf = try topo.nextField() {
                    if tf.number == 1 {
                        var node = try topo.readMessage(tf, messageName: "NUMANode")
                        var id: Int64 = 0
                        while let nf = try node.nextField() {
                            if nf.number == 1 { id = try node.readInt64(nf) } else { try node.skip(nf) }
                        }
                        nodes.append(id)
                    } else {
                        try topo.skip(tf)
                    }
                }
                d.numaNodes = nodes
            default: try r.skip(f)
            }
        }
        return d
    }

    public func encoded() -> [UInt8] {
        var w = ProtobufWriter()
        w.writeString(1, resourceName)
        for id in deviceIDs { w.writeRepeatedString(2, id) }
        if let numaNodes {
            var topo = ProtobufWriter()
            for n in numaNodes {
                var node = ProtobufWriter()
                node.writeInt64(1, n)
                topo.writeMessage(1, node.bytes)
            }
            w.writeMessage(3, topo.bytes)
        }
        return w.bytes
    }
}

extension ListPodResourcesResponse {
    public func encoded() -> [UInt8] {
        var w = ProtobufWriter()
        for p in podResources { w.writeMessage(1, p.encoded()) }
        return w.bytes
    }
}

extension GetPodResourcesResponse {
    public func encoded() -> [UInt8] {
        var w = ProtobufWriter()
        if let podResources { w.writeMessage(1, podResources.encoded()) }
        return w.bytes
    }
}

// MARK: - gRPC length-prefixed messages

/// Why a gRPC body is not exactly one uncompressed length-prefixed message.
public struct GRPCFrameError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Fewer than the 5 prefix bytes.
        case truncatedPrefix(Int)
        /// The compressed flag is set (no `grpc-encoding` is ever negotiated) or is not 0/1.
        case compressed(UInt8)
        /// The prefix' length and the bytes that follow disagree.
        case lengthMismatch(declared: UInt32, actual: Int)
        /// The declared length exceeds the accepted maximum.
        case tooLarge(UInt32, limit: Int)
    }

    public var kind: Kind
    public init(_ kind: Kind) { self.kind = kind }

    public var description: String {
        switch kind {
        case .truncatedPrefix(let n): return "gRPC body of \(n) bytes is shorter than the 5-byte message prefix"
        case .compressed(let flag): return "gRPC message is compressed (flag \(flag)), which was not negotiated"
        case .lengthMismatch(let declared, let actual):
            return "gRPC message prefix declares \(declared) bytes but \(actual) follow"
        case .tooLarge(let n, let limit): return "gRPC message of \(n) bytes exceeds the limit of \(limit)"
        }
    }
}

/// The 5-byte gRPC message prefix: compressed flag, then the big-endian message length (§2.2).
public enum GRPCFraming {
    public static func frame(_ message: [UInt8]) -> [UInt8] {
        let n = UInt32(truncatingIfNeeded: message.count)
        var out: [UInt8] = [0, UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)]
        out.append(contentsOf: message)
        return out
    }

    /// The message of a body holding exactly one uncompressed length-prefixed message.
    public static func unframe(_ body: [UInt8], limit: Int = Protobuf.maxMessageBytes) throws(GRPCFrameError) -> [UInt8] {
        guard body.count >= 5 else { throw GRPCFrameError(.truncatedPrefix(body.count)) }
        if body[0] != 0 { throw GRPCFrameError(.compressed(body[0])) }
        let n = UInt32(body[1]) << 24 | UInt32(body[2]) << 16 | UInt32(body[3]) << 8 | UInt32(body[4])
        if UInt64(n) > UInt64(max(0, limit)) { throw GRPCFrameError(.tooLarge(n, limit: limit)) }
        guard Int(n) == body.count - 5 else { throw GRPCFrameError(.lengthMismatch(declared: n, actual: body.count - 5)) }
        return Array(body[5...])
    }
}
