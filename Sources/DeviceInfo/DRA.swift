import CNISpec

/// Dynamic Resource Allocation (`resource.k8s.io/v1`) as Plexus reads it, with no I/O: which ResourceClaims a pod
/// uses, which devices they were allocated, and which of those are network devices (the ResourceSlice attributes
/// `k8s.cni.cncf.io/resourceName` and `k8s.cni.cncf.io/deviceID`, Multus' convention).
public enum DRA {
    public static let resourceNameAttribute = "k8s.cni.cncf.io/resourceName"
    public static let deviceIDAttribute = "k8s.cni.cncf.io/deviceID"

    /// A ResourceClaim the pod uses. `requestResources` maps a claim request to the extended resource name it
    /// stands for (KEP-5004 `extendedResourceClaimStatus.requestMappings`), empty for ordinary claims.
    public struct ClaimReference: Sendable, Equatable {
        public var namespace: String
        public var name: String
        public var requestResources: [String: String]

        public init(namespace: String, name: String, requestResources: [String: String] = [:]) {
            self.namespace = namespace
            self.name = name
            self.requestResources = requestResources
        }

        /// `namespace/name`: which claim this is (the request mappings are how it was found, not who it is).
        public var id: String { "\(namespace)/\(name)" }
    }

    /// The claims of a pod object: `status.resourceClaimStatuses[].resourceClaimName` (an entry without one has no
    /// claim: the pod's template generated none) and `status.extendedResourceClaimStatus`. In status order, each claim
    /// once.
    public static func claims(ofPod pod: JSON) -> [ClaimReference] {
        let ns = pod["metadata"]?["namespace"]?.stringValue ?? ""
        var out: [ClaimReference] = []
        func add(_ c: ClaimReference) {
            if let i = out.firstIndex(where: { $0.id == c.id }) {
                for (k, v) in c.requestResources { out[i].requestResources[k] = v }
            } else {
                out.append(c)
            }
        }
        for s in pod["status"]?["resourceClaimStatuses"]?.arrayValue ?? [] {
            if let name = s["resourceClaimName"]?.stringValue, !name.isEmpty { add(ClaimReference(namespace: ns, name: name)) }
        }
        if let ext = pod["status"]?["extendedResourceClaimStatus"], let name = ext["resourceClaimName"]?.stringValue, !name.isEmpty {
            var mapping: [String: String] = [:]
            for m in ext["requestMappings"]?.arrayValue ?? [] {
                if let r = m["requestName"]?.stringValue, let res = m["resourceName"]?.stringValue { mapping[r] = res }
            }
            add(ClaimReference(namespace: ns, name: name, requestResources: mapping))
        }
        return out
    }

    /// One device a claim was allocated (`status.allocation.devices.results[]`).
    public struct AllocationResult: Sendable, Equatable, Hashable {
        public var request: String
        public var driver: String
        public var pool: String
        public var device: String

        public init(request: String, driver: String, pool: String, device: String) {
            self.request = request
            self.driver = driver
            self.pool = pool
            self.device = device
        }
    }

    /// The allocation of a claim object, or nil when it is not allocated yet (no `status.allocation`).
    public static func allocation(ofClaim claim: JSON) -> [AllocationResult]? {
        guard let alloc = claim["status"]?["allocation"], alloc.objectValue != nil else { return nil }
        return (alloc["devices"]?["results"]?.arrayValue ?? []).compactMap { r in
            guard let driver = r["driver"]?.stringValue, let pool = r["pool"]?.stringValue,
                  let device = r["device"]?.stringValue, !driver.isEmpty, !device.isEmpty else { return nil }
            return AllocationResult(request: r["request"]?.stringValue ?? "", driver: driver, pool: pool, device: device)
        }
    }

    /// A device's attributes in one ResourceSlice list: (driver, pool, device) → attribute name → value as text
    /// (`string`, `int`, `bool` or `version`). Attribute names without a domain are qualified with the driver's, as
    /// the API defines.
    public struct SliceAttributes: Sendable {
        var byDevice: [DeviceKey: [String: String]] = [:]

        struct DeviceKey: Hashable {
            var driver: String, pool: String, device: String
        }

        public init() {}

        public init(slices: JSON) {
            for slice in slices["items"]?.arrayValue ?? [] {
                let spec = slice["spec"]
                guard let driver = spec?["driver"]?.stringValue, let pool = spec?["pool"]?["name"]?.stringValue else { continue }
                for d in spec?["devices"]?.arrayValue ?? [] {
                    guard let name = d["name"]?.stringValue else { continue }
                    var attrs: [String: String] = [:]
                    for m in d["attributes"]?.objectValue?.members ?? [] {
                        let key = m.key.contains("/") ? m.key : driver + "/" + m.key
                        for kind in ["string", "version"] { if let v = m.value[kind]?.stringValue { attrs[key] = v } }
                        if let v = m.value["bool"]?.boolValue { attrs[key] = v ? "true" : "false" }
                        if case .number(let n)? = m.value["int"] { attrs[key] = n }
                    }
                    byDevice[DeviceKey(driver: driver, pool: pool, device: name)] = attrs
                }
            }
        }

