import CNISpec

/// One `portMappings` request of a selection element (NPWG §4.1.2.1.7).
///
/// Invariant: both ports are in 1...65535; `protocolName` is `tcp`, `udp` or `sctp` in lower case (the request may
/// use any case; absent means TCP); `hostIP`, when set, is a valid IP address.
public struct PortMapping: Sendable, Equatable {
    public var hostPort: Int
    public var containerPort: Int
    public var protocolName: String
    public var hostIP: String?

    public init(hostPort: Int, containerPort: Int, protocolName: String = "tcp", hostIP: String? = nil) {
        self.hostPort = hostPort
        self.containerPort = containerPort
        self.protocolName = protocolName
        self.hostIP = hostIP
    }
}

/// The `bandwidth` request of a selection element (NPWG §4.1.2.1.8), rates in bits/s and bursts in bits.
///
/// Invariant: every present value is a positive integer, a burst is present only with its rate, and at least one
/// rate is present.
public struct BandwidthRequest: Sendable, Equatable {
    public var ingressRate: Int?
    public var ingressBurst: Int?
    public var egressRate: Int?
    public var egressBurst: Int?

    public init(ingressRate: Int? = nil, ingressBurst: Int? = nil, egressRate: Int? = nil, egressBurst: Int? = nil) {
        self.ingressRate = ingressRate
        self.ingressBurst = ingressBurst
        self.egressRate = egressRate
        self.egressBurst = egressBurst
    }
}

/// One validated element of a network selection annotation (NPWG §4.1.2), in either annotation form.
///
/// Invariants (guaranteed by `NetworkSelection.parse`): `name` and `namespace` are DNS-1123 labels (`namespace` is
/// already resolved to the default namespace when the annotation omitted it or left it empty); `interfaceRequest` is
/// a valid interface name; every `ips` entry is an address with an optional prefix; `mac` is a 6-byte MAC and
/// `infinibandGUID` an 8-byte GUID; `defaultRoute` holds bare addresses with at most one per family; `ips` and
/// `ipamClaimReference` are never both set. Empty strings in the annotation are treated as absent (as Go's
/// `omitempty` fields are); an empty `ips` or `portMappings` list is treated as absent.
public struct NetworkSelectionElement: Sendable, Equatable {
    public var name: String
    public var namespace: String
    /// `interface` (or the deprecated `interfaceRequest`), or the `@ifname` of the shorthand form.
    public var interfaceRequest: String?
    public var ips: [String]
    public var mac: String?
    /// `nil`: key absent. `[]`: present and empty, which is meaningful (this attachment takes the default route
    /// without adding a gateway of its own).
    public var defaultRoute: [String]?
    public var portMappings: [PortMapping]
    public var bandwidth: BandwidthRequest?
    /// The `cni-args` object, merged into each delegate plugin's `args.cni`.
    public var cniArgs: JSONObject?
    public var infinibandGUID: String?
    public var deviceID: String?
    public var ipamClaimReference: String?

    public init(
        name: String, namespace: String, interfaceRequest: String? = nil, ips: [String] = [], mac: String? = nil,
        defaultRoute: [String]? = nil, portMappings: [PortMapping] = [], bandwidth: BandwidthRequest? = nil,
        cniArgs: JSONObject? = nil, infinibandGUID: String? = nil, deviceID: String? = nil,
        ipamClaimReference: String? = nil
    ) {
        self.name = name
        self.namespace = namespace
        self.interfaceRequest = interfaceRequest
        self.ips = ips
        self.mac = mac
        self.defaultRoute = defaultRoute
        self.portMappings = portMappings
        self.bandwidth = bandwidth
        self.cniArgs = cniArgs
        self.infinibandGUID = infinibandGUID
        self.deviceID = deviceID
        self.ipamClaimReference = ipamClaimReference
    }

    /// `namespace/name`, the form used in errors and in the network-status `name`.
    public var qualifiedName: String { "\(namespace)/\(name)" }
}

