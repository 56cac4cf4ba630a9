#if canImport(Glibc)
import Glibc
#endif
import CNISpec
@testable import PlexusInstall
import SystemKit

/// A sandboxed node for one test: a host root with `/etc/cni/net.d`, a pod-side service account dir and a
/// source bin dir holding fake binaries. Removed on deinit.
final class Sandbox {
    let base: String
    var root: String { base + "/root" }
    var confDir: String { root + "/etc/cni/net.d" }
    var binDir: String { root + "/opt/cni/bin" }
    var source: String { base + "/src" }
    var sa: String { base + "/sa" }

    init(confFiles: [String: String] = [:]) {
        var template = Array("/tmp/pxinstall-XXXXXX".utf8CString)
        let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        base = made.map { String(cString: $0) } ?? "/tmp/pxinstall-fallback-\(getpid())"
        for d in [confDir, source, sa] { try? FileSystem.makeDirectories(d, mode: 0o755) }
        write(source + "/plexus", "#!/bin/sh\necho plexus\n", mode: 0o755)
        write(source + "/plexus-kubeconfig", "#!/bin/sh\necho converter\n", mode: 0o755)
        write(sa + "/token", "token-one\n")
        write(sa + "/ca.crt", "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n")
        for (name, text) in confFiles { write(confDir + "/" + name, text) }
    }

    deinit { _ = Sandbox.removeTree(base) }

    func write(_ path: String, _ text: String, mode: UInt32 = 0o644) {
        try? FileSystem.writeAtomically(path, Array(text.utf8), mode: mode)
    }

    func read(_ path: String) -> String? { try? FileSystem.readString(path) }

    func options(_ extra: [String] = []) throws -> InstallOptions {
        try InstallOptions.parse(arguments: ["--host-root", root, "--source-bin-dir", source,
                                             "--token-file", sa + "/token", "--ca-file", sa + "/ca.crt",
                                             "--api-server", "https://127.0.0.1:6443"] + extra,
                                 environment: [:])
    }

    func installer(_ extra: [String] = [], owner: String? = nil) throws -> Installer {
        Installer(options: try options(extra), environment: [:], logger: Logger(level: .panic), owner: owner)
    }

    /// Every entry below the host root: path, type, mode and (for files) SHA-256.
    func tree() -> [String] {
        var out: [String] = []
        func walk(_ dir: String, _ rel: String) {
            for name in (try? FileSystem.list(dir)) ?? [] {
                let p = dir + "/" + name
                var st = stat()
                guard lstat(p, &st) == 0 else { continue }
                let mode = String(st.st_mode & 0o7777, radix: 8)
                if (st.st_mode & S_IFMT) == S_IFDIR {
                    out.append("d \(rel)/\(name) \(mode)")
                    walk(p, rel + "/" + name)
                } else {
                    out.append("f \(rel)/\(name) \(mode) \((try? FileSystem.read(p)).map(SHA256.hex) ?? "?")")
                }
            }
        }
        walk(root, "")
        return out
    }

    static func removeTree(_ path: String) -> Bool {
        var st = stat()
        guard lstat(path, &st) == 0 else { return true }
        if (st.st_mode & S_IFMT) == S_IFDIR {
            for name in (try? FileSystem.list(path)) ?? [] { _ = removeTree(path + "/" + name) }
            return rmdir(path) == 0
        }
        return unlink(path) == 0
    }
}

enum Confs {
    static func conflist(_ name: String, version: String = "1.0.0", plugins: String) -> String {
        #"{"cniVersion":"\#(version)","name":"\#(name)","plugins":[\#(plugins)]}"#
    }

    static let bridge = #"{"type":"bridge","bridge":"pxb0","ipam":{"type":"host-local","subnet":"10.231.150.0/24"}}"#
    static let portmap = #"{"type":"portmap","capabilities":{"portMappings":true}}"#

    static func conf(_ name: String, version: String = "0.4.0") -> String {
        #"{"cniVersion":"\#(version)","name":"\#(name)","type":"bridge","bridge":"pxb1"}"#
    }

    static func list(_ text: String) throws -> NetworkConfigList {
        try NetworkConfigList(bytes: Array(text.utf8), source: "test")
    }
}

func installError(_ body: () throws -> Void) -> InstallError? {
    do {
        try body()
        return nil
    } catch let e as InstallError {
        return e
    } catch {
        return InstallError("unexpected error type: \(error)")
    }
}
