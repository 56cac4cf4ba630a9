import CNISpec

/// The CNI versions `plexus-policy-route` speaks (it needs `interfaces[]` in its prevResult, so 0.3.0 and later).
public enum PolicyRouteVersions {
    public static let supported: [String] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]

    public static func isSupported(_ v: String) -> Bool { supported.contains(v) }
}

/// The plugin's stdin, split in two stages so that DEL can tolerate what ADD refuses: the envelope (JSON object and
/// `cniVersion`, checked for every verb) and the options and prevResult (`PolicyOptions`, `prevResult`).
public struct PolicyRouteInput: Sendable {
    /// The configuration object as received.
    public var raw: JSONObject
    /// `cniVersion`, one of `PolicyRouteVersions.supported`.
    public var cniVersion: String
    /// `prevResult` as received, nil when absent or `null`.
    public var prevResult: JSON?

    /// Parses stdin: code 6 when it is not JSON, 7 when it is not an object or `cniVersion` is not a string, 1 when
    /// the version is missing or not supported.
    public init(bytes: [UInt8]) throws(CNIError) {
        let json: JSON
        do { json = try JSON.parse(bytes) } catch {
            throw CNIError(.decodingFailure, "cannot parse the plugin configuration", details: error.description)
        }
        guard let o = json.objectValue else {
            throw CNIError(.invalidNetworkConfig, "the plugin configuration is not a JSON object", details: json.typeName)
        }
        let version: String
        switch o["cniVersion"] {
        case .string(let s)?: version = s
        case nil, .null?: version = ""
        case let other?: throw CNIError(.invalidNetworkConfig, "\"cniVersion\" must be a string", details: other.typeName)
        }
        guard PolicyRouteVersions.isSupported(version) else {
            throw CNIError(.incompatibleVersion, "unsupported CNI version \"\(CNIValidation.visible(version))\"",
                           details: "supported: \(PolicyRouteVersions.supported.joined(separator: ", "))")
        }
        raw = o
        cniVersion = version
        switch o["prevResult"] {
        case nil, .null?: prevResult = nil
        case let p?: prevResult = p
        }
    }

    /// The plugin options (code 7 naming the key when one is unusable).
    public func options() throws(CNIError) -> PolicyOptions { try PolicyOptions(raw) }

    /// The prevResult parsed (code 6 when it is not a result object, 7 when an `ips` entry is malformed, 1 for an
    /// unknown result version); nil when there is none.
    public func parsedPrevResult() throws(CNIError) -> CNIResult? {
        guard let prevResult else { return nil }
        guard let o = prevResult.objectValue else {
            throw CNIError(.decodingFailure, "prevResult is not a JSON object", details: prevResult.typeName)
        }
        // CNIResult.parse skips entries it cannot read; a finalizer must not silently lose an address.
        switch o["ips"] {
        case nil, .null?: break
        case .array(let items)?:
            for (i, item) in items.enumerated() {
                guard let io = item.objectValue, io["address"]?.stringValue != nil else {
                    throw CNIError(.invalidNetworkConfig, "prevResult.ips[\(i)] has no \"address\" string")
                }
                if let idx = io["interface"], !idx.isNull, idx.intValue == nil {
                    throw CNIError(.invalidNetworkConfig, "prevResult.ips[\(i)].interface must be an integer", details: idx.serialized())
                }
                if let gw = io["gateway"], !gw.isNull, gw.stringValue == nil {
                    throw CNIError(.invalidNetworkConfig, "prevResult.ips[\(i)].gateway must be a string", details: gw.typeName)
                }
            }
        case let other?: throw CNIError(.invalidNetworkConfig, "prevResult.ips must be a list", details: other.typeName)
        }
        switch o["interfaces"] {
        case nil, .null?, .array?: break
        case let other?: throw CNIError(.invalidNetworkConfig, "prevResult.interfaces must be a list", details: other.typeName)
        }
        return try CNIResult.parse(prevResult, defaultVersion: cniVersion)
    }
}