/// Why a selection annotation was rejected. Always names the annotation, and when one element is at fault its
/// 0-based index, the key (or shorthand part) and the offending value.
public struct SelectionError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Reason: Sendable, Equatable {
        case invalidJSON(String)
        case notAList(found: String)
        case elementNotObject(found: String)
        case missingName
        case wrongType(expected: String, found: String)
        case invalidName
        case invalidNamespace
        case invalidInterfaceName
        /// Both `interface` and `interfaceRequest` were given with different values.
        case conflictingInterface(other: String)
        case invalidIP
        case invalidMAC
        case invalidInfinibandGUID
        case invalidGateway
        /// More than one gateway of one address family in `default-route` (no ECMP default route, as in Multus).
        case multipleGatewaysPerFamily
        /// A second element asks for the default route of an address family (`"IPv4"`/`"IPv6"`) that element
        /// `firstIndex` already asks for.
        case multipleDefaultRoutes(firstIndex: Int, family: String)
        case invalidPortMapping(String)
        case invalidBandwidth(String)
        case ipsWithIPAMClaim
        case malformedShorthand(String)
        /// The default-network annotation selects more than one network.
        case multipleDefaultNetworks(count: Int)
        /// The default-network annotation is non-blank but selects no network.
        case noDefaultNetwork
    }

    public var annotation: String
    public var index: Int?
    public var field: String?
    public var value: String?
    public var reason: Reason

    public init(annotation: String, index: Int? = nil, field: String? = nil, value: String? = nil, reason: Reason) {
        self.annotation = annotation
        self.index = index
        self.field = field
        self.value = value
        self.reason = reason
    }

    public var description: String {
        var s = "invalid \(annotation) annotation"
        if let index { s += ": element \(index)" }
        if let field { s += index == nil ? ": \(field)" : " \(field)" }
        if let value { s += " " + SelectionError.quote(value) }
        s += ": " + reasonText
        return s
    }

    private var reasonText: String {
        switch reason {
        case .invalidJSON(let e): return "not valid JSON (\(e))"
        case .notAList(let t): return "the JSON form must be a list of objects, found \(t)"
        case .elementNotObject(let t): return "element must be an object, found \(t)"
        case .missingName: return "\"name\" is required"
        case .wrongType(let e, let f): return "expected \(e), found \(f)"
        case .invalidName: return "not a DNS-1123 label (lower-case alphanumerics and '-', at most 63 characters)"
        case .invalidNamespace: return "namespace is not a DNS-1123 label"
        case .invalidInterfaceName:
            return "not a valid interface name (1-15 bytes, not '.' or '..', no '/', ':' or whitespace)"
        case .conflictingInterface(let other): return "conflicts with \"interfaceRequest\" \(SelectionError.quote(other))"
        case .invalidIP: return "not an IPv4/IPv6 address with optional /prefix"
        case .invalidMAC: return "not a 6-byte Ethernet MAC address"
        case .invalidInfinibandGUID: return "not an 8-byte InfiniBand GUID"
        case .invalidGateway: return "not an IPv4/IPv6 address"
        case .multipleGatewaysPerFamily: return "more than one gateway per address family (ECMP default route)"
        case .multipleDefaultRoutes(let first, let family):
            return "the \(family) default route is already requested by element \(first); one attachment per address family may carry it"
        case .invalidPortMapping(let r): return "invalid port mapping: \(r)"
        case .invalidBandwidth(let r): return "invalid bandwidth: \(r)"
        case .ipsWithIPAMClaim: return "\"ips\" and \"ipam-claim-reference\" are mutually exclusive"
        case .malformedShorthand(let r): return "malformed [namespace/]name[@interface] item: \(r)"
        case .multipleDefaultNetworks(let n): return "selects \(n) networks, at most one is allowed"
        case .noDefaultNetwork: return "selects no network"
        }
    }

    /// A JSON-quoted, length-limited rendering of user input for messages.
    static func quote(_ s: String) -> String {
        let limit = 120
        let cut = s.count > limit ? String(s.prefix(limit)) + "…" : s
        return JSON.string(cut).serialized()
    }
}

/// Parsers for the `k8s.v1.cni.cncf.io/networks` and `v1.multus-cni.io/default-network` pod annotations.
///
/// Decision (cni-spec.md §E.1): an invalid element fails the whole selection, as in Multus; the parser never returns
/// a partial set, so a pod is never attached to only some of the networks it asked for. The caller fails the ADD
/// before any delegate runs.
public enum NetworkSelection {
    public static let networksAnnotation = "k8s.v1.cni.cncf.io/networks"
    public static let defaultNetworkAnnotation = "v1.multus-cni.io/default-network"