        public mutating func merge(_ other: SliceAttributes) {
            for (k, v) in other.byDevice { byDevice[k] = v }
        }

        public func attributes(driver: String, pool: String, device: String) -> [String: String]? {
            byDevice[DeviceKey(driver: driver, pool: pool, device: device)]
        }
    }

    /// A network device allocated through a claim, as Plexus injects and records it.
    public struct NetworkDevice: Sendable, Equatable {
        public var claim: ClaimReference
        public var result: AllocationResult
        public var resourceName: String
        public var deviceID: String

        public init(claim: ClaimReference, result: AllocationResult, resourceName: String, deviceID: String) {
            self.claim = claim
            self.result = result
            self.resourceName = resourceName
            self.deviceID = deviceID
        }
    }

    /// Why a claim's devices cannot be used.
    public struct ResolveError: Error, Sendable, Equatable, CustomStringConvertible {
        public var claim: String
        public var device: String
        public var resourceName: String
        public var description: String {
            "device \(device) of ResourceClaim \(claim) is a \(resourceName) device without the \(DRA.deviceIDAttribute) attribute"
        }
    }

    /// The network devices among a claim's allocation: devices whose slice attributes name one of `resources`
    /// (`k8s.cni.cncf.io/resourceName`), or, for an extended-resource claim, devices of a request mapped to one of
    /// `resources`. Others (a GPU in the same claim) are ignored. A network device without a `deviceID` attribute is
    /// an error: Plexus cannot tell the delegate which device it is.
    public static func networkDevices(claim: ClaimReference, allocation: [AllocationResult], slices: SliceAttributes,
                                      resources: Set<String>) throws(ResolveError) -> [NetworkDevice] {
        var out: [NetworkDevice] = []
        for r in allocation {
            let attrs = slices.attributes(driver: r.driver, pool: r.pool, device: r.device) ?? [:]
            guard let resource = attrs[resourceNameAttribute] ?? claim.requestResources[r.request], resources.contains(resource) else {
                continue
            }
            guard let id = attrs[deviceIDAttribute], !id.isEmpty else {
                throw ResolveError(claim: claim.id, device: "\(r.driver)/\(r.pool)/\(r.device)",
                                   resourceName: resource)
            }
            out.append(NetworkDevice(claim: claim, result: r, resourceName: resource, deviceID: id))
        }
        return out
    }

    /// The `status` object of a server-side apply for one claim and one field manager: `devices` lists exactly the
    /// entries this manager owns (an empty list removes all of them).
    public static func statusApply(claim: ClaimReference, entries: [DeviceStatus]) -> JSON {
        .object(JSONObject([
            ("apiVersion", .string("resource.k8s.io/v1")),
            ("kind", .string("ResourceClaim")),
            ("metadata", .object(JSONObject([("name", .string(claim.name)), ("namespace", .string(claim.namespace))]))),
            ("status", .object(JSONObject([("devices", .array(entries.map(\.json)))]))),
        ]))
    }

    /// An AllocatedDeviceStatus entry with KEP-4817 `networkData` and a `Ready` condition.
    public struct DeviceStatus: Sendable, Equatable {
        public var result: AllocationResult
        public var interfaceName: String
        public var ips: [String]
        public var hardwareAddress: String?
        /// RFC 3339 time of the condition.
        public var time: String

        public init(result: AllocationResult, interfaceName: String, ips: [String], hardwareAddress: String?, time: String) {
            self.result = result
            self.interfaceName = interfaceName
            self.ips = ips
            self.hardwareAddress = hardwareAddress
            self.time = time
        }

        public var json: JSON {
            var net = JSONObject([("interfaceName", .string(interfaceName)), ("ips", .array(ips.map { .string($0) }))])
            if let mac = hardwareAddress, !mac.isEmpty { net["hardwareAddress"] = .string(mac) }
            let ready = JSONObject([("type", .string("Ready")), ("status", .string("True")),
                                    ("reason", .string("NetworkAttached")),
                                    ("message", .string("attached by Plexus as \(interfaceName)")),
                                    ("lastTransitionTime", .string(time))])
            return .object(JSONObject([
                ("driver", .string(result.driver)), ("pool", .string(result.pool)), ("device", .string(result.device)),
                ("conditions", .array([.object(ready)])), ("networkData", .object(net)),
            ]))
        }
    }
}
