import CNISpec
import SystemKit

/// A device-info document, spec 1.1.0 (device-plugins.md §5.2, cni-spec.md D.1):
/// `{"type": "pci"|"vdpa"|"vhost-user"|"memif", "version": "1.1.0", "<type>": {...}}`.
///
/// The document is kept as the JSON object it was read as: key order, unknown keys (top level and inside the
/// type's map) and number text pass through unchanged, so copying a device plugin's file to the CNI file or into
/// `network-status` loses nothing. Parsing checks only what a consumer relies on — a JSON object whose `type` is a
/// string, whose `version` (when present) is a string and whose type map (when present) is an object; missing
/// required keys are reported by `missingRequiredKeys` rather than rejected (the NAD client does not validate
/// either, §5.2).
public struct DeviceInfoDocument: Sendable, Equatable {
    /// The spec version this implementation follows.
    public static let specVersion = "1.1.0"
    /// Largest device-info file read.
    public static let maxFileBytes = 1 << 20

    public enum DeviceType: Sendable, Equatable, Hashable {
        case pci
        case vdpa
        case vhostUser
        case memif
        /// A type this spec version does not define (kept, for forward compatibility).
        case other(String)

        public init(_ raw: String) {
            switch raw {
            case "pci": self = .pci
            case "vdpa": self = .vdpa
            case "vhost-user": self = .vhostUser
            case "memif": self = .memif
            default: self = .other(raw)
            }
        }

        /// The `type` value, which is also the key of the type's map.
        public var rawValue: String {
            switch self {
            case .pci: return "pci"
            case .vdpa: return "vdpa"
            case .vhostUser: return "vhost-user"
            case .memif: return "memif"
            case .other(let s): return s
            }
        }

        /// Keys the spec requires in the type's map.
        public var requiredKeys: [String] {
            switch self {
            case .pci: return ["pci-address"]
            case .vdpa: return ["parent-device", "driver", "path"]
            case .vhostUser: return ["mode", "path"]
            case .memif: return ["role", "path", "mode"]
            case .other: return []
            }
        }
    }

    /// The whole document.
    public private(set) var object: JSONObject

    /// A document of `type` with the type's map `details` (and `version` 1.1.0 unless given).
    public init(type: DeviceType, details: JSONObject, version: String = DeviceInfoDocument.specVersion) {
        object = JSONObject([("type", .string(type.rawValue)), ("version", .string(version)),
                             (type.rawValue, .object(details))])
    }

    /// A `pci` document for a PCI address (what the SR-IOV device plugin writes for a netdevice VF).
    public static func pci(address: String, extra: JSONObject = JSONObject()) -> DeviceInfoDocument {
        var details = JSONObject([("pci-address", .string(address))])
        for m in extra.members { details[m.key] = m.value }
        return DeviceInfoDocument(type: .pci, details: details)
    }

    /// Validates `object` (see the type's documentation).
    public init(object: JSONObject) throws(DeviceInfoError) {
        guard let t = object["type"] else { throw DeviceInfoError(.invalidDocument, "no \"type\"") }
        guard let typeName = t.stringValue else { throw DeviceInfoError(.invalidDocument, "\"type\" is \(t.typeName), not a string") }
        guard !typeName.isEmpty else { throw DeviceInfoError(.invalidDocument, "\"type\" is empty") }
        if let v = object["version"], v.stringValue == nil {
            throw DeviceInfoError(.invalidDocument, "\"version\" is \(v.typeName), not a string")
        }
        if let m = object[typeName], m.objectValue == nil {
            throw DeviceInfoError(.invalidDocument, "\"\(typeName)\" is \(m.typeName), not an object")
        }
        self.object = object
    }

    public static func parse(_ bytes: [UInt8]) throws(DeviceInfoError) -> DeviceInfoDocument {
        let json: JSON
        do {
            json = try JSON.parse(bytes)
        } catch {
            throw DeviceInfoError(.invalidJSON, error.description)
        }
        guard let obj = json.objectValue else { throw DeviceInfoError(.invalidDocument, "top level is \(json.typeName), not an object") }
        return try DeviceInfoDocument(object: obj)
    }