    /// Multus's rule: the value is the JSON form if it contains `[`, `{` or `"`, else the comma shorthand.
    public static func isJSONForm(_ value: String) -> Bool {
        value.utf8.contains { $0 == UInt8(ascii: "[") || $0 == UInt8(ascii: "{") || $0 == UInt8(ascii: "\"") }
    }

    /// Parses a selection annotation value in either form. A blank value selects nothing.
    ///
    /// - Parameters:
    ///   - defaultNamespace: the namespace of elements that do not name one (the pod's namespace).
    ///   - annotation: the annotation key, used in error messages.
    public static func parse(
        _ value: String, defaultNamespace: String, annotation: String = networksAnnotation
    ) throws(SelectionError) -> [NetworkSelectionElement] {
        let elements: [NetworkSelectionElement]
        if isJSONForm(value) {
            elements = try parseJSONForm(value, defaultNamespace: defaultNamespace, annotation: annotation)
        } else {
            elements = try parseShorthand(value, defaultNamespace: defaultNamespace, annotation: annotation)
        }
        // One attachment per address family may carry the default route (as Multus counts gateways per family); an
        // element with `default-route: []` claims no family, so it changes no route (Multus #1011 removes them all).
        var claimed: [AddressFamily: Int] = [:]
        for (i, e) in elements.enumerated() {
            for family in DefaultRouteRequest.families(e.defaultRoute ?? []) {
                if let first = claimed[family] {
                    throw SelectionError(
                        annotation: annotation, index: i, field: "\"default-route\"",
                        reason: .multipleDefaultRoutes(firstIndex: first, family: family.description))
                }
                claimed[family] = i
            }
        }
        return elements
    }

    /// Parses `v1.multus-cni.io/default-network`: the same syntax, the default namespace is `multusNamespace`, and at
    /// most one network may be selected. A blank value returns `nil`.
    public static func parseDefaultNetwork(
        _ value: String, multusNamespace: String
    ) throws(SelectionError) -> NetworkSelectionElement? {
        if isBlank(value) { return nil }
        let elements = try parse(value, defaultNamespace: multusNamespace, annotation: defaultNetworkAnnotation)
        guard elements.count <= 1 else {
            throw SelectionError(
                annotation: defaultNetworkAnnotation, value: value,
                reason: .multipleDefaultNetworks(count: elements.count))
        }
        guard let only = elements.first else {
            throw SelectionError(annotation: defaultNetworkAnnotation, value: value, reason: .noDefaultNetwork)
        }
        return only
    }

    static func isBlank(_ s: String) -> Bool { s.unicodeScalars.allSatisfy { $0.properties.isWhitespace } }

    static func trimmed(_ s: Substring) -> String {
        let scalars = s.unicodeScalars
        guard let start = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let end = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[start...end])
    }

    // MARK: Shorthand

    static func parseShorthand(
        _ value: String, defaultNamespace: String, annotation: String
    ) throws(SelectionError) -> [NetworkSelectionElement] {
        var out: [NetworkSelectionElement] = []
        for rawItem in value.split(separator: ",", omittingEmptySubsequences: false) {
            let item = trimmed(rawItem)
            if item.isEmpty { continue }
            let index = out.count
            func fail(_ field: String?, _ v: String, _ r: SelectionError.Reason) -> SelectionError {
                SelectionError(annotation: annotation, index: index, field: field, value: v, reason: r)
            }
            let slashParts = item.split(separator: "/", omittingEmptySubsequences: false)
            guard slashParts.count <= 2 else { throw fail(nil, item, .malformedShorthand("more than one '/'")) }
            var namespace = defaultNamespace
            var rest = slashParts[slashParts.count - 1]
            if slashParts.count == 2 {
                namespace = trimmed(slashParts[0])
                guard KubernetesNames.isDNS1123Label(namespace) else { throw fail("namespace", namespace, .invalidNamespace) }
                rest = slashParts[1]
            }
            let atParts = rest.split(separator: "@", omittingEmptySubsequences: false)
            guard atParts.count <= 2 else { throw fail(nil, item, .malformedShorthand("more than one '@'")) }
            let name = trimmed(atParts[0])
            guard KubernetesNames.isDNS1123Label(name) else { throw fail("name", name, .invalidName) }
            var ifname: String? = nil
            if atParts.count == 2 {
                let requested = trimmed(atParts[1])
                guard AddressSyntax.isInterfaceName(requested) else {
                    throw fail("interface", requested, .invalidInterfaceName)
                }
                ifname = requested
            }
            if slashParts.count == 1 {
                guard KubernetesNames.isDNS1123Label(namespace) else { throw fail("namespace", namespace, .invalidNamespace) }
            }
            out.append(NetworkSelectionElement(name: name, namespace: namespace, interfaceRequest: ifname))
        }
        return out
    }

    // MARK: JSON form

    static func parseJSONForm(
        _ value: String, defaultNamespace: String, annotation: String
    ) throws(SelectionError) -> [NetworkSelectionElement] {
        let root: JSON
        do {
            root = try JSON.parse(value)
        } catch {
            throw SelectionError(annotation: annotation, reason: .invalidJSON(error.description))
        }
        guard case .array(let items) = root else {
            throw SelectionError(annotation: annotation, reason: .notAList(found: root.typeName))
        }
        var out: [NetworkSelectionElement] = []
        out.reserveCapacity(items.count)
        for (i, item) in items.enumerated() {
            guard case .object(let obj) = item else {
                throw SelectionError(
                    annotation: annotation, index: i, value: item.serialized(),
                    reason: .elementNotObject(found: item.typeName))
            }
            let reader = ElementReader(object: obj, index: i, annotation: annotation)
            out.append(try reader.read(defaultNamespace: defaultNamespace))
        }
        return out
    }
}

