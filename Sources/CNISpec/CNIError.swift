/// The one error type Plexus reports to its caller, with the spec's well-known codes.
///
/// Lower layers throw their own errors; the core converts them to `CNIError` and the dispatcher alone prints
/// `{"cniVersion","code","msg","details"}` on stdout and exits non-zero.
public struct CNIError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A CNI error code. Codes 0-99 are reserved by the spec; 100+ are free for plugins.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        public let rawValue: Int
        public init(rawValue: Int) { self.rawValue = rawValue }

        public static let incompatibleVersion = Code(rawValue: 1)
        public static let unsupportedField = Code(rawValue: 2)
        public static let unknownContainer = Code(rawValue: 3)
        public static let invalidEnvironment = Code(rawValue: 4)
        public static let ioFailure = Code(rawValue: 5)
        public static let decodingFailure = Code(rawValue: 6)
        public static let invalidNetworkConfig = Code(rawValue: 7)
        public static let invalidNetNS = Code(rawValue: 8)
        public static let tryAgainLater = Code(rawValue: 11)
        public static let notAvailable = Code(rawValue: 50)
        public static let limitedConnectivity = Code(rawValue: 51)
        public static let internalError = Code(rawValue: 999)

        public var description: String { String(rawValue) }

        /// Whether a plugin may report this code: a well-known spec code (1-7, 11; 50 and 51 from STATUS), libcni's
        /// 8 (invalid netns), or a plugin-specific code (100 and above). 0, negative codes and the unassigned
        /// reserved ones (9, 10, 12-49, 52-99) are not valid CNI errors.
        public var isValidPluginCode: Bool {
            switch rawValue {
            case 1...8, 11, 50, 51: return true
            default: return rawValue >= 100
            }
        }
    }

    public var code: Code
    public var msg: String
    public var details: String

    public init(_ code: Code, _ msg: String, details: String = "") {
        self.code = code
        self.msg = msg
        self.details = details
    }

    public var description: String { details.isEmpty ? msg : "\(msg): \(details)" }

    /// The error as spec JSON. `cniVersion` is included when known (the spec lists it; libcni omits it).
    public func json(cniVersion: String?) -> JSON {
        var o = JSONObject()
        if let cniVersion { o["cniVersion"] = .string(cniVersion) }
        o["code"] = .int(code.rawValue)
        o["msg"] = .string(msg)
        if !details.isEmpty { o["details"] = .string(details) }
        return .object(o)
    }

    /// Decodes a plugin's error output (`{"code","msg","details"}`), as libcni's `pluginErr` does.
    public static func decode(_ json: JSON) -> CNIError? {
        guard let o = json.objectValue, let code = o["code"]?.intValue else { return nil }
        return CNIError(Code(rawValue: code), o["msg"]?.stringValue ?? "", details: o["details"]?.stringValue ?? "")
    }

    /// Prefixes the message with context (network, pod) while keeping code and details.
    public func prefixed(_ context: String) -> CNIError {
        CNIError(code, "\(context): \(msg)", details: details)
    }
}
