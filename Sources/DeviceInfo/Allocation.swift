/// Device-plugin devices allocated to one pod, per extended resource name.
///
/// Whatever the source (PodResources `Get`/`List`, the checkpoint), the IDs of one resource are the union over
/// every container (and every NUMA group, and every listed entry of the pod), **deduplicated and sorted bytewise
/// ascending** (Go's `sort.Strings`, as Multus does since v4.3.0). The kubelet reports devices in random order and
/// may list one device twice (two NUMA nodes, or an init and an app container), so this order is the only stable
/// one: the same allocation always gives the same list (device-plugins.md §1.4, §4.1).
public struct PodDevices: Sendable, Equatable {
    private var ids: [String: [String]]

    public init() { ids = [:] }

    /// From (resource, IDs) pairs in any order, with repetitions; empty resource names and IDs are dropped.
    public init<S: Sequence>(_ pairs: S) where S.Element == (resourceName: String, deviceIDs: [String]) {
        var sets: [String: Set<String>] = [:]
        for (resource, list) in pairs where !resource.isEmpty {
            for id in list where !id.isEmpty { sets[resource, default: []].insert(id) }
        }
        ids = sets.mapValues { $0.sorted(by: PodDevices.bytewise) }
    }

    /// From the PodResources entries of the pod (normally one).
    public init(podResources: [PodResources]) {
        var pairs: [(resourceName: String, deviceIDs: [String])] = []
        for pod in podResources {
            for c in pod.containers {
                for d in c.devices { pairs.append((d.resourceName, d.deviceIDs)) }
            }
        }
        self.init(pairs)
    }

    public init(podResources: PodResources) { self.init(podResources: [podResources]) }

    /// From checkpoint entries (already filtered to one pod UID).
    public init(checkpointEntries: [DeviceCheckpoint.Entry]) {
        self.init(checkpointEntries.map { (resourceName: $0.resourceName, deviceIDs: $0.deviceIDs) })
    }

    /// The sorted, distinct IDs of a resource (empty when the pod has none).
    public func deviceIDs(for resourceName: String) -> [String] { ids[resourceName] ?? [] }

    /// Resource names with at least one device, sorted bytewise.
    public var resourceNames: [String] { ids.keys.sorted(by: PodDevices.bytewise) }

    public var isEmpty: Bool { ids.isEmpty }

    static func bytewise(_ a: String, _ b: String) -> Bool {
        a.utf8.lexicographicallyPrecedes(b.utf8)
    }
}

/// A network attachment that wants one device of a resource.
public struct DeviceRequest: Sendable, Equatable {
    /// Identifies the attachment across invocations (for example `<namespace>/<nad>` plus the interface name); unique
    /// within one request list.
    public var networkKey: String
    public var resourceName: String

    public init(networkKey: String, resourceName: String) {
        self.networkKey = networkKey
        self.resourceName = resourceName
    }
}

/// The device chosen for one network.
public struct DevicePick: Sendable, Equatable {
    public var networkKey: String
    public var resourceName: String
    public var deviceID: String
    /// Whether the pick is a recorded one that was kept.
    public var kept: Bool

    public init(networkKey: String, resourceName: String, deviceID: String, kept: Bool) {
        self.networkKey = networkKey
        self.resourceName = resourceName
        self.deviceID = deviceID
        self.kept = kept
    }
}

/// Why devices could not be assigned.
public struct DevicePickError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// More networks want the resource than the pod has devices of it.
        case exhausted(resourceName: String, available: Int, wanted: Int)
        /// Two requests share a network key.
        case duplicateNetworkKey(String)
        /// A request has an empty resource name.
        case emptyResourceName(networkKey: String)
    }

    public var kind: Kind
    /// The networks of the resource that got no device (for `exhausted`), in request order.
    public var unassignedNetworks: [String]

    public init(_ kind: Kind, unassignedNetworks: [String] = []) {
        self.kind = kind
        self.unassignedNetworks = unassignedNetworks
    }

    public var description: String {
        switch kind {
        case .exhausted(let resource, let available, let wanted):
            let devices = available == 1 ? "1 device" : "\(available) devices"
            let networks = wanted == 1 ? "1 network wants" : "\(wanted) networks want"
            var s = "resource \"\(resource)\": the pod has \(devices) allocated but \(networks) one"
            if !unassignedNetworks.isEmpty {
                s += " (no device for " + unassignedNetworks.map { "\"\($0)\"" }.joined(separator: ", ") + ")"
            }
            return s
        case .duplicateNetworkKey(let key): return "network \"\(key)\" requests a device twice"
        case .emptyResourceName(let key): return "network \"\(key)\" requests a device of an empty resource name"
        }
    }
}