/// Reads and validates one JSON selection element.
private struct ElementReader {
    let object: JSONObject
    let index: Int
    let annotation: String

    func fail(_ key: String, _ value: String?, _ reason: SelectionError.Reason) -> SelectionError {
        SelectionError(annotation: annotation, index: index, field: "\"\(key)\"", value: value, reason: reason)
    }

    /// A string member; `nil` when absent, `null` or empty.
    func string(_ key: String) throws(SelectionError) -> String? {
        guard let v = object[key] else { return nil }
        switch v {
        case .null: return nil
        case .string(let s): return s.isEmpty ? nil : s
        default: throw fail(key, v.serialized(), .wrongType(expected: "string", found: v.typeName))
        }
    }

    /// A list-of-strings member; `nil` when absent or `null`.
    func stringList(_ key: String) throws(SelectionError) -> [String]? {
        guard let v = object[key] else { return nil }
        switch v {
        case .null: return nil
        case .array(let items):
            var out: [String] = []
            for item in items {
                guard case .string(let s) = item else {
                    throw fail(key, item.serialized(), .wrongType(expected: "string", found: item.typeName))
                }
                out.append(s)
            }
            return out
        default: throw fail(key, v.serialized(), .wrongType(expected: "list of strings", found: v.typeName))
        }
    }

    func read(defaultNamespace: String) throws(SelectionError) -> NetworkSelectionElement {
        guard let name = try string("name") else { throw fail("name", nil, .missingName) }
        guard KubernetesNames.isDNS1123Label(name) else { throw fail("name", name, .invalidName) }
        let namespace = try string("namespace") ?? defaultNamespace
        guard KubernetesNames.isDNS1123Label(namespace) else { throw fail("namespace", namespace, .invalidNamespace) }
        var element = NetworkSelectionElement(name: name, namespace: namespace)

        let iface = try string("interface")
        let legacy = try string("interfaceRequest")
        if let iface, let legacy, iface != legacy {
            throw fail("interface", iface, .conflictingInterface(other: legacy))
        }
        if let requested = iface ?? legacy {
            guard AddressSyntax.isInterfaceName(requested) else {
                throw fail(iface != nil ? "interface" : "interfaceRequest", requested, .invalidInterfaceName)
            }
            element.interfaceRequest = requested
        }

        if let ips = try stringList("ips") {
            for ip in ips where !AddressSyntax.isIPOrPrefix(ip) { throw fail("ips", ip, .invalidIP) }
            element.ips = ips
        }

        if let mac = try string("mac") {
            guard AddressSyntax.isEthernetMAC(mac) else { throw fail("mac", mac, .invalidMAC) }
            element.mac = mac
        }

        if let guid = try string("infiniband-guid") {
            guard AddressSyntax.isInfinibandGUID(guid) else { throw fail("infiniband-guid", guid, .invalidInfinibandGUID) }
            element.infinibandGUID = guid
        }

        if let gateways = try stringList("default-route") {
            var v4 = 0, v6 = 0
            for gw in gateways {
                guard let addr = IPAddress(gw) else { throw fail("default-route", gw, .invalidGateway) }
                if addr.isIPv4 { v4 += 1 } else { v6 += 1 }
            }
            if v4 > 1 || v6 > 1 {
                throw fail("default-route", JSON.array(gateways.map(JSON.string)).serialized(), .multipleGatewaysPerFamily)
            }
            element.defaultRoute = gateways
        }

        element.portMappings = try portMappings()
        element.bandwidth = try bandwidth()

        if let args = object["cni-args"] {
            switch args {
            case .null: break
            case .object(let o): element.cniArgs = o
            default: throw fail("cni-args", args.serialized(), .wrongType(expected: "object", found: args.typeName))
            }
        }

        element.deviceID = try string("deviceID")
        element.ipamClaimReference = try string("ipam-claim-reference")
        if element.ipamClaimReference != nil, !element.ips.isEmpty {
            throw fail("ipam-claim-reference", element.ipamClaimReference, .ipsWithIPAMClaim)
        }
        return element
    }

