/// Identifier validation rules shared by the spec and libcni (`pkg/utils`).
public enum CNIValidation {
    /// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` — container IDs and network names.
    public static func isValidIdentifier(_ s: String) -> Bool {
        guard let first = s.utf8.first, isAlnum(first) else { return false }
        return s.utf8.allSatisfy { isAlnum($0) || $0 == UInt8(ascii: "_") || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") }
    }

    static func isAlnum(_ b: UInt8) -> Bool {
        (b >= 48 && b <= 57) || (b >= 65 && b <= 90) || (b >= 97 && b <= 122)
    }

    public static func validateContainerID(_ id: String) throws(CNIError) {
        if id.isEmpty { throw CNIError(.invalidEnvironment, "missing containerID", details: "CNI_CONTAINERID") }
        if !isValidIdentifier(id) {
            throw CNIError(.invalidEnvironment, "invalid characters in containerID", details: id)
        }
    }

    public static func validateNetworkName(_ name: String) throws(CNIError) {
        if name.isEmpty { throw CNIError(.invalidNetworkConfig, "missing network name") }
        if !isValidIdentifier(name) {
            throw CNIError(.invalidNetworkConfig, "invalid characters found in network name", details: name)
        }
    }

    /// The kernel's `dev_valid_name`: non-empty, at most 15 bytes, not `.`/`..`, no `/`, `:` or whitespace.
    public static func validateInterfaceName(_ name: String) throws(CNIError) {
        if name.isEmpty { throw CNIError(.invalidEnvironment, "interface name is empty", details: "CNI_IFNAME") }
        if name.utf8.count > 15 {
            throw CNIError(.invalidEnvironment, "interface name is too long",
                           details: "interface name should be less than 16 characters")
        }
        if name == "." || name == ".." { throw CNIError(.invalidEnvironment, "interface name is . or ..") }
        for s in name.unicodeScalars where s == "/" || s == ":" || s.properties.isWhitespace {
            throw CNIError(.invalidEnvironment, "interface name contains / or : or whitespace characters", details: name)
        }
    }

    /// A plugin `type` must name a binary, never a path: no `/`, `\`, and not `.`/`..`.
    public static func validatePluginType(_ type: String) throws(CNIError) {
        if type.isEmpty { throw CNIError(.invalidNetworkConfig, "plugin type is empty") }
        if type.contains("/") || type.contains("\\") || type == "." || type == ".." || type.contains("..") {
            throw CNIError(.invalidNetworkConfig, "invalid plugin type (path components are not allowed)", details: type)
        }
    }
}

/// `CNI_ARGS`: `K=V;K=V` pairs, order preserved (containerd sends them in random order, so never compare the
/// raw string).
public struct CNIArgs: Sendable, Equatable {
    public var pairs: [(key: String, value: String)]

    public init(pairs: [(key: String, value: String)] = []) { self.pairs = pairs }

    public static func == (a: CNIArgs, b: CNIArgs) -> Bool {
        a.pairs.count == b.pairs.count && zip(a.pairs, b.pairs).allSatisfy { $0.key == $1.key && $0.value == $1.value }
    }

    /// Parses `CNI_ARGS`. Empty items are skipped; an item without `=` is a code-4 error naming it.
    public init(parsing raw: String) throws(CNIError) {
        pairs = []
        for item in raw.split(separator: ";", omittingEmptySubsequences: true) {
            guard let eq = item.firstIndex(of: "=") else {
                throw CNIError(.invalidEnvironment, "invalid CNI_ARGS pair (expected KEY=VALUE)", details: String(item))
            }
            pairs.append((String(item[..<eq]), String(item[item.index(after: eq)...])))
        }
    }

    public subscript(key: String) -> String? { pairs.last(where: { $0.key == key })?.value }

    public var encoded: String { pairs.map { "\($0.key)=\($0.value)" }.joined(separator: ";") }

    /// The libcni cache form: a list of `[key, value]` pairs.
    public var json: JSON { .array(pairs.map { .array([.string($0.key), .string($0.value)]) }) }

    public init(json: JSON?) {
        pairs = []
        for item in json?.arrayValue ?? [] {
            if let kv = item.arrayValue, kv.count == 2, let k = kv[0].stringValue, let v = kv[1].stringValue {
                pairs.append((k, v))
            }
        }
    }
}