public enum DevicePicker {
    /// Assigns one device per request so that requests of the same resource get distinct devices.
    ///
    /// 1. A recorded pick (`recorded[networkKey]`, from an earlier invocation of the same attachment) is kept when
    ///    that device is still allocated to the pod for the request's resource and no earlier request in the list
    ///    kept it already.
    /// 2. Every other request, in list order, gets the first (bytewise lowest) device of its resource that no pick
    ///    holds. With no recorded picks this is Multus' assignment: consecutive sorted IDs in attachment order.
    ///
    /// Returns the picks in request order. Throws `exhausted` (naming the resource, the pod's device count and how
    /// many networks want it) when a resource runs out.
    public static func pick(
        _ requests: [DeviceRequest], from devices: PodDevices, recorded: [String: String] = [:]
    ) throws(DevicePickError) -> [DevicePick] {
        var seen = Set<String>()
        for r in requests {
            if r.resourceName.isEmpty { throw DevicePickError(.emptyResourceName(networkKey: r.networkKey)) }
            if !seen.insert(r.networkKey).inserted { throw DevicePickError(.duplicateNetworkKey(r.networkKey)) }
        }

        var used: [String: Set<String>] = [:]
        var chosen: [String?] = Array(repeating: nil, count: requests.count)
        var kept = Array(repeating: false, count: requests.count)

        // Pass 1: recorded picks that are still valid.
        for (i, r) in requests.enumerated() {
            guard let previous = recorded[r.networkKey] else { continue }
            let available = devices.deviceIDs(for: r.resourceName)
            guard available.contains(previous), !(used[r.resourceName]?.contains(previous) ?? false) else { continue }
            used[r.resourceName, default: []].insert(previous)
            chosen[i] = previous
            kept[i] = true
        }

        // Pass 2: the lowest free device for everything else.
        var failure: (resource: String, index: Int)?
        for (i, r) in requests.enumerated() where chosen[i] == nil {
            let free = devices.deviceIDs(for: r.resourceName).first { !(used[r.resourceName]?.contains($0) ?? false) }
            guard let free else {
                failure = (r.resourceName, i)
                break
            }
            used[r.resourceName, default: []].insert(free)
            chosen[i] = free
        }

        if let failure {
            let ofResource = requests.indices.filter { requests[$0].resourceName == failure.resource }
            let unassigned = ofResource.filter { chosen[$0] == nil }.map { requests[$0].networkKey }
            throw DevicePickError(
                .exhausted(resourceName: failure.resource, available: devices.deviceIDs(for: failure.resource).count,
                           wanted: ofResource.count),
                unassignedNetworks: unassigned)
        }

        var out: [DevicePick] = []
        out.reserveCapacity(requests.count)
        for (i, r) in requests.enumerated() {
            guard let id = chosen[i] else { continue }  // unreachable: every nil led to `failure`
            out.append(DevicePick(networkKey: r.networkKey, resourceName: r.resourceName, deviceID: id, kept: kept[i]))
        }
        return out
    }

    /// `pick` with tuple requests, returning networkKey → deviceID.
    public static func pick(
        _ requests: [(networkKey: String, resourceName: String)], from devices: PodDevices,
        recorded: [String: String] = [:]
    ) throws(DevicePickError) -> [String: String] {
        let picks = try pick(requests.map { DeviceRequest(networkKey: $0.networkKey, resourceName: $0.resourceName) },
                             from: devices, recorded: recorded)
        var out: [String: String] = [:]
        for p in picks { out[p.networkKey] = p.deviceID }
        return out
    }
}
