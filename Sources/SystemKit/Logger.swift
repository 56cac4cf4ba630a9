#if canImport(Glibc)
import Glibc
#endif
internal import CSystemShim

/// Log levels, Multus-compatible names, most severe first.
public enum LogLevel: Int, Sendable, Comparable {
    case panic = 0, error, warning, info, verbose, debug

    public init?(name: String) {
        switch name.lowercased() {
        case "panic": self = .panic
        case "error": self = .error
        case "warning", "warn": self = .warning
        case "info": self = .info
        case "verbose": self = .verbose
        case "debug": self = .debug
        default: return nil
        }
    }

    public var name: String {
        switch self {
        case .panic: return "panic"
        case .error: return "error"
        case .warning: return "warning"
        case .info: return "info"
        case .verbose: return "verbose"
        case .debug: return "debug"
        }
    }

    public static func < (a: LogLevel, b: LogLevel) -> Bool { a.rawValue < b.rawValue }
}

/// A structured logger: a static message plus `key=value` metadata, one line per record, written with a single
/// `write(2)` to stderr and/or an append-only log file. Never writes to stdout (reserved for the CNI result).
public final class Logger: @unchecked Sendable {
    public var level: LogLevel
    public var toStderr: Bool
    private var fileFD: Int32 = -1
    /// Metadata added to every record (command, container, pod).
    public var context: [(String, String)] = []

    public init(level: LogLevel = .error, toStderr: Bool = true) {
        self.level = level
        self.toStderr = toStderr
    }

    /// Opens `path` for appending (created 0600). Failure is reported on stderr and otherwise ignored.
    public func setFile(_ path: String) {
        if fileFD >= 0 { close(fileFD) }
        fileFD = px_open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o600)
        if fileFD < 0 {
            let msg = "plexus: cannot open log file \(path): \(String(cString: strerror(px_errno())))\n"
            _ = Array(msg.utf8).withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
        }
    }

    public func enabled(_ l: LogLevel) -> Bool { l <= level && (toStderr || fileFD >= 0) }

    public func log(_ l: LogLevel, _ message: StaticString, _ metadata: [(String, String)] = []) {
        guard enabled(l) else { return }
        var line = "\(Clock.timestamp()) [\(l.name)] \(message)"
        for (k, v) in context + metadata {
            line += " \(k)=\(Logger.quote(v))"
        }
        line += "\n"
        let bytes = Array(line.utf8)
        bytes.withUnsafeBytes { b in
            if toStderr { _ = write(2, b.baseAddress, b.count) }
            if fileFD >= 0 { _ = write(fileFD, b.baseAddress, b.count) }
        }
    }

    public func debug(_ m: StaticString, _ md: [(String, String)] = []) { log(.debug, m, md) }
    public func verbose(_ m: StaticString, _ md: [(String, String)] = []) { log(.verbose, m, md) }
    public func info(_ m: StaticString, _ md: [(String, String)] = []) { log(.info, m, md) }
    public func warning(_ m: StaticString, _ md: [(String, String)] = []) { log(.warning, m, md) }
    public func error(_ m: StaticString, _ md: [(String, String)] = []) { log(.error, m, md) }

    static func quote(_ v: String) -> String {
        if !v.isEmpty && !v.utf8.contains(where: { $0 <= 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "=") }) {
            return v
        }
        var s = "\""
        for c in v.unicodeScalars {
            switch c {
            case "\"": s += "\\\""
            case "\\": s += "\\\\"
            case "\n": s += "\\n"
            default: s.unicodeScalars.append(c)
            }
        }
        return s + "\""
    }

    deinit { if fileFD >= 0 { close(fileFD) } }
}
