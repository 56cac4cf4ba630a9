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
        if hasControlCharacters(name) {
            throw CNIError(.invalidEnvironment, "interface name contains NUL or control characters", details: visible(name))
        }
    }

    /// Whether `s` holds NUL or another control character (C0, DEL, C1). Such a character never belongs in a
    /// name that becomes a path or an exec: NUL would cut the C string short, the others forge log lines.
    public static func hasControlCharacters(_ s: String) -> Bool {
        s.unicodeScalars.contains { $0.value < 0x20 || ($0.value >= 0x7F && $0.value < 0xA0) }
    }

    /// `s` with control characters written as `\xNN`, safe to put in a message.
    public static func visible(_ s: String) -> String {
        var out = ""
        for u in s.unicodeScalars {
            if u.value < 0x20 || (u.value >= 0x7F && u.value < 0xA0) { out += "\\x" + String(u.value, radix: 16) } else { out.unicodeScalars.append(u) }
        }
        return out
    }

    /// A plugin `type` must name a binary, never a path: no `/`, `\`, `..`, NUL or control characters.
    public static func validatePluginType(_ type: String) throws(CNIError) {
        if type.isEmpty { throw CNIError(.invalidNetworkConfig, "plugin type is empty") }
        if hasControlCharacters(type) {
            throw CNIError(.invalidNetworkConfig, "invalid plugin type (NUL or control characters)", details: visible(type))
        }
        if type.contains("/") || type.contains("\\") || type == "." || type == ".." || type.contains("..") {
            throw CNIError(.invalidNetworkConfig, "invalid plugin type (path components are not allowed)", details: type)
        }
    }

    /// A configured path (`cniDir`, `binDir`, `logFile`…): non-empty and without NUL or control characters.
    public static func validatePath(_ path: String, key: String) throws(CNIError) {
        if hasControlCharacters(path) {
            throw CNIError(.invalidNetworkConfig, "configuration key \"\(key)\" holds NUL or control characters",
                           details: visible(path))
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

    /// Keys a runtime sets for the one interface it asked for (podman's `--ip`/`--mac-address`, static IPAM's
    /// gateway): they belong to that interface's network only.
    public static let perInterfaceKeys: Set<String> = ["IP", "MAC", "GATEWAY"]

    /// The pairs without the per-interface keys: what the networks the runtime did not ask for receive.
    public var withoutPerInterfaceKeys: CNIArgs {
        CNIArgs(pairs: pairs.filter { !CNIArgs.perInterfaceKeys.contains($0.key.uppercased()) })
    }

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