/// The plugin's own options:
///
/// | key | default | meaning |
/// |---|---|---|
/// | `tableBase` | 100 | the table of the first secondary interface; the k-th gets `tableBase + k - 1` (1…4000000000; no table may be 253, 254 or 255) |
/// | `rulePriority` | 1000 | the priority of the first interface's rules; the k-th gets `rulePriority + k - 1` (1…32000, every rule below 32766, the main table's) |
/// | `interfaces` | all | names of the only secondary interfaces that get a table (a non-empty list of interface names) |
public struct PolicyOptions: Sendable, Equatable {
    public static let defaultTableBase: UInt32 = 100
    public static let defaultRulePriority: UInt32 = 1000
    public static let tableBaseRange: ClosedRange<Int> = 1...4_000_000_000
    public static let rulePriorityRange: ClosedRange<Int> = 1...32000
    /// Tables no plan may use: unspecified (0), default (253), main (254), local (255).
    public static let reservedTables: Set<UInt32> = [0, 253, 254, 255]
    /// The highest priority a rule may get: the main table's rule is 32766.
    public static let maximumRulePriority: UInt32 = 32765

    public var tableBase: UInt32
    public var rulePriority: UInt32
    /// nil: every secondary interface qualifies.
    public var interfaces: [String]?

    public init(tableBase: UInt32 = defaultTableBase, rulePriority: UInt32 = defaultRulePriority, interfaces: [String]? = nil) {
        self.tableBase = tableBase
        self.rulePriority = rulePriority
        self.interfaces = interfaces
    }

    /// Reads the options of a configuration object; absent or `null` keys take their defaults.
    public init(_ o: JSONObject) throws(CNIError) {
        tableBase = UInt32(try PolicyOptions.integer(o["tableBase"], key: "tableBase", range: PolicyOptions.tableBaseRange,
                                                     default: Int(PolicyOptions.defaultTableBase)))
        if PolicyOptions.reservedTables.contains(tableBase) {
            throw CNIError(.invalidNetworkConfig, "\"tableBase\" \(tableBase) is a reserved routing table",
                           details: "tables 253 (default), 254 (main) and 255 (local) belong to the kernel")
        }
        rulePriority = UInt32(try PolicyOptions.integer(o["rulePriority"], key: "rulePriority",
                                                        range: PolicyOptions.rulePriorityRange,
                                                        default: Int(PolicyOptions.defaultRulePriority)))
        switch o["interfaces"] {
        case nil, .null?: interfaces = nil
        case .array(let items)?:
            guard !items.isEmpty else {
                throw CNIError(.invalidNetworkConfig, "\"interfaces\" is empty",
                               details: "omit it to route every secondary interface")
            }
            var names: [String] = []
            for (i, item) in items.enumerated() {
                guard let name = item.stringValue else {
                    throw CNIError(.invalidNetworkConfig, "\"interfaces\"[\(i)] must be a string", details: item.typeName)
                }
                if let problem = PolicyOptions.interfaceNameProblem(name) {
                    throw CNIError(.invalidNetworkConfig, "\"interfaces\"[\(i)] is not an interface name: \(problem)",
                                   details: CNIValidation.visible(name))
                }
                names.append(name)
            }
            interfaces = names
        case let other?:
            throw CNIError(.invalidNetworkConfig, "\"interfaces\" must be a list of interface names", details: other.typeName)
        }
    }

    static func integer(_ v: JSON?, key: String, range: ClosedRange<Int>, default d: Int) throws(CNIError) -> Int {
        switch v {
        case nil, .null?: return d
        case .number(let text)?:
            guard let n = Int(text) else {
                throw CNIError(.invalidNetworkConfig, "\"\(key)\" must be an integer", details: text)
            }
            guard range.contains(n) else {
                throw CNIError(.invalidNetworkConfig, "\"\(key)\" \(n) is out of range",
                               details: "\(range.lowerBound)...\(range.upperBound)")
            }
            return n
        case let other?:
            throw CNIError(.invalidNetworkConfig, "\"\(key)\" must be an integer", details: other.typeName)
        }
    }

    /// Why `name` cannot be a Linux interface name (the kernel's `dev_valid_name`), or nil when it can.
    static func interfaceNameProblem(_ name: String) -> String? {
        if name.isEmpty { return "empty" }
        if name.utf8.count > 15 { return "longer than 15 bytes" }
        if name == "." || name == ".." { return "\".\" or \"..\"" }
        if CNIValidation.hasControlCharacters(name) { return "control characters" }
        for s in name.unicodeScalars where s == "/" || s == ":" || s.properties.isWhitespace {
            return "contains \"/\", \":\" or whitespace"
        }
        return nil
    }
}
