#if canImport(Glibc)
import Glibc
#endif
internal import CSystemShim

/// File-system primitives for everything Plexus persists. Writes are atomic (temp file in the same directory,
/// fsync, rename, fsync of the directory) so a crash or reboot never leaves a half-written file behind.
public enum FileSystem {
    /// Reads a whole file. Throws `SystemError` (check `isNotFound`) when it cannot be opened or read.
    public static func read(_ path: String, limit: Int = 64 << 20) throws(SystemError) -> [UInt8] {
        let fd = retryingEINTR { px_open(path, O_RDONLY | O_CLOEXEC, 0) }
        if fd < 0 { throw SystemError.last("open", path: path) }
        defer { close(fd) }
        return try readAll(fd: fd, path: path, limit: limit)
    }

    /// Reads from `fd` until EOF.
    public static func readAll(fd: Int32, path: String = "<fd>", limit: Int = 64 << 20) throws(SystemError) -> [UInt8] {
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = chunk.withUnsafeMutableBytes { buf in retryingEINTR { Glibc.read(fd, buf.baseAddress, buf.count) } }
            if n < 0 { throw SystemError.last("read", path: path) }
            if n == 0 { return out }
            out.append(contentsOf: chunk[0..<n])
            if out.count > limit { throw SystemError("read", path: path, errno: EFBIG) }
        }
    }

    public static func readString(_ path: String) throws(SystemError) -> String {
        String(decoding: try read(path), as: UTF8.self)
    }

    /// Writes `bytes` to `path` atomically with the given mode: temp file, fsync, rename. With `durableRename` the
    /// directory is fsynced too, so the rename itself survives a power loss (costs about 1 ms here); without it
    /// the rename reaches the disk with the file system's next journal commit.
    public static func writeAtomically(_ path: String, _ bytes: [UInt8], mode: UInt32 = 0o600,
                                       durableRename: Bool = false) throws(SystemError) {
        let dir = directoryName(of: path)
        let tmp = "\(dir)/.\(baseName(of: path)).tmp.\(getpid())"
        let fd = retryingEINTR { px_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, Int32(mode)) }
        if fd < 0 { throw SystemError.last("open", path: tmp) }
        var ok = false
        defer {
            if !ok { unlink(tmp) }
        }
        do {
            defer { close(fd) }
            try writeAll(fd: fd, bytes, path: tmp)
            if fchmod(fd, mode_t(mode)) != 0 { throw SystemError.last("fchmod", path: tmp) }
            if retryingEINTR({ fsync(fd) }) != 0 { throw SystemError.last("fsync", path: tmp) }
        }
        if rename(tmp, path) != 0 { throw SystemError.last("rename", path: path) }
        ok = true
        if durableRename { syncDirectory(dir) }
    }

    public static func writeAll(fd: Int32, _ bytes: [UInt8], path: String = "<fd>") throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { buf in
                retryingEINTR { write(fd, buf.baseAddress! + offset, buf.count - offset) }
            }
            if n < 0 { throw SystemError.last("write", path: path) }
            offset += n
        }
    }

    /// fsync of a directory, so a rename in it is durable. Best effort: failures are ignored.
    public static func syncDirectory(_ dir: String) {
        let fd = px_open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        if fd >= 0 {
            _ = fsync(fd)
            close(fd)
        }
    }

    /// Removes a file. A missing file is not an error.
    public static func remove(_ path: String) throws(SystemError) {
        if unlink(path) != 0 && px_errno() != ENOENT { throw SystemError.last("unlink", path: path) }
    }

    /// Creates a directory and its parents with `mode` (existing directories are left as they are).
    public static func makeDirectories(_ path: String, mode: UInt32 = 0o700) throws(SystemError) {
        if isDirectory(path) { return }
        let parent = directoryName(of: path)
        if parent != path && !parent.isEmpty && parent != "/" { try makeDirectories(parent, mode: mode) }
        if mkdir(path, mode_t(mode)) != 0 && px_errno() != EEXIST { throw SystemError.last("mkdir", path: path) }
    }

    /// Names in a directory (no `.`/`..`), sorted bytewise. Throws when the directory cannot be opened.
    public static func list(_ path: String) throws(SystemError) -> [String] {
        guard let d = opendir(path) else { throw SystemError.last("opendir", path: path) }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(cString: raw.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
    }

    public static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    public static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    public static func isRegularFile(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }

    /// Whether `path` can be created, written and removed in: used by readiness checks.
    public static func isWritableDirectory(_ path: String) -> Bool {
        isDirectory(path) && access(path, W_OK | X_OK) == 0
    }

    public static func directoryName(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return "." }
        if slash == path.utf8.startIndex { return "/" }
        return String(path[..<slash])
    }

    public static func baseName(of path: String) -> String {
        guard let slash = path.utf8.lastIndex(of: UInt8(ascii: "/")) else { return path }
        return String(path[path.utf8.index(after: slash)...])
    }
}