    public var type: DeviceType { DeviceType(object["type"]?.stringValue ?? "") }
    /// `version`, or "" when absent.
    public var version: String { object["version"]?.stringValue ?? "" }
    /// The type's map (`pci`, `vdpa`, ...), or nil when absent.
    public var details: JSONObject? { object[type.rawValue]?.objectValue }

    /// `pci-address` of a `pci` or `vdpa` document.
    public var pciAddress: String? { details?["pci-address"]?.stringValue }

    /// Keys the spec requires but the document lacks (`version`, the type map, the map's required keys), in spec
    /// order; empty for a complete document.
    public var missingRequiredKeys: [String] {
        var missing: [String] = []
        if object["version"] == nil { missing.append("version") }
        guard let details else {
            if case .other = type { return missing }
            missing.append(type.rawValue)
            return missing
        }
        for k in type.requiredKeys where details[k] == nil { missing.append("\(type.rawValue).\(k)") }
        return missing
    }

    /// The document as JSON (the value for `network-status` `device-info`).
    public var json: JSON { .object(object) }

    /// Compact JSON bytes: the content of a CNI device-info file.
    public func serializedBytes() -> [UInt8] { json.serializedBytes() }
}

/// Paths of device-info files (device-plugins.md §5.1, cni-spec.md D.2), under a base directory that defaults to
/// `/run/k8s.cni.cncf.io/devinfo` (Multus spells it `/var/run/...`, a symlink to `/run` on every distribution).
///
/// - Device plugin file: `<base>/dp/<resourceName>-<deviceID>-device.json`, every `/` in the resource name replaced
///   by `-` (spec), and in the device ID too (NAD client).
/// - CNI file: `<base>/cni/<networkName>-<containerID>_<ifName>` with every `/` replaced by `-` (Multus'
///   UniqueFileName; for a NAD the network name is `<namespace>/<nad>`).
///
/// Escaping `/` makes each file name one path component, which can never be `.` or `..` (it always contains the
/// separators and, for DP files, the suffix). A part that is empty or contains NUL or another control character,
/// or a file name longer than 255 bytes (`NAME_MAX`), is refused with `DeviceInfoError.Kind.invalidName`.
public struct DeviceInfoPaths: Sendable, Equatable {
    public static let defaultBaseDirectory = "/run/k8s.cni.cncf.io/devinfo"
    public static let maxFileNameBytes = 255

    public var baseDirectory: String

    /// `baseDirectory` with trailing slashes removed (`/` stays `/`).
    public init(baseDirectory: String = DeviceInfoPaths.defaultBaseDirectory) {
        var b = baseDirectory
        while b.utf8.count > 1, b.utf8.last == UInt8(ascii: "/") { b.removeLast() }
        self.baseDirectory = b
    }

    /// Where device plugins write their files.
    public var dpDirectory: String { join(baseDirectory, "dp") }
    /// Where the meta plugin (and CNI plugins) write per-attachment files.
    public var cniDirectory: String { join(baseDirectory, "cni") }

    /// `<resourceName>-<deviceID>-device.json` with `/` → `-`.
    public static func dpFileName(resourceName: String, deviceID: String) throws(DeviceInfoError) -> String {
        try checkPart(resourceName, "resource name")
        try checkPart(deviceID, "device ID")
        return try checkLength(escape(resourceName) + "-" + escape(deviceID) + "-device.json")
    }

    /// `<networkName>-<containerID>_<ifName>` with `/` → `-`.
    public static func cniFileName(networkName: String, containerID: String, ifName: String) throws(DeviceInfoError) -> String {
        try checkPart(networkName, "network name")
        try checkPart(containerID, "container ID")
        try checkPart(ifName, "interface name")
        return try checkLength(escape(networkName + "-" + containerID + "_" + ifName))
    }

