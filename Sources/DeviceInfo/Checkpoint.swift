import CNISpec
import SystemKit

/// The kubelet device manager's checkpoint, `/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint`
/// (device-plugins.md §3): the fallback source of allocations when the PodResources socket is absent. It links
/// devices to pod UIDs (the PodResources API has no UID).
///
/// Read tolerantly: unknown keys anywhere are ignored, `Checksum` is ignored (it cannot reasonably be recomputed),
/// `null` stands for an empty list or map (Go writes nil slices and maps that way), a missing string is empty (Go's
/// zero value). `DeviceIDs` is accepted in both shapes: kubelet ≥ 1.20's map of NUMA node (a decimal int64 string,
/// `"-1"` = no topology) to IDs, and kubelet ≤ 1.19's plain list. Anything else (not JSON, wrong types, a non-integer
/// NUMA key) is a `CheckpointError`.
public struct DeviceCheckpoint: Sendable, Equatable {
    /// The default location.
    public static let defaultPath = "/var/lib/kubelet/device-plugins/kubelet_internal_checkpoint"
    /// Largest file read.
    public static let maxFileBytes = 16 << 20

    /// One `Data.PodDeviceEntries[]` element.
    public struct Entry: Sendable, Equatable {
        public var podUID: String
        public var containerName: String
        public var resourceName: String
        /// The IDs in file order, NUMA groups concatenated in the order the file lists them.
        public var deviceIDs: [String]

        public init(podUID: String, containerName: String, resourceName: String, deviceIDs: [String]) {
            self.podUID = podUID
            self.containerName = containerName
            self.resourceName = resourceName
            self.deviceIDs = deviceIDs
        }
    }

    public var entries: [Entry]
    /// `Data.RegisteredDevices`: every ID known per resource when the file was written.
    public var registeredDevices: [String: [String]]

    public init(entries: [Entry], registeredDevices: [String: [String]] = [:]) {
        self.entries = entries
        self.registeredDevices = registeredDevices
    }

    /// The entries of one pod.
    public func entries(forPodUID uid: String) -> [Entry] { entries.filter { $0.podUID == uid } }

    /// What was allocated to the pod with this UID, over all its containers (init containers included), sorted
    /// and deduplicated per resource (see `PodDevices`). An empty UID matches nothing.
    public func devices(forPodUID uid: String) -> PodDevices {
        guard !uid.isEmpty else { return PodDevices() }
        return PodDevices(checkpointEntries: entries(forPodUID: uid))
    }

    /// Every pod's allocations, keyed by pod UID (entries without a UID are left out).
    public var devicesByPodUID: [String: PodDevices] {
        var grouped: [String: [Entry]] = [:]
        for e in entries where !e.podUID.isEmpty { grouped[e.podUID, default: []].append(e) }
        return grouped.mapValues { PodDevices(checkpointEntries: $0) }
    }

    public static func parse(_ bytes: [UInt8]) throws(CheckpointError) -> DeviceCheckpoint {
        let json: JSON
        do {
            json = try JSON.parse(bytes)
        } catch {
            throw CheckpointError(.invalidJSON, error.description)
        }
        guard let root = json.objectValue else { throw CheckpointError(.invalidShape, "top level is \(json.typeName), not an object") }
        guard let dataValue = root["Data"], !dataValue.isNull else { throw CheckpointError(.invalidShape, "no Data object") }
        guard let data = dataValue.objectValue else { throw CheckpointError(.invalidShape, "Data is \(dataValue.typeName), not an object") }

        var entries: [Entry] = []
        if let list = data["PodDeviceEntries"], !list.isNull {
            guard let items = list.arrayValue else {
                throw CheckpointError(.invalidShape, "Data.PodDeviceEntries is \(list.typeName), not an array")
            }
            for (i, item) in items.enumerated() {
                entries.append(try parseEntry(item, at: "Data.PodDeviceEntries[\(i)]"))
            }
        }

        var registered: [String: [String]] = [:]
        if let reg = data["RegisteredDevices"], !reg.isNull {
            guard let obj = reg.objectValue else {
                throw CheckpointError(.invalidShape, "Data.RegisteredDevices is \(reg.typeName), not an object")
            }
            for m in obj.members {
                registered[m.key] = try stringList(m.value, at: "Data.RegisteredDevices[\(quoted(m.key))]")
            }
        }
        return DeviceCheckpoint(entries: entries, registeredDevices: registered)
    }

    /// Reads and parses the checkpoint. A missing file is `CheckpointError.Kind.notFound`. The file is the kubelet's:
    /// a symlink is followed, but anything other than a regular file is refused without blocking.
    public static func read(path: String = defaultPath) throws(CheckpointError) -> DeviceCheckpoint {
        let bytes: [UInt8]
        do {
            bytes = try FileSystem.read(path, limit: maxFileBytes)
        } catch {
            throw CheckpointError(error.isNotFound ? .notFound : .unreadable, error.description)
        }
        do {
            return try parse(bytes)
        } catch {
            var e = error
            e.detail = "\(path): \(e.detail)"
            throw e
        }
    }

    static func parseEntry(_ value: JSON, at path: String) throws(CheckpointError) -> Entry {
        guard let obj = value.objectValue else { throw CheckpointError(.invalidShape, "\(path) is \(value.typeName), not an object") }
        func string(_ key: String) throws(CheckpointError) -> String {
            guard let v = obj[key], !v.isNull else { return "" }
            guard let s = v.stringValue else { throw CheckpointError(.invalidShape, "\(path).\(key) is \(v.typeName), not a string") }
            return s
        }
        let uid = try string("PodUID")
        let container = try string("ContainerName")
        let resource = try string("ResourceName")
        var ids: [String] = []
        if let d = obj["DeviceIDs"], !d.isNull {
            switch d {
            case .array:
                ids = try stringList(d, at: "\(path).DeviceIDs")  // kubelet <= 1.19
            case .object(let perNUMA):
                for m in perNUMA.members {
                    guard isDecimalInt64(m.key) else {
                        throw CheckpointError(.invalidShape, "\(path).DeviceIDs key \(quoted(m.key)) is not a NUMA node number")
                    }
                    ids += try stringList(m.value, at: "\(path).DeviceIDs[\(quoted(m.key))]")
                }
            default:
                throw CheckpointError(.invalidShape, "\(path).DeviceIDs is \(d.typeName), not an object or array")
            }
        }
        return Entry(podUID: uid, containerName: container, resourceName: resource, deviceIDs: ids)
    }

    static func stringList(_ value: JSON, at path: String) throws(CheckpointError) -> [String] {
        if value.isNull { return [] }
        guard let items = value.arrayValue else { throw CheckpointError(.invalidShape, "\(path) is \(value.typeName), not an array") }
        var out: [String] = []
        out.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            guard let s = item.stringValue else { throw CheckpointError(.invalidShape, "\(path)[\(i)] is \(item.typeName), not a string") }
            out.append(s)
        }
        return out
    }

    static func isDecimalInt64(_ s: String) -> Bool { Int64(s) != nil }

    static func quoted(_ s: String) -> String { JSON.string(s).serialized() }
}

/// Why the checkpoint could not be used.
public struct CheckpointError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case notFound
        case unreadable
        case invalidJSON
        case invalidShape
    }

    public var kind: Kind
    public var detail: String

    public init(_ kind: Kind, _ detail: String) {
        self.kind = kind
        self.detail = detail
    }

    public var description: String {
        switch kind {
        case .notFound, .unreadable: return "kubelet device checkpoint: \(detail)"
        case .invalidJSON, .invalidShape: return "kubelet device checkpoint is malformed: \(detail)"
        }
    }
}