    func portMappings() throws(SelectionError) -> [PortMapping] {
        let key = "portMappings"
        guard let v = object[key], !v.isNull else { return [] }
        guard case .array(let items) = v else {
            throw fail(key, v.serialized(), .wrongType(expected: "list of objects", found: v.typeName))
        }
        var out: [PortMapping] = []
        for item in items {
            let text = item.serialized()
            guard case .object(let pm) = item else {
                throw fail(key, text, .invalidPortMapping("expected an object, found \(item.typeName)"))
            }
            func port(_ k: String) throws(SelectionError) -> Int {
                guard let p = pm[k] else { throw fail(key, text, .invalidPortMapping("\"\(k)\" is required")) }
                guard let n = p.intValue, (1...65535).contains(n) else {
                    throw fail(key, text, .invalidPortMapping("\"\(k)\" must be an integer in 1-65535"))
                }
                return n
            }
            let hostPort = try port("hostPort")
            let containerPort = try port("containerPort")
            var proto = "tcp"
            if let p = pm["protocol"], !p.isNull {
                guard case .string(let s) = p else {
                    throw fail(key, text, .invalidPortMapping("\"protocol\" must be a string"))
                }
                if !s.isEmpty {
                    let lower = s.lowercased()
                    guard lower == "tcp" || lower == "udp" || lower == "sctp" else {
                        throw fail(key, text, .invalidPortMapping("\"protocol\" must be tcp, udp or sctp"))
                    }
                    proto = lower
                }
            }
            var hostIP: String? = nil
            if let h = pm["hostIP"], !h.isNull {
                guard case .string(let s) = h else {
                    throw fail(key, text, .invalidPortMapping("\"hostIP\" must be a string"))
                }
                if !s.isEmpty {
                    guard IPAddress(s) != nil else {
                        throw fail(key, text, .invalidPortMapping("\"hostIP\" is not an IP address"))
                    }
                    hostIP = s
                }
            }
            out.append(PortMapping(hostPort: hostPort, containerPort: containerPort, protocolName: proto, hostIP: hostIP))
        }
        return out
    }

    func bandwidth() throws(SelectionError) -> BandwidthRequest? {
        let key = "bandwidth"
        guard let v = object[key], !v.isNull else { return nil }
        let text = v.serialized()
        guard case .object(let bw) = v else {
            throw fail(key, text, .wrongType(expected: "object", found: v.typeName))
        }
        func value(_ k: String) throws(SelectionError) -> Int? {
            guard let x = bw[k], !x.isNull else { return nil }
            guard let n = x.intValue, n > 0 else {
                throw fail(key, text, .invalidBandwidth("\"\(k)\" must be a positive integer"))
            }
            return n
        }
        let request = BandwidthRequest(
            ingressRate: try value("ingressRate"), ingressBurst: try value("ingressBurst"),
            egressRate: try value("egressRate"), egressBurst: try value("egressBurst"))
        if request.ingressBurst != nil, request.ingressRate == nil {
            throw fail(key, text, .invalidBandwidth("\"ingressBurst\" requires \"ingressRate\""))
        }
        if request.egressBurst != nil, request.egressRate == nil {
            throw fail(key, text, .invalidBandwidth("\"egressBurst\" requires \"egressRate\""))
        }
        if request.ingressRate == nil, request.egressRate == nil {
            throw fail(key, text, .invalidBandwidth("no rate given"))
        }
        return request
    }
}