    public func dpFilePath(resourceName: String, deviceID: String) throws(DeviceInfoError) -> String {
        try checkBase()
        return join(dpDirectory, try Self.dpFileName(resourceName: resourceName, deviceID: deviceID))
    }

    /// The full path passed as `runtimeConfig.CNIDeviceInfoFile`.
    public func cniFilePath(networkName: String, containerID: String, ifName: String) throws(DeviceInfoError) -> String {
        try checkBase()
        return join(cniDirectory, try Self.cniFileName(networkName: networkName, containerID: containerID, ifName: ifName))
    }

    /// Reads the device plugin's file for a device; nil when there is none (the device plugin writes no file, or
    /// not yet: the ADD goes on without device-info, §7.2 case 16). A symlink or non-regular file is refused.
    public func readDPFile(resourceName: String, deviceID: String) throws(DeviceInfoError) -> DeviceInfoDocument? {
        try Self.readFile(try dpFilePath(resourceName: resourceName, deviceID: deviceID))
    }

    /// Reads a device-info file (a CNI file after the delegates ran, or any DP file); nil when it does not exist.
    /// The file is opened without following a symlink, at most `DeviceInfoDocument.maxFileBytes` are read.
    public static func readFile(_ path: String) throws(DeviceInfoError) -> DeviceInfoDocument? {
        let bytes: [UInt8]
        do {
            bytes = try FileSystem.readOwnFile(path, limit: DeviceInfoDocument.maxFileBytes)
        } catch {
            if error.isNotFound { return nil }
            throw DeviceInfoError(.unreadable, error.description)
        }
        do {
            return try DeviceInfoDocument.parse(bytes)
        } catch {
            var e = error
            e.detail = "\(path): \(e.detail)"
            throw e
        }
    }

    static func escape(_ s: String) -> String {
        String(decoding: s.utf8.map { $0 == UInt8(ascii: "/") ? UInt8(ascii: "-") : $0 }, as: UTF8.self)
    }

    static func checkPart(_ s: String, _ what: String) throws(DeviceInfoError) {
        if s.isEmpty { throw DeviceInfoError(.invalidName, "empty \(what)") }
        for b in s.utf8 where b < 0x20 || b == 0x7F {
            throw DeviceInfoError(.invalidName, "\(what) \(printable(s)) contains a NUL or control character")
        }
    }

    static func checkLength(_ name: String) throws(DeviceInfoError) -> String {
        if name.utf8.count > maxFileNameBytes {
            throw DeviceInfoError(.invalidName, "file name of \(name.utf8.count) bytes is longer than \(maxFileNameBytes)")
        }
        return name
    }

    func checkBase() throws(DeviceInfoError) {
        if baseDirectory.isEmpty { throw DeviceInfoError(.invalidName, "empty device-info base directory") }
        if baseDirectory.utf8.contains(0) {
            throw DeviceInfoError(.invalidName, "device-info base directory \(Self.printable(baseDirectory)) contains NUL")
        }
    }

    func join(_ dir: String, _ name: String) -> String { dir == "/" ? "/" + name : dir + "/" + name }

    static func printable(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            if u.value < 0x20 || u.value == 0x7F { out += "\\x" + String(u.value, radix: 16) } else { out.unicodeScalars.append(u) }
        }
        return out + "\""
    }
}

/// Why a device-info document or path is unusable.
public struct DeviceInfoError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case invalidJSON
        case invalidDocument
        case invalidName
        case unreadable
    }

    public var kind: Kind
    public var detail: String

    public init(_ kind: Kind, _ detail: String) {
        self.kind = kind
        self.detail = detail
    }

    public var description: String {
        switch kind {
        case .invalidJSON, .invalidDocument: return "invalid device-info: \(detail)"
        case .invalidName: return "invalid device-info file name: \(detail)"
        case .unreadable: return "device-info file: \(detail)"
        }
    }
}
